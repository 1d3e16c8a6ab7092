"""Export a trained run as a TensorFlow SavedModel with serving signatures (`--mode=export`).

The SavedModel needs TensorFlow alone to load (no `aigc_zoo`, no Keras model code) and serves
with TF Serving. Every model has `generate(num_samples, seed)`; each family adds its own
signatures (`GenerativeModel.serving_endpoints`): `encode` and `decode` for the VAEs, `sample`
for the diffusion models; conditional models also take `labels`. Inputs are scalars or tensors
of fixed dtypes (int32 counts, seeds and steps, float32 guidance and images), so a TF Serving
REST request is `{"signature_name": "generate", "inputs": {"num_samples": 4, "seed": 0}}`.

The signatures run the same traceable code as the in-process `generate` (stateless random ops
seeded by [seed, 0]), so a SavedModel's samples equal the trained model's for the same seed.
GANs sample from their weight average with standing batch-norm statistics, computed before
export. See docs/export.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import keras

from aigc_zoo import config as config_lib
from aigc_zoo import files, trained
from aigc_zoo.errors import UserError
from aigc_zoo.models.base import GenerativeModel

INFO_FILE = os.path.join("assets.extra", "aigc_zoo.json")  # TF Serving ignores assets.extra


def default_export_dir(workdir: str, global_step: int) -> str:
    """`<workdir>/export/<global_step>`: TF Serving's layout of numbered model versions."""
    return os.path.join(workdir, "export", str(global_step))


def export_run(workdir: str, *, export_dir: str | None = None,
               expected_model: str | None = None) -> str:
    """Restore the workdir's latest checkpoint and write its SavedModel; returns the folder.

    Args:
        workdir: a trained run's folder.
        export_dir: where to write (default `default_export_dir`); must not exist yet.
        expected_model: when given, the model name the workdir must hold.
    """
    run, model = trained.restore(workdir, expected_model=expected_model)
    step = int(model.global_step.numpy())
    export_dir = export_dir or default_export_dir(workdir, step)
    info = {"model": run.model, "dataset": run.dataset, "global_step": step,
            "image_shape": list(model.image_shape), "num_classes": model.num_classes,
            "config": config_lib.to_dict(run.config)}
    save_model(model, export_dir, info=info)
    return export_dir


def save_model(model: GenerativeModel, export_dir: str, *,
               info: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Write `model`'s serving signatures as a SavedModel in `export_dir` (atomically).

    The SavedModel is written to a temporary folder next to `export_dir` and renamed, so an
    interrupted export leaves no partial model where a server would look for one.

    Returns:
        Per signature: its inputs (name -> dtype and shape) and what it returns.
    """
    export_dir = os.path.abspath(export_dir)
    if os.path.exists(export_dir):
        raise UserError(f"{export_dir} already exists; delete it or pass another --export_dir")
    parent = os.path.dirname(export_dir)
    files.make_writable_folder(parent, what="the export's folder")
    model.prepare_sampling()  # e.g. the GANs' standing statistics, before they are captured
    endpoints = model.serving_endpoints()
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, endpoint in endpoints.items():
        archive.add_endpoint(name, endpoint.function, input_signature=list(endpoint.inputs))
    signatures = {name: {"inputs": {spec.name: {"dtype": spec.dtype.name,
                                                "shape": spec.shape.as_list()}
                                    for spec in endpoint.inputs},
                         "returns": endpoint.doc}
                  for name, endpoint in endpoints.items()}
    temporary = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        archive.write_out(temporary, verbose=False)
        os.makedirs(os.path.join(temporary, os.path.dirname(INFO_FILE)), exist_ok=True)
        with open(os.path.join(temporary, INFO_FILE), "w") as handle:
            json.dump({**(info or {}), "signatures": signatures}, handle, indent=2,
                      sort_keys=True)
            handle.write("\n")
        os.replace(temporary, export_dir)
    except OSError as error:
        raise UserError(f"cannot write the SavedModel to {export_dir}: {error.strerror}"
                        ) from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return signatures
