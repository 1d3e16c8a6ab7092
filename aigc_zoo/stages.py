"""Models built on trained models ("stages"): a config field names the workdir of a trained run.

    @dataclasses.dataclass
    class LatentPriorConfig(config.TrainConfig):
        autoencoder: str = config.stage_field(("vae",))   # --set autoencoder=runs/vae-digits

When a run starts, each first stage named by such a field is restored from its workdir and
frozen into the new model as a non-trainable attribute of the field's name
(`model.autoencoder`); its own sampling methods use its sampling weights (an EMA where it has
one; `prepare_sampling` runs for it too). Its weights then travel in the new run's checkpoints,
`.keras` files and exports, and the run record keeps what rebuilds its networks (`describe`),
so after the start the new workdir needs nothing from the first one: a resume (the same
command, whose field still names the path, which need not exist any more),
`--mode=sample|eval|export` and a copied workdir work with the first stage's workdir gone.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import keras

from aigc_zoo import config as config_lib
from aigc_zoo import distribute, registry
from aigc_zoo.errors import UserError

# What a description holds beyond the first stage's run: enough to rebuild its networks.
DESCRIPTION_FIELDS = ("model", "dataset", "config", "image_shape", "num_classes", "seed",
                      "precision", "step", "config_digest", "workdir")


def config_digest(config: config_lib.TrainConfig) -> str:
    """SHA-256 of the config's canonical JSON: which first stage a run was built on."""
    text = json.dumps(config_lib.to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def describe(field: str, workdir: str, models: tuple[str, ...]) -> tuple[dict[str, Any], Any]:
    """The first stage in `workdir` (the value of config field `field`): its description and
    its model restored from the latest checkpoint.

    Raises:
        UserError: no trained run there, or one of a model not in `models`.
    """
    from aigc_zoo import trained  # which imports the models, which import this module

    label = f"{field}={workdir}"
    if not os.path.isdir(workdir):
        raise UserError(f"bad value {label}: no such workdir (train the first stage there, or "
                        "name another)")
    try:
        run, model = trained.restore(workdir)
    except UserError as error:
        raise UserError(f"bad value {label}: {error}") from None
    if run.model not in models:
        raise UserError(f"bad value {label}: it holds a {run.model!r} run; {field} must be a "
                        f"trained {' or '.join(models)} run")
    if model.stage_descriptions:
        raise UserError(f"bad value {label}: that run is built on first stages itself, which "
                        "a first stage cannot be (yet)")
    description = {"model": run.model, "dataset": run.dataset,
                   "config": config_lib.to_dict(run.config),
                   "image_shape": list(model.image_shape), "num_classes": model.num_classes,
                   "seed": run.seed, "precision": run.precision,
                   "step": int(model.global_step.numpy()), "config_digest":
                   config_digest(run.config), "workdir": os.path.abspath(workdir)}
    return description, model


# The JSON type of each description field (bools are not ints).
_DESCRIPTION_TYPES = {"model": str, "dataset": str, "config": dict, "image_shape": list,
                      "num_classes": (int, type(None)), "seed": int, "precision": str,
                      "step": int, "config_digest": str, "workdir": str}
assert set(_DESCRIPTION_TYPES) == set(DESCRIPTION_FIELDS)


def check_description(field: str, description: Any) -> None:
    """`UserError` unless `description` (read from a run record) has every field, each of its
    JSON type, a registered model whose config class takes its config, and a shape of
    positive sizes."""
    def wrong(name: str) -> bool:
        value = description[name]
        return isinstance(value, bool) or not isinstance(value, _DESCRIPTION_TYPES[name])

    if (not isinstance(description, dict) or set(description) != set(DESCRIPTION_FIELDS)
            or any(wrong(name) for name in DESCRIPTION_FIELDS)
            or not all(isinstance(size, int) and not isinstance(size, bool) and size > 0
                       for size in description["image_shape"])):
        raise UserError(f"stage {field!r} of the run record is not a stage description")
    model_class = registry.get_model(description["model"])
    config_lib.from_dict(model_class.config_class, description["config"])


def build(description: dict[str, Any]) -> Any:
    """The first stage's model with fresh weights, from its description (in the current
    strategy scope and dtype policy; the caller restores or copies the weights)."""
    model_class = registry.get_model(description["model"])
    model_config = config_lib.from_dict(model_class.config_class, description["config"])
    # In the first stage's own precision, as it was trained (a float32 VAE inside a
    # mixed_float16 run stays float32); the caller's policy is restored afterwards.
    previous = keras.mixed_precision.global_policy()
    distribute.set_precision(description["precision"])
    try:
        return model_class(model_config, image_shape=description["image_shape"],
                           num_classes=description["num_classes"], seed=description["seed"])
    finally:
        keras.mixed_precision.set_global_policy(previous)


def load(config: config_lib.TrainConfig) -> dict[str, tuple[dict[str, Any], Any]]:
    """Every first stage the config names: field -> (description, restored model).

    Raises:
        UserError: a stage field left empty, or a workdir that is not a trained run of an
            accepted model.
    """
    found = {}
    for field, models in config_lib.stage_fields(config).items():
        workdir = getattr(config, field)
        if not workdir:
            raise UserError(f"{type(config).__name__} needs {field}=<the workdir of a trained "
                            f"{' or '.join(models)} run>: pass --set {field}=...")
        found[field] = describe(field, workdir, models)
    return found


def copy_into(model: Any, restored: dict[str, Any]) -> None:
    """Assign each restored first stage's variables (`load`'s models, by field) to its rebuilt
    copy in `model` (same description, so the same variables in the same order)."""
    for field, source in restored.items():
        for value, variable in zip(source.variables, getattr(model, field).variables,
                                   strict=True):
            variable.assign(value)


def untrained(config: config_lib.TrainConfig, image_shape: Any, num_classes: int | None, *,
              tiny: bool = False) -> dict[str, dict[str, Any]]:
    """Descriptions of first stages with fresh weights, one per stage field, of the field's
    first accepted model in its default (or `tiny`) config: what the benchmark and the tests
    build a staged model on when speed or mechanics, not the first stage's training, matter."""
    found = {}
    for field, models in config_lib.stage_fields(config).items():
        model_class = registry.get_model(models[0])
        stage_config = model_class.tiny_config() if tiny else model_class.default_config()
        found[field] = {"model": models[0], "dataset": model_class.default_dataset,
                        "config": config_lib.to_dict(stage_config),
                        "image_shape": [int(d) for d in image_shape],
                        "num_classes": num_classes, "seed": 0, "precision": "float32",
                        "step": 0, "config_digest": config_digest(stage_config),
                        "workdir": ""}
    return found
