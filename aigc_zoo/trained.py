"""What a trained workdir gives: its model restored, samples (`--mode=sample`) and an
evaluation (`--mode=eval`). The export (`--mode=export`) restores through `restore` too.

    run, model = trained.restore("runs/vae-digits")
    trained.sample(request.SampleRequest("runs/vae-digits", num_samples=16))
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any, Sequence

import numpy as np

from aigc_zoo import callbacks, data, domains, files
from aigc_zoo import config as config_lib
from aigc_zoo.checkpoints import Checkpointer
from aigc_zoo.errors import UserError
from aigc_zoo.models.base import GenerativeModel
from aigc_zoo.request import EvalRequest, Run, SampleRequest
from aigc_zoo.workdir import Workdir


def restore(workdir: str, *, expected_model: str | None = None,
            overrides: Sequence[str] = (), mode: str = "sample"
            ) -> tuple[Run, GenerativeModel]:
    """The run saved in `workdir` and its model with the latest checkpoint's weights.

    Args:
        workdir: a trained run's folder.
        expected_model: when given, the model name the workdir must hold.
        overrides: `name=value` changes of the config's sampling fields
            (`config.sampling_field`), which the returned run and model then have.
        mode: the `--mode` asking, for the message when an override is not a sampling field.
    """
    folder = Workdir(workdir)
    record = folder.require()
    if expected_model is not None and record.run.model != expected_model:
        raise UserError(f"{workdir} holds a {record.run.model!r} run, "
                        f"not {expected_model!r}")
    run = record.run
    if overrides:
        run = dataclasses.replace(run, config=config_lib.override_sampling(
            run.config, overrides, mode=mode))
    # Sampling fields do not change the networks, so the checkpoint fits the changed config.
    model = run.build_model(record.image_shape, record.num_classes, record.stages)
    model.compile(jit_compile=False)  # creates the optimizers the checkpoint also holds
    checkpointer = Checkpointer(folder.saved_checkpoints, model)
    checkpointer.restore_latest()
    if checkpointer.restored_path is None:
        raise UserError(f"{workdir} has no checkpoint yet: train there first (--mode=train)")
    return run, model


def sample(request: SampleRequest) -> dict[str, str]:
    """Write a picture (PNG) and an `.npz` of samples from the latest checkpoint; their paths.

    The `.npz` holds `images` and every conditioning input they were drawn with (`labels`).
    """
    run, model = restore(request.workdir, expected_model=request.expected_model,
                         overrides=request.overrides, mode="sample")
    labels = request.sample_labels()
    if labels is not None and not model.conditional:
        raise UserError(f"{run.model} is unconditional: it takes no --labels")
    try:
        images = model.generate(request.num_samples, seed=request.seed, labels=labels).numpy()
    except ValueError as error:  # labels outside the model's classes
        raise UserError(f"bad value labels: {error}" if labels is not None else str(error)
                        ) from None
    conditioning = {}
    if model.conditional:  # the labels each image was drawn for, the default ones too
        conditioning = {name: value.numpy() for name, value in model.check_conditioning(
            {"labels": [] if labels is None else labels}, request.num_samples).items()}
    stem = os.path.join(Workdir(request.workdir).output("samples"),
                        f"samples_step{int(model.global_step.numpy())}_seed{request.seed}")
    domains.for_dataset(run.dataset).save_picture(
        stem + ".png", images, title=f"{run.model} on {run.dataset}, seed {request.seed}")
    np.savez_compressed(stem + ".npz", images=images, **conditioning)
    return {"png": stem + ".png", "npz": stem + ".npz"}


def evaluate(request: EvalRequest) -> dict[str, Any]:
    """Evaluate the latest checkpoint; write `metrics.json` and TensorBoard (`tensorboard/eval`).

    The request's `overrides` change the config's sampling and evaluation fields
    (`config.sampling_field`), such as `eval_importance_samples=1000` or `sample_steps=50`.

    Returns:
        What `metrics.json` holds: the run, split, seed, step and date, `metrics` (the model's
        own `evaluate_model`, e.g. likelihoods) and what the dataset's domain measures
        (`sample_quality` for images, `mode_coverage` for 2D points; `Domain.report`).
    """
    run, model = restore(request.workdir, expected_model=request.expected_model,
                         overrides=request.overrides, mode="eval")
    run = dataclasses.replace(run, eval_split=request.eval_split or run.eval_split)
    knobs = model.knobs(model.config, model.image_shape)
    quality = None if request.quality is None else request.quality.sized(knobs.sampling_cost)
    # The evaluator first: a missing extractor (no labels, no Inception weights offline) fails
    # before the model's own evaluation has run.
    evaluator = domains.for_dataset(run.dataset).evaluator(run, quality,
                                                           data_dir=request.data_dir)
    if evaluator is None and not knobs.evaluates:
        raise UserError(f"{run.model} has no evaluation of its own; measure sample quality "
                        "with --eval_samples > 0")
    step = int(model.global_step.numpy())
    results = {
        "model": run.model, "dataset": run.dataset, "split": run.eval_split,
        "seed": request.seed, "step": step,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "metrics": {},
    }
    if knobs.evaluates:
        dataset, _ = data.load(run.dataset, run.eval_split, batch_size=100, training=False,
                               data_dir=request.data_dir, image_size=run.image_size)
        results["metrics"] = model.evaluate_model(dataset, seed=request.seed)
    scalars = {name: value for name, value in results["metrics"].items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    if evaluator is not None:
        entries, values = evaluator.evaluate(model, seed=request.seed)
        results.update(entries)
        scalars.update(values)
    workdir = Workdir(request.workdir)
    files.write_json(workdir.metrics_path, results)
    callbacks.write_scalars(os.path.join(workdir.output("tensorboard"), "eval"), step,
                            {f"eval/{name}": value for name, value in scalars.items()})
    return results
