"""`GenerativeModel`: the one `train_step` every model in the zoo trains with.

A model says *what* to optimise and the base class says *how* to step:

- `update_groups()` returns the ordered update groups: a name, the variables, an optimizer, the
  key of the loss to minimise, and how many times to repeat the group per train step. A VAE or
  a diffusion model has one group; a GAN has the discriminator (repeated `n` times for WGAN-GP)
  and then the generator.
- `compute_losses(batch, training=..., group=...)` returns a dict of scalar tensors: the losses
  the groups minimise and any diagnostics. Losses that need a gradient inside the tape (a
  gradient penalty) are computed there, since the base class calls it under the tape.
- `after_update(group)` runs after each optimizer step (EMA weights, for example).
- `loss_names` lists the keys that are tracked with `keras.metrics.Mean` and shown in the
  progress bar and TensorBoard.
- `sample_tensors(num_samples, seed, conditioning, **options)` is the one sampling computation;
  `sampling_options()` declares its options. The base class's `generate` checks the inputs and
  runs it through a cached `tf.function`; `aigc_zoo.export` serves the same computation.
- `knobs(config, image_shape)` declares what the runner, the benchmark, evaluation and the
  tests read about the model (steps per call, XLA on a CPU, sampling cost, capabilities).

Keras compiles `train_step` with `tf.function(jit_compile=...)`; XLA comes from
`compile(jit_compile=...)`, and `"auto"` turns it on where an accelerator is present and, on a
CPU, where the class's `knobs(config, image_shape).xla_on_cpu` says so for this kind of CPU (as
`make benchmark` measured: XLA for the fully connected `gan` everywhere; for the convolutional
GANs, the diffusion U-Nets and the image-to-image networks on AVX2 CPUs without AVX-512 only).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import device, distribute, export
from aigc_zoo import stages as stages_lib
from aigc_zoo.errors import UserError


@dataclasses.dataclass(frozen=True)
class UpdateGroup:
    """One optimizer step of a train step: minimise `losses[loss]` over `variables`.

    Args:
        name: identifies the group in `compute_losses(group=...)`, `after_update` and checkpoints.
        variables: the trainable variables this group updates.
        optimizer: the group's own optimizer (its slots and step counter are its own).
        loss: key of the scalar in `compute_losses(...)` that this group minimises.
        repeats: optimizer steps of this group per train step (WGAN-GP's critic uses 5).
        split_batch: when True, each repeat gets its own equal slice of the batch (along the
            first axis) instead of the whole batch, so repeated steps see fresh examples
            (WGAN-GP's five critic steps each take their own real batch).
        clip_norm: clip the gradient to this global norm (0: no clipping). The base class does
            it, not the optimizer: under `tf.distribute`, Keras' optimizers clip each
            replica's share of the gradient before summing them, which is not the clipping a
            single device would do.
    """

    name: str
    variables: Sequence[keras.Variable]
    optimizer: keras.optimizers.Optimizer
    loss: str
    repeats: int = 1
    split_batch: bool = False
    clip_norm: float = 0.0


@dataclasses.dataclass(frozen=True)
class SamplingOption:
    """One option of `generate`, declared by a family's `sampling_options`.

    Args:
        default: the value when `generate` is not given one; None lets the family's
            `resolve_sampling_options` fill it in (a default that depends on another option).
        dtype: for an option the sampling graph takes as a runtime scalar input (one trace
            serves every value, and the export's `sample` signature takes it), its dtype; None
            for a static option, fixed when the graph is traced (one graph per value; an export
            fixes it at its default).
        doc: what it does, for the export's signature description.
    """

    default: Any
    dtype: tf.DType | None = None
    doc: str = ""


@dataclasses.dataclass(frozen=True)
class Knobs:
    """What a model declares about itself, read by the runner, the benchmark, evaluation, the
    export and the shared test harness (`GenerativeModel.knobs`).

    Args:
        steps_per_execution: train steps per compiled call when the runner is not told
            (`--steps_per_execution`); an epoch over the whole split is rounded down to a
            multiple of it.
        xla_on_cpu: what `jit_compile="auto"` means for training on a CPU: True (XLA on
            every CPU), False (graph mode), or the CPU kinds (`device.cpu_kind()`) on which
            `make benchmark` measured XLA faster, such as `XLA_ON_AVX2`.
        sampling_xla_on_cpu: compile `generate` (and the export's signatures) with XLA on a
            CPU too: True, False, or the CPU kinds where it was measured faster (as
            `xla_on_cpu`). Sequential samplers of many small steps win everywhere (their
            per-op overhead is fused away); convolution-heavy ones win or lose by CPU kind.
        sampling_cost: network evaluations per sample of `generate` with its defaults; the
            benchmark's sample count, the per-epoch picture and the default `--eval_samples`
            are sized by it.
        encodes: the model has `encode(images)` and `decode(latents)` (with `labels` as a
            second argument for a conditional model); `encode` may return several tensors,
            the first being the latents (or integer codes) `decode` takes. Training then
            shows held-out images next to their reconstructions in TensorBoard.
        evaluates: the model has `evaluate_model(dataset, seed=...)`, its own metrics in
            `--mode=eval` (the VAEs' likelihood bounds).
        task: an image-to-image model's paired task (`aigc_zoo.data.paired`, e.g. `sr:4`):
            its training and evaluation batches hold the task's `"source"` beside the
            `"image"`, and it has `translate(sources)` (the export's `translate` signature).
        target: an unpaired translation model's target domain, (dataset, train split, eval
            split): its batches' `"source"` is an image of the run's dataset and its
            `"image"` one of this dataset, not its pair (`data.paired.open_target`).
        binary_samples: `generate` draws pixels in {-1, 1} only (a Bernoulli likelihood's
            samples), so sample quality compares them with real images binarised the same
            way (`metrics.sample_quality`): against grey-level images every binary sample is
            off the real manifold, however good.
    """

    steps_per_execution: int = 1
    xla_on_cpu: bool | tuple[str, ...] = False
    sampling_xla_on_cpu: bool | tuple[str, ...] = False
    sampling_cost: float = 1.0
    encodes: bool = False
    evaluates: bool = False
    task: str = ""
    target: tuple[str, str, str] = ()
    binary_samples: bool = False


def _with_loss_scaling(group: UpdateGroup) -> UpdateGroup:
    if isinstance(group.optimizer, keras.optimizers.LossScaleOptimizer):
        return group
    scaled = keras.optimizers.LossScaleOptimizer(group.optimizer)
    return dataclasses.replace(group, optimizer=scaled)


def _split(batch: dict[str, tf.Tensor], parts: int) -> list[dict[str, tf.Tensor]]:
    """`parts` equal slices of every tensor in `batch` along the first axis."""
    size = batch["image"].shape[0]
    if size is None or size % parts:
        raise ValueError(f"a batch of {size} examples does not split into {parts} equal parts; "
                         "make batch_size a multiple of the group's repeats")
    step = size // parts
    return [{key: value[i * step:(i + 1) * step] for key, value in batch.items()}
            for i in range(parts)]


def accelerator_present() -> bool:
    """True when a GPU or TPU logical device is visible."""
    return any(d.device_type in ("GPU", "TPU") for d in tf.config.list_logical_devices())


# The CPU kinds on which XLA trains the convolutional GANs, the diffusion U-Nets and the
# image-to-image networks (and samples from the first two) faster than graph mode: 1.3-2.1x
# on a 2-core AVX2 EPYC, where on the AVX-512 EPYC graph mode had won (make benchmark,
# 2026-11-29 and 2026-12-07; docs/performance.md; sampling: experiments/sampling_xla.py).
XLA_ON_AVX2 = ("avx2",)


def xla_on_this_cpu(declared: bool | tuple[str, ...]) -> bool:
    """A model's `Knobs.xla_on_cpu` resolved for this machine's CPU."""
    if isinstance(declared, bool):
        return declared
    return device.cpu_kind() in declared


def resolve_jit_compile(jit_compile: str | bool, *,
                        on_cpu: bool | tuple[str, ...] = False) -> bool:
    """`"auto"` -> XLA on when a GPU or TPU is visible, else as `on_cpu` (a model's own
    choice, `Knobs.xla_on_cpu`) says for this CPU."""
    if jit_compile == "auto":
        return accelerator_present() or xla_on_this_cpu(on_cpu)
    return bool(jit_compile)


class _FunctionCache:
    """Traced sampling functions by their static options. A plain object, so neither Keras
    nor TensorFlow tracks it (a dict attribute would be tracked, and a SavedModel refuses its
    tuple keys)."""

    def __init__(self):
        self.functions: dict[tuple, Any] = {}


class GenerativeModel(export.KerasFile, keras.Model):
    """Base class of every model in the zoo; owns `train_step` and `test_step`.

    Subclasses set `config_class` (a `TrainConfig` dataclass), `loss_names`, optionally
    `default_dataset`, and implement `update_groups`, `compute_losses` and `sample_tensors`.
    Networks are built in `__init__` (functional models with a known input shape), so the
    model is complete before `compile`.

    Args:
        config: the model's config (an instance of `config_class`).
        image_shape: (height, width, channels) of the training images.
        num_classes: number of labels in the dataset, or None when it has none.
        seed: seeds the model's random draws (latent noise, dropout, diffusion times).
    """

    config_class: ClassVar[type[config_lib.TrainConfig]] = config_lib.TrainConfig
    loss_names: ClassVar[tuple[str, ...]] = ("loss",)
    default_dataset: ClassVar[str] = "digits"
    conditional: ClassVar[bool] = False  # True: generate() and compute_losses use labels
    registered_name: ClassVar[str] = ""  # set by registry.register_model
    # XLA for sampling: "auto" (with a GPU or TPU, and on a CPU where `knobs` say it wins), or
    # True / False set on a model before it samples (the benchmark times both).
    sampling_jit_compile: str | bool = "auto"

    def __init__(self, config: config_lib.TrainConfig, *, image_shape: Sequence[int],
                 num_classes: int | None = None, seed: int = 0,
                 stages: dict[str, dict[str, Any]] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.config = config
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = num_classes
        self.seed = int(seed)
        # First stages (`aigc_zoo.stages`): rebuilt from their descriptions, frozen, and set as
        # attributes of their field's name, so their variables are this model's (checkpoints,
        # `.keras` files, exports); their weights come from the first stage's workdir at the
        # start of a run, from this model's checkpoint afterwards.
        self.stage_descriptions = dict(stages or {})
        missing = set(config_lib.stage_fields(config)) - set(self.stage_descriptions)
        if missing:
            raise ValueError(f"{type(self).__name__} is built on first stages {sorted(missing)}"
                             "; build it through a run (aigc_zoo.train) or pass stages=")
        for name, description in self.stage_descriptions.items():
            stage = stages_lib.build(description)
            stage.trainable = False
            setattr(self, name, stage)
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")
        # Counts train steps across processes (restored from checkpoints), unlike Keras' own
        # per-`fit` counters; TensorBoard steps and warm-up schedules read it.
        self.global_step = keras.Variable(0, dtype="int64", trainable=False,
                                          name="global_step", aggregation="only_first_replica")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.loss_names}
        self._groups: tuple[UpdateGroup, ...] = ()
        self._sampling_functions = _FunctionCache()

    # -- what subclasses provide ---------------------------------------------------------------

    @classmethod
    def knobs(cls, config: config_lib.TrainConfig, image_shape: Sequence[int]) -> Knobs:
        """What this model declares about itself for `config` (see `Knobs`). The defaults are
        `make benchmark`'s measurements (docs/performance.md): oneDNN's convolutions beat XLA's
        on a CPU, so graph mode for convolutional networks, and 1 step per compiled call."""
        return Knobs()

    @classmethod
    def check_stages(cls, config: config_lib.TrainConfig, image_shape: Sequence[int],
                     num_classes: int | None, stages: dict[str, dict[str, Any]]) -> None:
        """Raise `UserError` when a first stage (its description: model, config, image_shape,
        ...) does not fit this model on this data (shape, channels, code count); called before
        anything of the run is created. Nothing to check by default."""

    @classmethod
    def default_config(cls, dataset: str | None = None) -> config_lib.TrainConfig:
        """The config the runner uses unless flags override it.

        `dataset` lets a model pick different defaults for a very different dataset (the GANs'
        2D toy datasets, for example); None means the model's default dataset.
        """
        return cls.config_class()

    @classmethod
    def takes_text(cls, config: config_lib.TrainConfig) -> bool:
        """Whether the model of `config` is conditioned on text prompts: the runner then builds
        the tokenizer from the training captions (`<workdir>/tokenizer.json`), fills the
        config's `text_vocabulary_size` and `text_max_length`, feeds `batch["tokens"]`, and
        takes `--prompt`s; the export takes string prompts. Default: `conditioning == "text"`."""
        return getattr(config, "conditioning", None) == "text"

    @classmethod
    def tiny_config(cls) -> config_lib.TrainConfig:
        """A config small enough for a test to train in seconds."""
        raise NotImplementedError(f"{cls.__name__} defines no tiny_config")

    def update_groups(self) -> list[UpdateGroup]:
        """The update groups, in the order they step; called once, by `compile`."""
        raise NotImplementedError

    def compute_losses(self, batch: dict[str, tf.Tensor], *, training: bool,
                       group: str | None = None) -> dict[str, tf.Tensor]:
        """Scalar losses and diagnostics for `batch` (`{"image": ..., "label": ...}`).

        `group` is the update group about to step, or None from `test_step`; a model may skip
        work that group does not need.
        """
        raise NotImplementedError

    def after_update(self, group: str) -> None:
        """Hook run after each optimizer step of `group`; nothing by default."""

    def sample_tensors(self, num_samples: tf.Tensor, seed: tf.Tensor,
                       conditioning: dict[str, tf.Tensor], **options: Any) -> Any:
        """The family's one sampling computation, traceable, deterministic for `seed`.

        `generate` runs it through a cached `tf.function` and the export's signatures run the
        same code, so a SavedModel's samples equal the model's for a seed.

        Args:
            num_samples: int32 scalar.
            seed: int64 scalar; stateless draws use the seed pair [seed, 0] (and its folds).
            conditioning: the checked inputs of `conditioning_specs` (labels [num_samples]).
            **options: every option of `sampling_options`, resolved: static ones as Python
                values, runtime ones as scalar tensors of their dtype.
        Returns:
            Samples [num_samples, H, W, C] in [-1, 1] (2D points for toy datasets); a family
            may return more for a static option that asks for it (diffusion's trajectory).
        """
        raise NotImplementedError

    def sampling_options(self) -> dict[str, SamplingOption]:
        """`generate`'s options beyond seed and conditioning, by name, with their defaults
        (which read the config's sampling fields); none by default."""
        return {}

    def resolve_sampling_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Fill the defaults that depend on other options and check every value (`ValueError`).

        `options` holds every declared option, a default where `generate` was not given one.
        """
        return options

    def prepare_sampling(self, options: dict[str, Any]) -> None:
        """Bring sampling-only state up to date before sampling with `options` (resolved) and
        before export (GANs: the weight average's standing batch-norm statistics)."""

    def evaluate_model(self, dataset: tf.data.Dataset, *, seed: int = 0) -> dict[str, Any]:
        """The model's own metrics in `--mode=eval` (a JSON-ready dict), for a model whose
        `knobs` declare `evaluates`; `dataset` is the eval split in batches, one pass."""
        raise NotImplementedError(f"{type(self).__name__} declares evaluates=True in its knobs "
                                  "but defines no evaluate_model")

    @staticmethod
    def evaluation_batches(dataset: tf.data.Dataset, limit: int | None
                           ) -> Iterator[tuple[int, tf.Tensor, tf.Tensor]]:
        """(index, images, labels) of an evaluation split's batches for `evaluate_model`, the
        last one cut so that at most `limit` examples are seen (None: all); labels are zeros
        for a dataset without them."""
        count = 0
        for index, batch in enumerate(dataset):
            images = batch["image"][:limit - count] if limit else batch["image"]
            labels = batch.get("label", tf.zeros([tf.shape(images)[0]], tf.int32))[:len(images)]
            yield index, images, labels
            count += int(images.shape[0])
            if limit and count >= limit:
                return

    def serving_endpoints(self) -> dict[str, Any]:
        """The family's own exported signatures (`export.ServingEndpoint` by name), beside the
        `generate` and `sample` that `aigc_zoo.export` makes for every model."""
        return {}

    # -- sampling: what the base class does ----------------------------------------------------

    def conditioning_specs(self) -> dict[str, tf.TensorSpec]:
        """The conditioning inputs of `sample_tensors`, `generate` and the exported signatures."""
        if self.conditional:
            return {"labels": tf.TensorSpec([None], tf.int32, name="labels")}
        return {}

    def check_conditioning(self, conditioning: dict[str, Any], num_samples: Any
                           ) -> dict[str, tf.Tensor]:
        """The conditioning inputs as checked tensors, in eager mode and in a graph alike.

        Labels [] mean 0, 1, 2, ... cycling; a wrong count or a label outside
        [0, num_classes) fails the checks (`tf.errors.InvalidArgumentError`).
        """
        if not self.conditional:
            return {}
        # Checked as int64, then cast: int32 first would wrap 2**32 + 3 to a valid 3.
        labels = tf.cast(tf.reshape(conditioning["labels"], [-1]), tf.int64)
        cycling = tf.range(tf.cast(num_samples, tf.int64), dtype=tf.int64) % self.num_classes
        labels = tf.cond(tf.size(labels) == 0, lambda: cycling, lambda: labels)
        # The checks guard the labels' users: without the dependency a wrong count could reach
        # the network first and fail there with a shape error instead of this message.
        in_range = f"labels must be in [0, {self.num_classes})"
        checks = [
            tf.debugging.assert_equal(tf.size(labels), tf.cast(num_samples, tf.int32),
                                      message="need one label per sample"),
            tf.debugging.assert_greater_equal(labels, tf.constant(0, tf.int64),
                                              message=in_range),
            tf.debugging.assert_less(labels, tf.constant(self.num_classes, tf.int64),
                                     message=in_range)]
        with tf.control_dependencies(checks):
            return {"labels": tf.cast(labels, tf.int32)}

    def resolved_sampling_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Every declared option: the given ones, defaults for the rest, resolved and checked.

        Raises:
            TypeError: for an option the family does not declare.
            ValueError: for a bad value.
        """
        declared = self.sampling_options()
        unknown = sorted(set(options) - set(declared))
        if unknown:
            raise TypeError(f"{self.registered_name or type(self).__name__} has no sampling "
                            f"options {unknown}; its options: {sorted(declared) or 'none'}")
        values = {name: option.default if options.get(name) is None else options[name]
                  for name, option in declared.items()}
        return self.resolve_sampling_options(values)

    def generate(self, num_samples: int, *, seed: int = 0, **inputs: Any) -> Any:
        """`num_samples` samples in [-1, 1], NHWC (2D points for toy datasets), the same for
        the same seed, conditioning and options.

        Args:
            num_samples: samples to draw.
            seed: an integer in [0, 2**32).
            **inputs: the model's conditioning inputs, by their `conditioning_specs` names:
                `labels` [num_samples] for a class-conditional model (default 0, 1, 2, ...
                cycling), `tokens` [num_samples, max_length] for a text-conditional one (a
                `text.Tokenizer.encode` of the prompts; required); and the family's
                `sampling_options` (diffusion: steps, guidance, ...).
        Raises:
            ValueError: conditioning the model does not take, a missing or bad conditioning
                input, bad option values. TypeError: an option the family does not have.
        """
        specs = self.conditioning_specs()
        given = {name: np.asarray(inputs.pop(name)) for name in list(inputs)
                 if name in specs and inputs[name] is not None}
        model = self.registered_name or type(self).__name__
        for name in ("labels", "tokens"):  # conditioning a model without it would ignore
            if inputs.get(name) is not None:
                raise ValueError(f"{model} takes {' and '.join(specs)}, not {name}" if specs
                                 else f"{model} is unconditional and takes no {name}")
            inputs.pop(name, None)
        values = self.resolved_sampling_options(inputs)
        if "labels" in specs:
            given["labels"] = given.get("labels", np.zeros([0], np.int32)).reshape(-1)
        for name, spec in specs.items():
            if name not in given:
                raise ValueError(f"{model} needs {name}")
            if spec.dtype.is_integer and given[name].size and given[name].dtype.kind not in "iu":
                raise ValueError(f"{name} must be integers, not {given[name].dtype}")
        try:
            conditioning = self.check_conditioning(given, num_samples)
        except tf.errors.InvalidArgumentError as error:
            raise ValueError(error.message.splitlines()[0]) from None
        self.prepare_stages()
        self.prepare_sampling(values)
        declared = self.sampling_options()
        static = {name: values[name] for name, option in declared.items() if option.dtype is None}
        runtime = [tf.constant(values[name], option.dtype)
                   for name, option in declared.items() if option.dtype is not None]
        return self.sampling_function(static)(
            tf.constant(num_samples, tf.int32), tf.constant(seed, tf.int64),
            *(conditioning[name] for name in specs), *runtime)

    def prepare_stages(self) -> None:
        """`prepare_sampling` of every first stage with its default options (a GAN stage's
        standing statistics), before this model samples with them or is exported."""
        for name in self.stage_descriptions:
            stage = getattr(self, name)
            stage.prepare_stages()
            stage.prepare_sampling(stage.resolved_sampling_options({}))

    def samples_with_xla(self) -> bool:
        """Whether `generate` and the export's signatures are compiled with XLA here."""
        return resolve_jit_compile(self.sampling_jit_compile, on_cpu=self.knobs(
            self.config, self.image_shape).sampling_xla_on_cpu)

    def sampling_function(self, static: dict[str, Any]) -> Any:
        """`sample_tensors` with these static options as one cached `tf.function` whose
        inputs are the export's (any number of samples, labels and runtime options: one trace);
        XLA where a GPU or TPU is present, and on a CPU where the model's knobs say so."""
        key = (tuple(sorted(static.items())), self.sampling_jit_compile)
        functions = self._sampling_functions.functions
        if key not in functions:
            conditioning = self.conditioning_specs()
            runtime = {name: option.dtype for name, option in self.sampling_options().items()
                       if option.dtype is not None}
            signature = [tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int64),
                         *(tf.TensorSpec(spec.shape, spec.dtype)
                           for spec in conditioning.values()),
                         *(tf.TensorSpec([], dtype) for dtype in runtime.values())]

            def sample(num_samples, seed, *inputs):
                given = dict(zip(conditioning, inputs[:len(conditioning)]))
                values = dict(zip(runtime, inputs[len(conditioning):]))
                return self.sample_tensors(num_samples, seed, given, **static, **values)

            # No autograph: the samplers loop with `tf.while_loop` themselves, so rewriting
            # the source of every function they call (once per process) only costs time.
            functions[key] = tf.function(sample, input_signature=signature, autograph=False,
                                         jit_compile=self.samples_with_xla())
        return functions[key]

    # -- what the base class does --------------------------------------------------------------

    def compile(self, *, jit_compile: str | bool = "auto", steps_per_execution: int = 1,
                **kwargs: Any) -> None:
        """Create the update groups, build their optimizers and compile the train step.

        Args:
            jit_compile: True, False or "auto" (XLA where a GPU or TPU is present; on a CPU,
                as the class's `knobs(...).xla_on_cpu` says, except under a strategy of
                several CPU replicas, where XLA cannot run).
            steps_per_execution: train steps per call of the compiled function.
        """
        self._compile_options = {"jit_compile": jit_compile,
                                 "steps_per_execution": steps_per_execution}
        groups = self.update_groups()
        if self.dtype_policy.name == "mixed_float16":
            # float16 gradients underflow without loss scaling; Keras only adds it to the
            # optimizer passed to `compile`, and here each group brings its own.
            groups = [_with_loss_scaling(group) for group in groups]
        self._groups = tuple(groups)
        for group in self._groups:
            # Building outside the traced step keeps variable creation out of tf.function.
            group.optimizer.build(list(group.variables))
        self.built = True
        super().compile(optimizer=None, jit_compile=self._train_jit_compile(jit_compile),
                        steps_per_execution=steps_per_execution, **kwargs)

    def _train_jit_compile(self, jit_compile: str | bool) -> bool:
        replicas = self.distribute_strategy.num_replicas_in_sync
        if replicas > 1 and not accelerator_present():
            # XLA compiles the replicas' step for one CPU device, and the other replicas'
            # variables live on other devices ("Trying to access resource ... located in
            # device CPU:1 from device CPU:0"), so the step cannot run.
            if jit_compile is True:
                raise UserError(f"jit_compile=true cannot train on {replicas} CPU replicas "
                                "(XLA runs a step on one device); use auto or false")
            return False
        return resolve_jit_compile(
            jit_compile, on_cpu=self.knobs(self.config, self.image_shape).xla_on_cpu)

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        # A private Keras method, hence the Keras range pinned in setup.py (checked by
        # tests/test_keras_version.py). Keras' TensorFlow trainer (3.15) overrides it to pull
        # one batch from `fit`'s iterator whenever the model was made under a tf.distribute
        # strategy, even when nothing is left to build; with `steps_per_epoch` that iterator
        # carries on, so the first batch would never be trained on and a distributed run
        # would see other batches than a single-device one. `__init__` and `compile` build
        # everything, so skip it.
        return

    @property
    def groups(self) -> tuple[UpdateGroup, ...]:
        """The update groups created by `compile` (empty before it)."""
        return self._groups

    @property
    def optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        """Each update group's optimizer, by group name."""
        return {group.name: group.optimizer for group in self._groups}

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def random_seed(self) -> tf.Tensor:
        """A fresh stateless seed ([2] ints) for one random draw; the same on every replica.

        Use it with `tf.random.stateless_*` ops in `compute_losses`, and draw anything with one
        row per example through `replica_share`, so that each example gets the noise it would
        get on a single device.
        """
        return self.seed_generator.next()

    def binarize(self, images: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        """Images in [-1, 1] as pixels in {0, 1}, each 1 with probability (x + 1) / 2.

        Without a seed (training) a fresh draw, this replica's share of the global batch's;
        with a stateless seed [2] the same draw every time, which is how an evaluation
        binarises once (the likelihood models evaluate the same binary images for a seed).
        """
        probabilities = (tf.cast(images, tf.float32) + 1.0) / 2.0
        if seed is None:
            seed = self.random_seed()
            noise = self.replica_share(lambda n: tf.random.stateless_uniform(
                tf.concat([[n], tf.shape(images)[1:]], 0), seed), tf.shape(images)[0])
        else:
            noise = tf.random.stateless_uniform(tf.shape(images), seed)
        return tf.cast(noise < probabilities, tf.float32)

    @staticmethod
    def replica_share(draw: Callable[[Any], tf.Tensor], count: Any) -> tf.Tensor:
        """This replica's `count` rows of `draw(count * replicas)`, a draw for the global batch.

        Under `tf.distribute` each replica holds `count` consecutive examples of the global
        batch (replica `r` the `r`-th block). Every replica makes the global batch's draw from
        the same seed and keeps its own block, so a run on N replicas draws exactly the noise a
        single device would (the losses then differ only by the order of float reductions).
        The price is N times the draws, small next to the networks.

        Args:
            draw: takes a row count and returns a random tensor with that many rows, made with
                a stateless op and a seed from `random_seed()`.
            count: this replica's number of examples (an int or a scalar tensor).
        """
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        if replicas == 1:
            return draw(count)
        start = tf.cast(context.replica_id_in_sync_group, tf.int32) * count
        return draw(count * replicas)[start:start + count]

    @staticmethod
    def replica_sum(value: Any) -> Any:
        """`value` (a tensor or a list of them) summed over the replicas of a `tf.distribute`
        strategy, so every replica holds the global sum; `value` itself on one device."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return value
        return context.all_reduce(tf.distribute.ReduceOp.SUM, value)

    def train_step(self, data: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        for group in self._groups:
            # Unrolled: repeats are small and static.
            batches = (_split(data, group.repeats) if group.split_batch
                       else [data] * group.repeats)
            for batch in batches:
                self._step_group(group, batch)
        self.global_step.assign_add(1)
        return self._results()

    def _step_group(self, group: UpdateGroup, batch: dict[str, tf.Tensor]) -> None:
        with tf.GradientTape() as tape:
            losses = self.compute_losses(batch, training=True, group=group.name)
            if group.loss not in losses:
                raise KeyError(f"update group {group.name!r} minimises {group.loss!r}, "
                               f"which compute_losses did not return ({sorted(losses)})")
            loss = self._scale_loss(losses[group.loss], group.optimizer)
        gradients = tape.gradient(loss, group.variables)
        if group.clip_norm:
            gradients = self._clip(gradients, group)
        group.optimizer.apply_gradients(zip(gradients, group.variables))
        self.after_update(group.name)
        self._track(losses)

    @staticmethod
    def _scale_loss(loss: tf.Tensor, optimizer: keras.optimizers.Optimizer) -> tf.Tensor:
        # Each replica's loss is a mean over its share of the batch; the optimizer sums the
        # replicas' gradients, so dividing by their number gives the global-batch mean.
        # `scale_loss` multiplies by the loss scale of a float16 LossScaleOptimizer.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        loss = tf.cast(loss, tf.float32)
        if replicas > 1:
            loss = loss / replicas
        return optimizer.scale_loss(loss)

    @staticmethod
    def _clip(gradients: list[tf.Tensor], group: UpdateGroup) -> list[tf.Tensor]:
        # The threshold applies to the true gradient: divide the loss scale back out of it.
        limit = group.clip_norm * group.optimizer.scale_loss(tf.constant(1.0, tf.float32))
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return tf.clip_by_global_norm(gradients, limit)[0]
        # Each replica holds a share of the gradient and the optimizer sums the shares, so the
        # norm is that of the sum (one extra all-reduce); the same factor scales every share.
        norm = tf.linalg.global_norm(GenerativeModel.replica_sum(gradients))
        factor = limit / tf.maximum(norm, limit)
        return [gradient * tf.cast(factor, gradient.dtype) for gradient in gradients]

    def _track(self, losses: dict[str, tf.Tensor]) -> None:
        for name, tracker in self.trackers.items():
            if name in losses:
                tracker.update_state(losses[name])

    def _results(self) -> dict[str, tf.Tensor]:
        results = {name: tracker.result() for name, tracker in self.trackers.items()}
        strategy = tf.distribute.get_strategy()
        if (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                and distribute.worker_name(strategy) is not None):
            # Keras 3.15 averages the step's outputs over workers with
            # `strategy.reduce("MEAN", value, axis=0)`, which needs an axis: shape [1], and
            # the logs come back as scalars.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def test_step(self, data: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        self._track(self.compute_losses(data, training=False))
        return self._results()

    def call(self, inputs: Any, training: bool = False) -> Any:
        raise NotImplementedError(f"{type(self).__name__} is not called directly; use "
                                  "generate() or the family's own methods")
