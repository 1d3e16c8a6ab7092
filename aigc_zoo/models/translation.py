"""`TranslationModel`: what every image-to-image model of the zoo shares.

An image-to-image model learns a map from a paired task's sources to its images
(`aigc_zoo.data.paired`: `sr:4`, `sr:2`, `inpaint`, `edges`). Its config names the task
(`task`, set by the runner's `--task`), and its `knobs` declare it, so the runner, the test
harness and evaluation feed it `{"source", "image"}` batches made by the data pipeline.

A family implements `translate_tensors(sources, seed)`, the one traceable translation; the
base class gives:

- `translate(sources, seed=0)`: eager, through one cached `tf.function`, and the export's
  `translate` signature (`sources`, `seed`) -> `images`, the same graph;
- `generate(num_samples, seed)`: translations of `num_samples` of the model's reference
  sources, drawn by the seed. The references are the first `REFERENCES` sources of the first
  training batch, kept in a non-trainable variable (so checkpoints, `.keras` files and exports
  carry them): this is what gives the shared machinery (the per-epoch picture,
  `--mode=sample`, the harness) something to translate without a dataset at hand. It is a
  shortcut, not a sampler of the data: evaluation translates the eval split's own sources.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import export
from aigc_zoo import optimizers
from aigc_zoo.data import paired
from aigc_zoo.errors import UserError
from aigc_zoo.models import base

REFERENCES = 64  # reference sources kept for `generate` (one sample picture's worth)
# `generate`'s picks of reference sources fold this into [seed, 0]: `translate_tensors` draws
# its noise from [seed, 0] itself (sr3) and small fold-ins of it, which must not be the picks'.
PICKS_STREAM = 1 << 20


@dataclasses.dataclass
class TranslationConfig(config_lib.TrainConfig):
    """Fields every image-to-image model has.

    Args:
        task: the paired task (`aigc_zoo.data.paired.TASKS`): `sr:4`, `sr:2`, `inpaint`,
            `edges`; the runner's `--task` sets it.
    """

    task: str = "sr:4"

    def validate(self) -> None:
        super().validate()
        if paired.parse_task(self.task).kind == "unpaired":
            raise UserError("bad value task='unpaired': unpaired translation is cyclegan's "
                            "(--model=cyclegan --target_dataset=...); paired tasks: "
                            f"{', '.join(paired.TASKS)}")


class TranslationModel(base.GenerativeModel):
    """Base class of the image-to-image models; subclasses give `translate_tensors`.

    Attributes:
        task: the parsed `paired.Task`.
        source_shape: (h, w, c) of the task's sources for this model's images.
    """

    config_class = TranslationConfig

    def __init__(self, config: TranslationConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.task = paired.parse_task(config.task)
        self.source_shape = paired.source_shape(self.task, self.image_shape)
        # "only_first_replica": every replica writes the same first batch's sources.
        self.reference_sources = self.add_weight(
            shape=(REFERENCES, *self.source_shape), initializer="zeros", trainable=False,
            aggregation="only_first_replica", name="reference_sources")

    @classmethod
    def knobs(cls, config: TranslationConfig, image_shape: Sequence[int]) -> base.Knobs:
        # espcn's and pix2pix's steps, measured (sr3 and cyclegan declare their own).
        return base.Knobs(task=config.task, xla_on_cpu=base.XLA_ON_AVX2)

    # -- what subclasses provide ---------------------------------------------------------------

    def translate_tensors(self, sources: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Images [B, H, W, C] in [-1, 1] for `sources` [B, h, w, c]; traceable, and the same
        for the same seed (a deterministic model ignores it)."""
        raise NotImplementedError

    # -- what the base class gives -------------------------------------------------------------

    def source_at_image_size(self, sources: tf.Tensor) -> tf.Tensor:
        """Sources resized to the images' size (SR: bicubic), for networks that work there."""
        if self.task.kind == "sr":
            return paired.upsample(sources, self.image_shape)
        return sources

    def remember_sources(self, sources: tf.Tensor) -> None:
        """Keep the first training batch's sources as the references of `generate`. Called
        by `compute_losses` when training."""
        self.remember(self.reference_sources, sources)

    def remember(self, references: keras.Variable, tensors: tf.Tensor) -> None:
        """Keep the first training batch's `tensors` in `references` (tiled to its size):
        assigned on every step (an assignment may not sit inside a cond under
        `tf.distribute`), changed on the first only."""
        count = tf.shape(tensors)[0]
        repeats = (REFERENCES + count - 1) // count
        first = tf.tile(tf.stop_gradient(tf.cast(tensors, tf.float32)),
                        [repeats, 1, 1, 1])[:REFERENCES]
        references.assign(tf.where(tf.equal(self.global_step, 0), first, references))

    def references(self) -> tf.Tensor:
        """What `generate` translates a draw of: the reference sources."""
        return self.reference_sources

    def translate(self, sources: Any, *, seed: int = 0) -> tf.Tensor:
        """`translate_tensors` of `sources` [B, h, w, c] in [-1, 1] (eager, one cached graph)."""
        sources = tf.convert_to_tensor(sources, tf.float32)
        if tuple(sources.shape[1:]) != self.source_shape:
            raise ValueError(f"{self.registered_name} on task {self.task.name} takes sources "
                             f"of shape {self.source_shape}, not {tuple(sources.shape[1:])}")
        return self._translate_function()(sources, tf.constant(seed, tf.int64))

    def _translate_function(self):
        functions = self._sampling_functions.functions
        key = ("translate", self.sampling_jit_compile)
        if key not in functions:
            functions[key] = tf.function(
                self.translate_tensors, jit_compile=self.samples_with_xla(), autograph=False,
                input_signature=[tf.TensorSpec([None, *self.source_shape], tf.float32),
                                 tf.TensorSpec([], tf.int64)])
        return functions[key]

    def sample_tensors(self, num_samples: tf.Tensor, seed: tf.Tensor,
                       conditioning: dict[str, tf.Tensor], **options: Any) -> tf.Tensor:
        """Translations of `num_samples` reference sources drawn (with replacement) by seed."""
        seed_pair = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        picks = tf.random.stateless_uniform(
            [num_samples], tf.random.experimental.stateless_fold_in(seed_pair, PICKS_STREAM),
            0, REFERENCES, dtype=tf.int32)
        # Through the cached translate function: its one trace (a diffusion sampler's loop
        # costs seconds) serves `generate`, `translate` and both exported signatures.
        return self._translate_function()(tf.gather(self.references(), picks),
                                          tf.cast(seed, tf.int64))

    def serving_endpoints(self) -> dict[str, Any]:
        function = self._translate_function()

        def serve(sources, seed):
            return {"images": function(sources, tf.cast(seed, tf.int64))}

        shape = "x".join(str(d) for d in self.source_shape)
        return {"translate": export.ServingEndpoint(
            serve, [tf.TensorSpec([None, *self.source_shape], tf.float32, name="sources"),
                    tf.TensorSpec([], tf.int32, name="seed")],
            f"images [B, H, W, C] in [-1, 1] translated from sources [B, {shape}] in [-1, 1] "
            f"(task {self.task.name})")}

    def l1(self, images: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        """Mean absolute error per pixel, a float32 scalar."""
        return tf.reduce_mean(tf.abs(tf.cast(images, tf.float32) - tf.cast(outputs, tf.float32)))


def optimizer(learning_rate: float, beta_1: float = 0.9) -> keras.optimizers.Optimizer:
    """Adam, as the image-to-image papers train with (pix2pix: 2e-4, beta_1 0.5)."""
    return optimizers.Adam(learning_rate, beta_1=beta_1)
