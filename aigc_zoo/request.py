"""What the runner is asked to do, checked once: the run, and a request per mode.

`from_flags` turns the runner's flag values into a `TrainRequest`, `SampleRequest`,
`EvalRequest` or `ExportRequest`. Each of them, and `Run` and `TrainOptions`, checks its own
values when it is constructed, so a request built in Python is checked exactly like one from
the command line, and a check lives in one place. Nothing here touches TensorFlow's devices,
the data or the workdir.

    request = from_flags({"model": "vae", "mode": "train", ...}, present={"model"})
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Collection, Mapping, Sequence, Union

import keras

from aigc_zoo import config as config_lib
from aigc_zoo import data, distribute, files, registry, text
from aigc_zoo.errors import UserError
from aigc_zoo.metrics import sample_quality

# The runner's precision: float32 on every device, so that a command trains the same run on
# any machine (docs/performance.md on bfloat16, faster on some CPUs). Steps per compiled call
# and XLA on a CPU are per model (`Knobs.steps_per_execution`, `Knobs.xla_on_cpu`).
DEFAULT_PRECISION = "float32"
# Mid-epoch checkpoints by default: a save of the default models took 11-114 ms on a 2-core
# CPU (docs/design.md), against 1,000 steps of tens of ms, so a crash loses at most 1,000 steps
# for well under 1% of the time; short runs (tests, tiny configs) save only at epoch ends.
DEFAULT_CHECKPOINT_EVERY_STEPS = 1000
SEED_LIMIT = 2**32
# --mode=sample of a text model: samples drawn for each prompt (a row of the picture).
DEFAULT_SAMPLES_PER_PROMPT = 8


# Flags with no tighter meaning still count something TensorFlow holds as int64 (steps,
# epochs, samples), so none may go beyond it.
INT64_MAX = config_lib.INT64_MAX
# --num_cpu_devices splits one CPU to try a multi-device strategy out; a chosen bound, well
# above the accelerators of one host (8 or 16), against a typo's millions of devices.
MAX_CPU_DEVICES = 64


def check_at_least(name: str, value: int, low: int, *, note: str = "",
                   high: int = INT64_MAX) -> None:
    """`UserError` unless the integer `value` is in [`low`, `high`] (int64 by default)."""
    if value < low:
        raise UserError(f"bad value {name}={value}: expected an integer >= {low}{note}")
    if value > high:
        bound = "2**63 - 1 (int64)" if high == INT64_MAX else f"{high:,}"
        raise UserError(f"bad value {name}={value}: expected an integer <= {bound}{note}")


def check_seed(name: str, seed: int) -> None:
    if not 0 <= seed < SEED_LIMIT:
        raise UserError(f"bad value {name}={seed}: expected an integer in [0, 2**32)")


@dataclasses.dataclass(frozen=True)
class Run:
    """Everything that defines a training run (and so its workdir).

    Args:
        model: registered model name.
        dataset: dataset name (see `data.list_datasets`).
        config: the model's config.
        seed: seeds weights, data order and the model's random draws.
        train_split / eval_split: dataset splits for training and for `--mode=eval`.
        image_size: resize images to this square size (None: the dataset's own size).
        precision: Keras dtype policy (`distribute.PRECISIONS`). Part of the run's identity:
            under `mixed_float16` every optimizer carries loss-scale state, so its checkpoints
            fit only a model of the same precision. (The strategy is not: a run may resume on
            another number of devices.)
    """

    model: str
    dataset: str
    config: config_lib.TrainConfig
    seed: int = 0
    train_split: str = "train"
    eval_split: str = "test"
    image_size: int | None = None
    precision: str = DEFAULT_PRECISION

    def __post_init__(self) -> None:
        model_class = registry.get_model(self.model)
        if not isinstance(self.config, model_class.config_class):
            raise TypeError(f"{self.model} takes a {model_class.config_class.__name__}, not a "
                            f"{type(self.config).__name__}")
        self.config.validate()
        check_seed("seed", self.seed)
        for split in (self.train_split, self.eval_split):
            data.parse_split(split)
        if self.image_size is not None:
            check_at_least("image_size", self.image_size, 1)
            # Channels are not known before the data is opened: one is a lower bound, so
            # what this refuses is refused for any dataset (`check_sizes` checks again).
            config_lib.check_activations(self.config, (self.image_size, self.image_size, 1),
                                         image_size_flag=True)
        config_lib.check_choice("precision", self.precision, distribute.PRECISIONS)

    def check_sizes(self, image_shape: Sequence[int]) -> None:
        """`UserError` when the run's networks on images of `image_shape` (known once the
        data or a run record is read, before anything is built or written) would make
        activations too large to hold (`config.check_activations`)."""
        config_lib.check_activations(self.config, image_shape,
                                     image_size_flag=self.image_size is not None)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "config": config_lib.to_dict(self.config)}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "Run":
        model_class = registry.get_model(values["model"])
        config = config_lib.from_dict(model_class.config_class, values["config"])
        return cls(**{**values, "config": config})

    def knobs(self, image_shape: Sequence[int]) -> Any:
        """What the run's model declares about itself (`base.Knobs`) for data of `image_shape`."""
        return registry.get_model(self.model).knobs(self.config, image_shape)

    def build_model(self, image_shape: Sequence[int], num_classes: int | None,
                    stages: dict[str, dict[str, Any]] | None = None) -> Any:
        """The run's model with freshly initialised weights (seeded by `seed`), its first
        stages (`aigc_zoo.stages` descriptions) rebuilt inside it.

        Built in `precision`; Keras' global dtype policy is restored afterwards, so one run's
        policy never leaks into models built later in the same process. Build it under a
        strategy's `scope()` to distribute it.
        """
        keras.utils.set_random_seed(self.seed)
        model_class = registry.get_model(self.model)
        previous = keras.mixed_precision.global_policy()
        distribute.set_precision(self.precision)
        try:
            return model_class(self.config, image_shape=image_shape, num_classes=num_classes,
                               seed=self.seed, stages=stages)
        finally:
            keras.mixed_precision.set_global_policy(previous)


# What sample quality holds per sample: a feature vector and class probabilities, at most
# Inception's (2,048 pool features and 1,008 logits' probabilities; the domain classifier's
# are far fewer). The samples themselves are held a batch at a time.
HELD_FLOATS_PER_SAMPLE = 2048 + 1008


def check_held_samples(count: int | None, image_shape: Sequence[int]) -> None:
    """`UserError` when what sample quality holds for `count` samples (`--eval_samples`: a
    feature vector each, `HELD_FLOATS_PER_SAMPLE` float32 at most) would not fit this machine's
    physical memory. `image_shape` names the samples in the message."""
    needed = 4 * (count or 0) * HELD_FLOATS_PER_SAMPLE
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory:
        shape = "x".join(str(int(d)) for d in image_shape)
        raise UserError(f"bad value eval_samples={count}: sample quality holds the features of "
                        f"its {shape} samples, up to {needed / 2**30:,.1f} GiB of float32, "
                        f"more than this machine's {memory / 2**30:,.1f} GiB of memory")


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """How to train a run; none of it is part of the run's identity.

    Args:
        workdir: the run's folder.
        data_dir: TFDS data folder (TFDS' default when None).
        overwrite: start afresh in `workdir`, replacing the run it holds.
        jit_compile: True, False or "auto" (see `GenerativeModel.compile`).
        steps_per_execution: train steps per compiled call; None: the model's default, or
            the largest divisor of the epoch below it (1 on a multi-worker strategy).
        log_every_steps: TensorBoard per-step summaries every this many steps.
        sample_every_epochs: draw the sample picture every this many epochs (0: never).
        verbose: Keras' progress bar setting.
        eval_every_epochs: measure sample quality every this many epochs (0: never).
        quality: how to measure it, with seed `eval_seed`.
        checkpoint_every_steps: also checkpoint inside epochs every this many steps (0: at
            epoch ends only); the newest `keep_checkpoints` are kept.
        deterministic: TensorFlow's op determinism (bitwise-equal resumes on accelerators).
    """

    workdir: str
    data_dir: str | None = None
    overwrite: bool = False
    jit_compile: str | bool = "auto"
    steps_per_execution: int | None = None
    log_every_steps: int = 50
    sample_every_epochs: int = 1
    verbose: str | int = "auto"
    eval_every_epochs: int = 0
    quality: sample_quality.Options = sample_quality.DEFAULT_OPTIONS
    eval_seed: int = 0
    checkpoint_every_steps: int = DEFAULT_CHECKPOINT_EVERY_STEPS
    keep_checkpoints: int = 3
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.jit_compile not in ("auto", True, False):
            raise UserError(f"bad value jit_compile={self.jit_compile!r}: expected auto, "
                            "true or false")
        if self.steps_per_execution is not None:
            check_at_least("steps_per_execution", self.steps_per_execution, 1)
        check_at_least("log_every_steps", self.log_every_steps, 1)
        check_at_least("sample_every_epochs", self.sample_every_epochs, 0, note=" (0: never)")
        check_at_least("eval_every_epochs", self.eval_every_epochs, 0, note=" (0: never)")
        check_seed("eval_seed", self.eval_seed)
        check_at_least("checkpoint_every_steps", self.checkpoint_every_steps, 0,
                       note=" (0: at epoch ends only)")
        check_at_least("keep_checkpoints", self.keep_checkpoints, 1)
        files.check_folder("workdir", self.workdir, writable=True)
        files.check_folder("data_dir", self.data_dir, writable=False)


@dataclasses.dataclass(frozen=True)
class TrainRequest:
    """Train `run` with `options` on the `tf.distribute` strategy named `strategy`."""

    run: Run
    options: TrainOptions
    strategy: str = "default"
    num_cpu_devices: int = 1
    tpu: str = ""

    def __post_init__(self) -> None:
        config_lib.check_choice("strategy", self.strategy, distribute.STRATEGIES)
        check_at_least("num_cpu_devices", self.num_cpu_devices, 1, high=MAX_CPU_DEVICES)
        if self.strategy == "multiworker":  # before any device, cluster or file is touched
            distribute.check_tf_config(os.environ.get("TF_CONFIG", ""))


def _check_assignments(overrides: Sequence[str]) -> None:
    for item in overrides:
        if "=" not in item:
            raise UserError(f"bad override {item!r}: expected name=value")


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    """Write `num_samples` samples of the run in `workdir` (a PNG grid and an `.npz`).

    `labels` (a conditional model's) repeat to `num_samples`: one label for every sample, or a
    list in turn; None cycles 0, 1, 2, .... `overrides` change sampling fields of the config
    (`config.sampling_field`), e.g. `sample_steps=50`.

    A text model's samples are `samples_per_prompt` (None: `DEFAULT_SAMPLES_PER_PROMPT`) for
    each of `prompts`, in turn; with no prompts, for each of the first `num_samples //
    samples_per_prompt` distinct captions of the run's eval split (read from `data_dir`).
    """

    workdir: str
    num_samples: int = 64
    seed: int = 0
    expected_model: str | None = None
    labels: tuple[int, ...] | None = None
    overrides: tuple[str, ...] = ()
    prompts: tuple[str, ...] | None = None
    samples_per_prompt: int | None = None
    data_dir: str | None = None

    def __post_init__(self) -> None:
        check_at_least("num_samples", self.num_samples, 1)
        check_seed("seed", self.seed)
        if self.samples_per_prompt is not None:
            check_at_least("samples_per_prompt", self.samples_per_prompt, 1)
        if self.prompts is not None and not self.prompts:
            raise UserError("no prompts given: expected one or more --prompt")
        for prompt in self.prompts or ():
            if not text.words(prompt):  # the rest needs the run's tokenizer (at sample time)
                raise UserError(f"empty prompt {prompt!r}: write at least one word")
        files.check_folder("data_dir", self.data_dir, writable=False)
        if self.labels is not None and not self.labels:
            raise UserError("bad value labels=[]: expected one or more integers")
        _check_assignments(self.overrides)

    def labels_for(self, start: int, stop: int, num_classes: int | None) -> list[int] | None:
        """The labels of samples [start, stop): `labels` repeated, or 0, 1, 2, ... cycling
        through `num_classes` when there are none; None for an unconditional model
        (`num_classes` None)."""
        if num_classes is None:
            return None
        cycle = self.labels or range(num_classes)
        return [cycle[i % len(cycle)] for i in range(start, stop)]


@dataclasses.dataclass(frozen=True)
class EvalRequest:
    """Evaluate the run in `workdir` (see `trained.evaluate`); `quality` None skips sample
    quality (its `num_samples` None: sized by the model's sampling cost), `eval_split` None
    keeps the run's own, `overrides` change sampling fields of the config."""

    workdir: str
    data_dir: str | None = None
    seed: int = 0
    expected_model: str | None = None
    quality: sample_quality.Options | None = sample_quality.DEFAULT_OPTIONS
    eval_split: str | None = None
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_seed("seed", self.seed)
        files.check_folder("data_dir", self.data_dir, writable=False)
        if self.eval_split is not None:
            data.parse_split(self.eval_split)
        _check_assignments(self.overrides)


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    """Export the run in `workdir` as a SavedModel (default folder: `<workdir>/export/<step>`);
    `overrides` change sampling fields of the config, the export's defaults."""

    workdir: str
    export_dir: str | None = None
    expected_model: str | None = None
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        files.check_folder("export_dir", self.export_dir, writable=True)
        _check_assignments(self.overrides)


@dataclasses.dataclass(frozen=True)
class TranslateRequest:
    """Translate the image file or folder `input` with the image-to-image run in `workdir`,
    writing PNGs under the same names into the folder `output` (`aigc_zoo.translate`);
    `overrides` change sampling fields of the config, e.g. `sample_steps=50`."""

    workdir: str
    input: str
    output: str
    seed: int = 0
    expected_model: str | None = None
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_seed("seed", self.seed)
        if not self.input or not os.path.exists(self.input):
            raise UserError(f"--input={self.input or ''!r}: no such file or folder; "
                            "--mode=translate needs --input=<image or folder>")
        if not self.output:
            raise UserError("--mode=translate needs --output=<folder>")
        files.check_folder("output", self.output, writable=True)


Request = Union[TrainRequest, SampleRequest, EvalRequest, ExportRequest, TranslateRequest]


def default_workdir(model: str, dataset: str) -> str:
    """`runs/<model>-<dataset>`, with the dataset's path characters made harmless."""
    dataset = dataset.replace(":", "-").replace(os.sep, "_").strip("_")
    return os.path.join("runs", f"{model}-{dataset}")


def from_flags(values: Mapping[str, Any], *, present: Collection[str] = (),
               extra_args: Sequence[str] = ()) -> Request:
    """The request the runner's flags describe, checked.

    Args:
        values: every flag's value (absl's `FLAGS.flag_values_dict()`).
        present: the flags given on the command line (an explicit `--model` must match the
            workdir's run in the modes that read one).
        extra_args: positional arguments, which the runner does not take.
    """
    if extra_args:
        raise UserError(f"unexpected arguments {list(extra_args)}; flags look like --name=value")
    for name, value in values.items():  # every count and size flag, before its own checks
        if isinstance(value, int) and not isinstance(value, bool) and not (
                -INT64_MAX - 1 <= value <= INT64_MAX):
            raise UserError(f"bad value {name}={value}: expected an integer in [-2**63, "
                            "2**63) (int64)")
    mode = values["mode"]
    if mode != "train" and (values["strategy"] != "default" or "precision" in present):
        raise UserError("--strategy and --precision are for --mode=train; sampling and "
                        "evaluation run on one device in the run's own precision")
    if values["labels"] is not None and mode != "sample":
        raise UserError("--labels is for --mode=sample (a conditional model's labels)")
    if mode == "train":
        return _train_request(values)
    return _trained_request(values, present)


def _trained_request(values: Mapping[str, Any], present: Collection[str]
                     ) -> SampleRequest | TranslateRequest | ExportRequest | EvalRequest:
    """The request of a mode that reads a trained workdir (all but --mode=train), checked."""
    mode = values["mode"]
    stray = [name for name in ("target_dataset", "target_train_split", "target_eval_split")
             if values.get(name) is not None]
    if stray:
        raise UserError(f"--{stray[0]} is for --mode=train (a trained cyclegan keeps its target "
                        "dataset in its run record)")
    model_class = registry.get_model(values["model"])
    workdir = values["workdir"] or default_workdir(
        values["model"], values["dataset"] or model_class.default_dataset)
    files.check_folder("workdir", values["workdir"], writable=True)
    expected_model = values["model"] if "model" in present else None
    overrides = tuple(values["set"])
    if values.get("direction") is not None:  # cyclegan's sampling field `direction`
        overrides += (f"direction={values['direction']}",)
    prompted = [name for name in ("prompt", "prompts_file", "samples_per_prompt")
                if values.get(name) not in (None, [])]
    if prompted and mode != "sample":
        raise UserError(f"--{prompted[0]} is for --mode=sample (a text model's prompts)")
    if mode == "sample":
        prompts = _prompts(values)
        if prompts is not None and "num_samples" in present:
            raise UserError("--num_samples is for sampling without prompts; with prompts, "
                            "--samples_per_prompt sets how many samples each gets")
        return SampleRequest(workdir, num_samples=values["num_samples"], seed=values["seed"],
                             prompts=prompts, samples_per_prompt=values.get("samples_per_prompt"),
                             data_dir=values.get("data_dir"),
                             expected_model=expected_model, labels=_labels(values["labels"]),
                             overrides=overrides)
    if mode == "translate":
        return TranslateRequest(workdir, values.get("input") or "", values.get("output") or "",
                                seed=values["seed"], expected_model=expected_model,
                                overrides=overrides)
    if mode == "export":
        return ExportRequest(workdir, export_dir=values["export_dir"],
                             expected_model=expected_model, overrides=overrides)
    return EvalRequest(workdir, data_dir=values["data_dir"], seed=values["seed"],
                       expected_model=expected_model,
                       quality=_quality(values) if values["eval_samples"] != 0 else None,
                       eval_split=values["eval_split"] if "eval_split" in present else None,
                       overrides=overrides)


def _labels(texts: Sequence[str] | None) -> tuple[int, ...] | None:
    if texts is None:
        return None
    try:
        return tuple(int(text) for text in texts)
    except ValueError:
        raise UserError(f"bad value labels={','.join(texts)!r}: expected integers, e.g. 7 or "
                        "0,1,2") from None


def _train_request(values: Mapping[str, Any]) -> TrainRequest:
    model_class = registry.get_model(values["model"])
    dataset = values["dataset"] or model_class.default_dataset
    base = (model_class.tiny_config() if values["config"] == "tiny"
            else model_class.default_config(dataset))
    assignments = [f"{name}={values[name]}" for name in ("epochs", "steps_per_epoch", "batch_size")
                   if values[name] is not None]
    if values.get("task") is not None:  # an image-to-image model's paired task
        if "task" not in {field.name for field in dataclasses.fields(base)}:
            raise UserError(f"--task is for image-to-image models; {values['model']} trains on "
                            "images alone")
        assignments.append(f"task={values['task']}")
    if values.get("direction") is not None:
        raise UserError("--direction picks a trained cyclegan's direction at sample, translate "
                        "and export time; training learns both directions")
    for name in ("target_dataset", "target_train_split", "target_eval_split"):
        if values.get(name) is not None:  # an unpaired model's second dataset (cyclegan)
            if name not in {field.name for field in dataclasses.fields(base)}:
                raise UserError(f"--{name} is for unpaired translation (cyclegan); "
                                f"{values['model']} translates no second dataset")
            assignments.append(f"{name}={values[name]}")
    if text_by_default(base, values["set"]) and data.has_captions(dataset,
                                                                   values["train_split"]):
        assignments.append("conditioning=text")  # "text by default on a captioned dataset"
    run = Run(model=values["model"], dataset=dataset,
              config=config_lib.override(base, assignments + list(values["set"])),
              seed=values["seed"], train_split=values["train_split"],
              eval_split=values["eval_split"], image_size=values["image_size"],
              precision=values["precision"])
    if values["eval_samples"] is not None:
        check_at_least("eval_samples", values["eval_samples"], 0)
    options = TrainOptions(
        workdir=(values["workdir"] if values["workdir"] is not None
                 else default_workdir(run.model, run.dataset)),
        data_dir=values["data_dir"], overwrite=values["overwrite"],
        jit_compile={"auto": "auto", "true": True, "false": False}[values["jit_compile"]],
        steps_per_execution=values["steps_per_execution"],
        log_every_steps=values["log_every_steps"],
        sample_every_epochs=values["sample_every_epochs"],
        eval_every_epochs=values["eval_every_epochs"],
        quality=(_quality(values) if values["eval_every_epochs"]
                 else sample_quality.DEFAULT_OPTIONS),
        eval_seed=values["seed"], checkpoint_every_steps=values["checkpoint_every_steps"],
        keep_checkpoints=values["keep_checkpoints"], deterministic=values["deterministic"])
    return TrainRequest(run, options, strategy=values["strategy"],
                        num_cpu_devices=values["num_cpu_devices"], tpu=values["tpu"])


def text_by_default(config: config_lib.TrainConfig, assignments: Sequence[str]) -> bool:
    """Whether a model of `config` can take text (its config has `conditioning` and the text
    fields) and the user did not choose its `conditioning` with --set."""
    names = {field.name for field in dataclasses.fields(config)}
    chosen = any(item.partition("=")[0].strip() == "conditioning" for item in assignments)
    return {"conditioning", "text_vocabulary_size"} <= names and not chosen


def _prompts(values: Mapping[str, Any]) -> tuple[str, ...] | None:
    """--prompt's values, or the lines of --prompts_file (blank lines skipped); None: none."""
    given, path = list(values.get("prompt") or []), values.get("prompts_file")
    if given and path:
        raise UserError("give prompts with --prompt or --prompts_file, not both")
    if path is None:
        return tuple(given) or None
    files.check_readable_file("prompts_file", path)
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read --prompts_file={path}: {error}") from None
    prompts = tuple(line for line in lines if line)
    if not prompts:
        raise UserError(f"--prompts_file={path} holds no prompts (one a line)")
    return prompts


def _quality(values: Mapping[str, Any]) -> sample_quality.Options:
    return sample_quality.Options(
        num_samples=values["eval_samples"], extractor=values["extractor"],
        inception_weights=values["inception_weights"], classifier_dir=values["classifier_dir"])
