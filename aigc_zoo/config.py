"""Configuration as code: one dataclass per model, overridden field by field from the command line.

Every model config inherits the training fields of `TrainConfig`, so `--epochs=3` and
`--set epochs=3` mean the same thing, and a run's whole setup is one object that is saved to
`<workdir>/config.json` and compared on resume.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any, Iterable

from aigc_zoo.errors import UserError

# Integers a run can hold: TensorFlow keeps counts and steps as int64 (the global step, a
# sample count), so a larger value would wrap or fail deep inside a model.
INT64_MAX = 2**63 - 1
# The most elements of one activation tensor: kernels index tensors with int32 (cuDNN and
# several of TensorFlow's own CPU and GPU kernels), and it is 8 GiB of float32 already.
MAX_TENSOR_ELEMENTS = 2**31 - 1


@dataclasses.dataclass
class TrainConfig:
    """Fields every model config has.

    Args:
        batch_size: global batch size (summed over replicas).
        epochs: number of passes of `steps_per_epoch` steps.
        steps_per_epoch: train steps per epoch; 0 means one pass over the training split,
            rounded down to a multiple of the model's default steps per call.
    """

    batch_size: int = 64
    epochs: int = 10
    steps_per_epoch: int = 0

    def validate(self) -> None:
        """Raise `UserError` for values no run can use. Subclasses extend it.

        Every integer field must fit int64 and every float field be finite (no field means
        anything by inf or nan), whatever the subclass checks besides.
        """
        check_limits(self)
        width, field = widest_layer(self, 1)
        # A 3x3 convolution between two layers of the widest width: its kernel is a tensor.
        _check(9 * width * width <= MAX_TENSOR_ELEMENTS, field, getattr(self, field, width),
               "layers narrow enough that a 3x3 kernel between two holds at most 2**31 - 1 "
               "elements (15,446 channels)")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        _check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        _check(self.steps_per_epoch >= 0, "steps_per_epoch", self.steps_per_epoch,
               "an integer >= 0 (0: the whole split)")
        # The global step (int64) counts epochs x steps; a whole-split epoch has fewer steps
        # than the split has examples, which no dataset brings near this bound.
        _check(self.epochs * max(self.steps_per_epoch, 1) <= INT64_MAX, "epochs", self.epochs,
               f"epochs x steps_per_epoch <= 2**63 - 1 (the int64 step count); steps_per_epoch"
               f"={self.steps_per_epoch}")

    def network_batches(self) -> dict[str, int]:
        """The largest batches the model's networks run on, by the field that sets each:
        training's `batch_size`, and more where evaluation runs larger ones (a VAE's
        importance samples). `check_activations` bounds each before anything is built."""
        return {"batch_size": self.batch_size}


def sampling_field(default: Any, *, added: bool = False) -> Any:
    """A config field that only changes sampling or evaluation (diffusion's `sample_steps`, a
    VAE's `eval_importance_samples`): `--set` may change it in `--mode=sample|eval|export`,
    and a resume that changes it is the same run. `added`: also an `added_field`."""
    return dataclasses.field(default=default, metadata={"sampling": True, "added": added})


def sampling_fields(config: TrainConfig | type[TrainConfig]) -> frozenset[str]:
    """Names of the config's `sampling_field`s."""
    return frozenset(f.name for f in dataclasses.fields(config) if f.metadata.get("sampling"))


_AS_DEFAULT = object()


def added_field(default: Any, *, before: Any = _AS_DEFAULT) -> Any:
    """A config field added after runs were saved without it: a saved config that lacks it
    loads with `before`, what those runs did (by default `default`: a GAN's `augment="none"`);
    new runs get `default` (cpixelcnn's `label_map_channels`: 8 now, 0 before it existed)."""
    return dataclasses.field(default=default, metadata={
        "added": True, "before": default if before is _AS_DEFAULT else before})


def stage_field(models: tuple[str, ...]) -> Any:
    """A config field naming the workdir of a trained run of one of `models`, which the new
    model is built on (`aigc_zoo.stages`); empty until set (`--set autoencoder=runs/vae-...`)."""
    return dataclasses.field(default="", metadata={"stage": tuple(models)})


def stage_fields(config: TrainConfig | type[TrainConfig]) -> dict[str, tuple[str, ...]]:
    """The config's `stage_field`s: name -> the models each accepts."""
    return {f.name: f.metadata["stage"] for f in dataclasses.fields(config)
            if "stage" in f.metadata}


def override_sampling(config: TrainConfig, assignments: Iterable[str], *, mode: str
                      ) -> TrainConfig:
    """`override` for a trained run: only its sampling fields may change, then checked.

    Raises:
        UserError: for a field that is not a sampling field (naming those there are).
    """
    allowed = sampling_fields(config)
    for assignment in assignments:
        name = assignment.partition("=")[0].strip()
        if name not in allowed:
            choices = ", ".join(sorted(allowed)) or "none for this model"
            raise UserError(f"--mode={mode} can only change sampling and evaluation config "
                            f"fields ({choices}), not {name!r}")
    changed = override(config, assignments)
    changed.validate()
    return changed


def check_limits(config: TrainConfig) -> None:
    """`UserError` for an integer field (or tuple item) beyond int64 or a non-finite float."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        for item in (value if isinstance(value, tuple) else (value,)):
            if isinstance(item, bool):
                continue
            if isinstance(item, int) and not -INT64_MAX - 1 <= item <= INT64_MAX:
                raise UserError(f"bad value {field.name}={value!r}: expected integers in "
                                "[-2**63, 2**63) (int64)")
            if isinstance(item, float) and not math.isfinite(item):
                raise UserError(f"bad value {field.name}={value!r}: expected a finite number")


_WIDTH_NAMES = ("filters", "width", "widths", "units", "_dim")


def widest_layer(config: TrainConfig, channels: int) -> tuple[int, str]:
    """Channels of the config's widest layer and the field that sets them: its largest
    filter, width, unit count or dimension (the fields so named, tuples and integers), or the
    images' `channels` ("channels") when that is more."""
    widest = (channels, "channels")
    for field in dataclasses.fields(config):
        if field.name.endswith(_WIDTH_NAMES):
            value = getattr(config, field.name)
            for item in (value if isinstance(value, tuple) else (value,)):
                if isinstance(item, int) and not isinstance(item, bool) and item > widest[0]:
                    widest = (item, field.name)
    return widest


def check_activations(config: TrainConfig, image_shape: typing.Sequence[int], *,
                      image_size_flag: bool = False) -> None:
    """`UserError` when a network of `config` on images of `image_shape` would make an
    activation tensor beyond `MAX_TENSOR_ELEMENTS`, estimated before anything is allocated
    as (batch) x (pixels) x (the widest named layer's channels): as if that layer ran at full
    resolution, an overestimate for networks that widen as they downsample (the zoo's
    convolutional ones); it does not count skip concatenations or MLP expansions.

    `image_size_flag` names `--image_size` in the message (the shape came from it)."""
    width, _ = widest_layer(config, int(image_shape[-1]))
    per_image = _elements_per_image(config, image_shape)
    for name, batch in config.network_batches().items():
        elements = batch * per_image
        if elements > MAX_TENSOR_ELEMENTS:
            shape = "x".join(str(int(d)) for d in image_shape)
            raise UserError(
                f"bad value {name}={getattr(config, name)}"
                f"{' with image_size=' + str(image_shape[0]) if image_size_flag else ''}: "
                f"batches of {batch:,} images of {shape} through layers up to {width} channels "
                f"make activations of about {elements:.2e} elements, beyond the "
                f"2**31 - 1 a tensor may hold; use a smaller batch or image size")


def _elements_per_image(config: TrainConfig, image_shape: typing.Sequence[int]) -> int:
    """One image's share of `check_activations`' estimate: (pixels) x (the widest layer)."""
    pixels = math.prod(int(d) for d in image_shape[:-1]) if len(image_shape) > 1 else 1
    return pixels * widest_layer(config, int(image_shape[-1]))[0]


def largest_batch(config: TrainConfig, image_shape: typing.Sequence[int]) -> int:
    """The most images one network call may take under `check_activations`' estimate: what
    an exported model serves per request (`export.endpoints`)."""
    return max(1, MAX_TENSOR_ELEMENTS // _elements_per_image(config, image_shape))


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise UserError(f"bad value {name}={value!r}: expected {allowed}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """`UserError` unless `value` is one of `choices`."""
    choices = tuple(choices)
    _check(value in choices, name, value, "one of " + ", ".join(map(str, choices)))


def check_range(name: str, value: float, low: float, high: float) -> None:
    """`UserError` unless `low <= value <= high`."""
    _check(low <= value <= high, name, value, f"a number in [{low}, {high}]")


def check_widths(name: str, value: typing.Sequence[int], example: str = "32,64") -> None:
    """One or more positive integers: a network's layer widths."""
    _check(bool(value) and min(value) >= 1, name, value,
           f"one or more positive integers, e.g. {example}")


def check_positive(name: str, value: float) -> None:
    """`UserError` unless `value > 0`."""
    _check(value > 0, name, value, "a number > 0")


def override(config: TrainConfig, assignments: Iterable[str]) -> TrainConfig:
    """A copy of `config` with `name=value` assignments applied, parsed by the field's type.

    Raises:
        UserError: for an unknown field, a malformed assignment or an unparsable value.
    """
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    changes = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip()
        if not sep:
            raise UserError(f"bad override {assignment!r}: expected name=value")
        if name not in fields:
            raise UserError(f"unknown config field {name!r} for {type(config).__name__}; "
                            f"fields: {', '.join(sorted(fields))}")
        changes[name] = _parse(name, text.strip(), hints[name])
    return dataclasses.replace(config, **changes)


def _parse(name: str, text: str, hint: Any) -> Any:
    try:
        if hint is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return lowered in ("true", "1")
        if hint in (int, float, str):
            return hint(text)
        if typing.get_origin(hint) is tuple:
            (item,) = set(typing.get_args(hint)) - {Ellipsis}
            return tuple(item(part) for part in text.strip("()[] ").split(",") if part.strip())
    except ValueError:
        expected = getattr(hint, "__name__", hint)
        raise UserError(f"bad value {name}={text!r}: expected {expected}") from None
    raise TypeError(f"config field {name} has a type the parser does not know: {hint}")


def _has_type(value: Any, hint: Any) -> bool:
    """Whether the JSON value `value` fits the field type `hint` (bools are not numbers)."""
    if typing.get_origin(hint) is tuple:
        (item,) = set(typing.get_args(hint)) - {Ellipsis}
        return isinstance(value, (list, tuple)) and all(_has_type(v, item) for v in value)
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint) if hint in (int, str, bool) else True


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """JSON-ready dict of the config's fields."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(config_class: type[TrainConfig], values: dict[str, Any]) -> TrainConfig:
    """Rebuild a config saved by `to_dict`; tuples come back from JSON lists.

    Every field must be there with a value of its type (an int where a float is expected is
    fine), so a hand-edited or truncated file is one `UserError`, not a failure deep in a model;
    only an `added_field` may be missing (a run saved before it existed), and takes its default.
    """
    hints = typing.get_type_hints(config_class)
    fields = dataclasses.fields(config_class)
    names = {f.name for f in fields}
    values = {**{f.name: f.metadata.get("before", f.default) for f in fields
                 if f.metadata.get("added") and f.name not in values}, **values}
    unknown, missing = set(values) - names, names - set(values)
    if unknown:
        raise UserError(f"saved config has fields {sorted(unknown)} that "
                        f"{config_class.__name__} does not know")
    if missing:
        raise UserError(f"saved config lacks the {config_class.__name__} fields "
                        f"{sorted(missing)}")
    for name, value in values.items():
        if not _has_type(value, hints[name]):
            raise UserError(f"saved config field {name}={value!r} is not of type "
                            f"{getattr(hints[name], '__name__', hints[name])}")
    return config_class(**{k: tuple(v) if typing.get_origin(hints[k]) is tuple else v
                           for k, v in values.items()})
