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

Keras compiles `train_step` with `tf.function(jit_compile=...)`; XLA comes from
`compile(jit_compile=...)`, and `"auto"` turns it on where an accelerator is present and, on a
CPU, where the class's `xla_on_cpu(config, image_shape)` says so (as `make benchmark`
measured: graph mode wins for the convolutional networks, XLA for the fully connected `gan`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Sequence

import keras
import numpy as np
import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import distribute


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
class ServingEndpoint:
    """One signature of an exported SavedModel (see `aigc_zoo.export`).

    Args:
        function: takes the named inputs of `inputs` as keyword arguments and returns a dict of
            named output tensors; traced once with `inputs` as its input signature.
        inputs: the named, typed inputs (TF Serving's request keys).
        doc: what the signature returns, written to the export's `assets.extra/aigc_zoo.json`.
    """

    function: Callable[..., dict[str, tf.Tensor]]
    inputs: Sequence[tf.TensorSpec]
    doc: str


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


def resolve_jit_compile(jit_compile: str | bool, *, on_cpu: bool = False) -> bool:
    """`"auto"` -> XLA on when a GPU or TPU is visible, else `on_cpu` (a model's own choice)."""
    if jit_compile == "auto":
        return on_cpu or accelerator_present()
    return bool(jit_compile)


class GenerativeModel(keras.Model):
    """Base class of every model in the zoo; owns `train_step` and `test_step`.

    Subclasses set `config_class` (a `TrainConfig` dataclass), `loss_names`, optionally
    `default_dataset`, and implement `update_groups`, `compute_losses` and `generate`.
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
    # Train steps per compiled call when the runner is not told (`--steps_per_execution`):
    # `make benchmark` measured 4 faster than 1 for the GANs and VAEs on a CPU, not for the
    # diffusion U-Net. An epoch over the whole split is rounded down to a multiple of it.
    default_steps_per_execution: ClassVar[int] = 1

    def __init__(self, config: config_lib.TrainConfig, *, image_shape: Sequence[int],
                 num_classes: int | None = None, seed: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self.config = config
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = num_classes
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")
        # Counts train steps across processes (restored from checkpoints), unlike Keras' own
        # per-`fit` counters; TensorBoard steps and warm-up schedules read it.
        self.global_step = keras.Variable(0, dtype="int64", trainable=False,
                                          name="global_step", aggregation="only_first_replica")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.loss_names}
        self._groups: tuple[UpdateGroup, ...] = ()

    # -- what subclasses provide ---------------------------------------------------------------

    @classmethod
    def xla_on_cpu(cls, config: config_lib.TrainConfig, image_shape: Sequence[int]) -> bool:
        """What `jit_compile="auto"` means on a CPU for this config. oneDNN's convolutions beat
        XLA's there, so graph mode (False) wins for convolutional networks; `make benchmark`
        decides (docs/performance.md)."""
        return False

    @classmethod
    def default_config(cls, dataset: str | None = None) -> config_lib.TrainConfig:
        """The config the runner uses unless flags override it.

        `dataset` lets a model pick different defaults for a very different dataset (the GANs'
        2D toy datasets, for example); None means the model's default dataset.
        """
        return cls.config_class()

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

    def generate(self, num_samples: int, *, seed: int = 0, **options: Any) -> tf.Tensor:
        """`num_samples` images in [-1, 1], NHWC, deterministic for `seed`."""
        raise NotImplementedError

    def generate_tensors(self, num_samples: tf.Tensor, seed: tf.Tensor,
                         labels: tf.Tensor | None) -> tf.Tensor:
        """`generate`'s default samples as one traceable computation (no Python-side checks).

        Both `generate` and the exported SavedModel's `generate` signature run it, so they give
        the same samples for a seed.

        Args:
            num_samples: int32 scalar.
            seed: int64 scalar; the stateless draws use the seed pair [seed, 0].
            labels: int32 [num_samples] for conditional models (already checked), else None.
        """
        raise NotImplementedError

    def prepare_sampling(self) -> None:
        """Bring sampling-only state up to date before export (GANs: standing BN statistics)."""

    def serving_endpoints(self) -> dict[str, ServingEndpoint]:
        """The signatures `aigc_zoo.export` writes; families add theirs to this `generate`."""
        inputs = [tf.TensorSpec([], tf.int32, name="num_samples"),
                  tf.TensorSpec([], tf.int32, name="seed")]
        doc = "images [num_samples, H, W, C] in [-1, 1] (points for 2D datasets)"
        if self.conditional:
            inputs.append(tf.TensorSpec([None], tf.int32, name="labels"))
            doc += "; labels [num_samples] in [0, num_classes), or [] for 0, 1, 2, ... cycling"

        def generate(num_samples, seed, labels=None):
            labels = self.graph_labels(labels, num_samples) if self.conditional else None
            return {"images": self.generate_tensors(num_samples, tf.cast(seed, tf.int64), labels)}

        return {"generate": ServingEndpoint(generate, inputs, doc)}

    def graph_labels(self, labels: tf.Tensor, num_samples: tf.Tensor) -> tf.Tensor:
        """In-graph `sample_labels`: [] means 0, 1, 2, ... cycling; others are checked when run."""
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        cycling = tf.range(num_samples, dtype=tf.int32) % self.num_classes
        labels = tf.cond(tf.size(labels) == 0, lambda: cycling, lambda: labels)
        # The checks guard the labels' users: without the dependency a wrong count could reach
        # the network first and fail there with a shape error instead of this message.
        checks = [
            tf.debugging.assert_equal(tf.size(labels), num_samples,
                                      message="need one label per sample"),
            tf.debugging.assert_greater_equal(labels, 0, message="labels must be >= 0"),
            tf.debugging.assert_less(labels, self.num_classes,
                                     message=f"labels must be < {self.num_classes}")]
        with tf.control_dependencies(checks):
            return tf.identity(labels)

    def _generate_in_graph(self, num_samples: int, seed: int, labels: Any) -> tf.Tensor:
        """`generate_tensors` through one cached `tf.function`, as the SavedModel runs it."""
        if getattr(self, "_generate_function", None) is None:
            # The exported signature's inputs: one trace serves every number of samples.
            signature = [tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int64)]
            if self.conditional:
                signature.append(tf.TensorSpec([None], tf.int32))
            self._generate_function = tf.function(
                lambda num_samples, seed, labels=None: self.generate_tensors(
                    num_samples, seed, labels), input_signature=signature)
        labels = self.sample_labels(labels, num_samples)  # None for an unconditional model
        return self._generate_function(
            tf.constant(num_samples, tf.int32), tf.constant(seed, tf.int64),
            *([] if labels is None else [tf.cast(labels, tf.int32)]))

    # -- serialisation (`.keras` files) ---------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Everything `from_config` needs to rebuild the model (weights come separately)."""
        return {**super().get_config(), "model": self.registered_name,
                "config": config_lib.to_dict(self.config), "image_shape": list(self.image_shape),
                "num_classes": self.num_classes, "seed": self.seed}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "GenerativeModel":
        values = dict(config)
        name = values.pop("model", cls.registered_name)
        if name != cls.registered_name:
            raise ValueError(f"a saved {name!r} model cannot be loaded as "
                             f"{cls.registered_name!r}")
        model_config = config_lib.from_dict(cls.config_class, values.pop("config"))
        return cls(model_config, image_shape=values.pop("image_shape"),
                   num_classes=values.pop("num_classes"), seed=values.pop("seed"), **values)

    def get_compile_config(self) -> dict[str, Any]:
        # `compile` is this class's own, so Keras' default (its optimizer, loss, ...) would not
        # fit; a loaded model is compiled again with the same options (fresh optimizers: the
        # `.keras` file is for inference and fine-tuning, checkpoints carry the training state).
        return dict(self._compile_options) if self.compiled else {}

    def compile_from_config(self, config: dict[str, Any]) -> None:
        self.compile(**config)

    # -- what the base class does --------------------------------------------------------------

    def compile(self, *, jit_compile: str | bool = "auto", steps_per_execution: int = 1,
                **kwargs: Any) -> None:
        """Create the update groups, build their optimizers and compile the train step.

        Args:
            jit_compile: True, False or "auto" (XLA where a GPU or TPU is present; on a CPU,
                as the class's `xla_on_cpu` says).
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
        super().compile(optimizer=None,
                        jit_compile=resolve_jit_compile(
                            jit_compile, on_cpu=self.xla_on_cpu(self.config, self.image_shape)),
                        steps_per_execution=steps_per_execution, **kwargs)

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

    def sample_labels(self, labels: Any, num_samples: int) -> tf.Tensor | None:
        """The int32 labels [num_samples] for `generate`, checked; None for unconditional models.

        A conditional model without `labels` cycles 0, 1, 2, ...; labels outside
        [0, num_classes) or of the wrong length raise `ValueError`, and so do labels given to an
        unconditional model (which would ignore them).
        """
        if not self.conditional:
            if labels is not None:
                raise ValueError(f"{self.registered_name or type(self).__name__} is "
                                 "unconditional and takes no labels")
            return None
        if labels is None:
            return tf.range(num_samples, dtype=tf.int32) % self.num_classes
        values = np.asarray(labels).reshape(-1)
        if values.shape[0] != num_samples:
            raise ValueError(f"got {values.shape[0]} labels for {num_samples} samples")
        if values.size and (values.min() < 0 or values.max() >= self.num_classes):
            raise ValueError(f"labels must be in [0, {self.num_classes}), got "
                             f"{values.min()}..{values.max()}")
        return tf.constant(values, tf.int32)

    def random_seed(self) -> tf.Tensor:
        """A fresh stateless seed ([2] ints) for one random draw; the same on every replica.

        Use it with `tf.random.stateless_*` ops in `compute_losses`, and draw anything with one
        row per example through `replica_share`, so that each example gets the noise it would
        get on a single device.
        """
        return self.seed_generator.next()

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
        norm = tf.linalg.global_norm(context.all_reduce(tf.distribute.ReduceOp.SUM, gradients))
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
