"""`cyclegan`: unpaired image-to-image translation (Zhu et al. 2017, "Unpaired Image-to-Image
Translation using Cycle-Consistent Adversarial Networks").

Two domains, no pairs: X is the run's `--dataset`, Y the `--target_dataset` (each with its own
splits; `data.paired.open_target` reads Y at X's size and channels). Batches hold an image of
each, `{"source": x, "image": y}`, drawn independently (the `unpaired` task).

- Generators G: X -> Y (`generator`) and F: Y -> X (`inverse_generator`): the zoo's U-Net
  without timestep (`networks.unet`, as pix2pix's), tanh outputs.
- Discriminators D_Y (`discriminator`) and D_X (`inverse_discriminator`): unconditional
  PatchGANs (`image_to_image.patch_discriminator` without a source).
- Losses: least-squares GAN (Mao et al. 2017, `losses.least_squares_*`), cycle consistency
  |F(G(x)) - x| + |G(F(y)) - y| with weight `cycle_weight` (the paper's 10), identity
  |G(y) - y| + |F(x) - x| with weight `identity_weight` x `cycle_weight` (the paper's 0.5).
- The discriminators see generated images through an image pool of the last `pool_size`
  (the paper's 50) fakes (`query_pool`), which damps oscillation.

Two update groups on the shared train step, discriminators then generators, as the zoo's
GANs. `translate` maps X -> Y, or Y -> X with `direction=backward` (a sampling field:
`--direction=backward`, or `--set direction=backward`, at sample, translate and export time);
the export serves the configured direction as `translate` and the other one as
`translate_forward` / `translate_backward`.

Deviations from the paper: U-Net generators with group norm instead of its ResNet generators
with instance norm; no batch norm in the discriminators; a fixed learning rate (the paper
decays it linearly over its second 100 epochs); one Adam per update group (over both networks
of the group, which is the same per-variable update as one Adam each).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import data, export, losses, registry
from aigc_zoo.errors import UserError
from aigc_zoo.models import base, image_to_image, networks, translation

DIRECTIONS = ("forward", "backward")


def cycle_and_identity(to_target: Callable[[tf.Tensor], tf.Tensor],
                       to_source: Callable[[tf.Tensor], tf.Tensor], sources: tf.Tensor,
                       targets: tf.Tensor, fake_targets: tf.Tensor | None = None,
                       fake_sources: tf.Tensor | None = None, *, identity: bool = True
                       ) -> dict[str, tf.Tensor]:
    """The cycle-consistency and identity losses of CycleGAN (mean absolute errors).

    cycle = E|F(G(x)) - x| + E|G(F(y)) - y|; identity = E|G(y) - y| + E|F(x) - x| (0 without
    `identity`: a weight of 0 needs not the two generator passes it costs).
    `fake_targets` (G(x)) and `fake_sources` (F(y)) are reused when given.
    """
    fake_targets = to_target(sources) if fake_targets is None else fake_targets
    fake_sources = to_source(targets) if fake_sources is None else fake_sources
    cycle = (tf.reduce_mean(tf.abs(to_source(fake_targets) - sources))
             + tf.reduce_mean(tf.abs(to_target(fake_sources) - targets)))
    if not identity:
        return {"cycle": cycle, "identity": tf.zeros_like(cycle)}
    identity = (tf.reduce_mean(tf.abs(to_target(targets) - targets))
                + tf.reduce_mean(tf.abs(to_source(sources) - sources)))
    return {"cycle": cycle, "identity": identity}


def query_pool(pool: tf.Tensor, count: tf.Tensor, images: tf.Tensor, seed: tf.Tensor
               ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The image pool of Shrivastava et al. 2017, as CycleGAN uses it, for a batch.

    While the pool fills, each image is stored and returned as it is. Once it is full, each
    image is, with probability 1/2, swapped for a stored one (returned; the new one takes its
    slot, distinct slots within a batch) or else returned as it is. A batch that fills the pool
    swaps nothing (its images past the last slot are returned, not stored).

    Args:
        pool: [P, H, W, C] stored images; count: int32, how many are stored.
        images: [B, H, W, C], B <= P; seed: a stateless seed [2].
    Returns:
        (the images to show the discriminator, the new pool, the new count).
    """
    size = pool.shape[0]
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 2)
    positions = count + tf.range(batch)
    filling = positions < size
    swap = tf.logical_and(count >= size, tf.random.stateless_uniform([batch], seeds[0]) < 0.5)
    slots = tf.argsort(tf.random.stateless_uniform([size], seeds[1]))[:batch]
    index = tf.where(filling, positions, tf.cast(slots, tf.int32))
    stored = tf.gather(pool, tf.minimum(index, size - 1))
    shown = tf.where(swap[:, None, None, None], stored, images)
    write = tf.logical_or(filling, swap)
    new_pool = tf.tensor_scatter_nd_update(pool, tf.boolean_mask(index, write)[:, None],
                                           tf.boolean_mask(images, write))
    return shown, new_pool, tf.minimum(count + batch, size)


@dataclasses.dataclass
class CycleGANConfig(translation.TranslationConfig):
    """Hyperparameters of `cyclegan`.

    Run: `python -m aigc_zoo.run --model=cyclegan --dataset=digits
    --target_dataset=idx:../shared/data/mnist --target_train_split=test[:9000]
    --target_eval_split=test[9000:]`

    Args:
        task: always `unpaired` (set, not chosen: `--task` is for paired models).
        target_dataset / target_train_split / target_eval_split: the domain Y and its splits
            (`--target_dataset`, ...); any dataset the runner reads.
        widths / blocks_per_level: each U-Net generator's channels per level and blocks.
        discriminator_filters: each PatchGAN's stride-2 widths.
        cycle_weight: lambda of the cycle loss (the paper's 10).
        identity_weight: the identity loss's weight as a share of `cycle_weight` (0.5).
        pool_size: generated images kept for the discriminators (the paper's 50; 0: none);
            at least the batch size.
        learning_rate / beta_1: Adam, for both groups (the paper's 2e-4 and 0.5).
        direction: `forward` (X -> Y) or `backward` (Y -> X) for `translate`, `generate`
            and the export's `translate` (a sampling field).
    """

    task: str = "unpaired"
    target_dataset: str = ""
    target_train_split: str = "train"
    target_eval_split: str = "test"
    batch_size: int = 16
    epochs: int = 10
    steps_per_epoch: int = 500
    widths: tuple[int, ...] = (32, 64, 64)
    blocks_per_level: int = 1
    discriminator_filters: tuple[int, ...] = (64, 128)
    cycle_weight: float = 10.0
    identity_weight: float = 0.5
    pool_size: int = 50
    learning_rate: float = 2e-4
    beta_1: float = 0.5
    direction: str = config_lib.sampling_field("forward")

    def validate(self) -> None:
        config_lib.TrainConfig.validate(self)  # not TranslationConfig's: its task is paired
        if self.task != "unpaired":
            raise UserError(f"bad value task={self.task!r}: cyclegan learns unpaired "
                            "translation between --dataset and --target_dataset; drop --task")
        for split in (self.target_train_split, self.target_eval_split):
            data.parse_split(split)
        config_lib.check_range("cycle_weight", self.cycle_weight, 0.0, float("inf"))
        config_lib.check_range("identity_weight", self.identity_weight, 0.0, float("inf"))
        if self.pool_size and self.pool_size < self.batch_size:
            raise UserError(f"bad value pool_size={self.pool_size}: the image pool holds at "
                            f"least a batch ({self.batch_size}), or is off (0)")
        config_lib.check_range("pool_size", self.pool_size, 0, 100_000)
        config_lib.check_positive("learning_rate", self.learning_rate)
        config_lib.check_range("beta_1", self.beta_1, 0.0, 0.999999)
        config_lib.check_positive("blocks_per_level", self.blocks_per_level)
        config_lib.check_choice("direction", self.direction, DIRECTIONS)
        for name in ("widths", "discriminator_filters"):
            config_lib.check_widths(name, getattr(self, name))


@registry.register_model("cyclegan")
class CycleGAN(translation.TranslationModel):
    """Two generators and two discriminators trained with GAN, cycle and identity losses.

    Args:
        config: a `CycleGANConfig`.
        **kwargs: `image_shape`, `num_classes`, `seed`, as for `GenerativeModel`.
    """

    config_class = CycleGANConfig
    loss_names = ("d_loss", "g_loss", "g_gan", "cycle", "identity", "d_real", "d_fake")

    def __init__(self, config: CycleGANConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        shape = self.image_shape  # both domains are read at this shape

        def generator(name):
            return networks.unet(shape, config.widths, blocks_per_level=config.blocks_per_level,
                                 attention=False, timestep=False, output_channels=shape[-1],
                                 name=name)

        self.generator, self.inverse_generator = generator("generator"), generator(
            "inverse_generator")
        self.discriminator, self.inverse_discriminator = (
            image_to_image.patch_discriminator(None, shape, config.discriminator_filters,
                                               name=name)
            for name in ("discriminator", "inverse_discriminator"))
        # The first batch's targets: what `generate` translates backward.
        self.reference_targets = self.add_weight(
            shape=(translation.REFERENCES, *shape), initializer="zeros", trainable=False,
            aggregation="only_first_replica", name="reference_targets")
        # Pools of generated targets (for D_Y) and sources (for D_X), in the checkpoints so a
        # resumed run continues with them. Under tf.distribute the first replica's are kept.
        self.pools = [self.add_weight(shape=(max(config.pool_size, 1), *shape),
                                      initializer="zeros", trainable=False,
                                      aggregation="only_first_replica", name=f"pool_{side}")
                      for side in ("targets", "sources")]
        self.pool_counts = [self.add_weight(shape=(), dtype="int32", initializer="zeros",
                                            trainable=False, aggregation="only_first_replica",
                                            name=f"pool_{side}_count")
                            for side in ("targets", "sources")]

    @classmethod
    def knobs(cls, config: CycleGANConfig, image_shape: Sequence[int]) -> base.Knobs:
        return base.Knobs(task="unpaired", target=(config.target_dataset,
                                                   config.target_train_split,
                                                   config.target_eval_split),
                          xla_on_cpu=base.XLA_ON_AVX2)

    @classmethod
    def tiny_config(cls) -> CycleGANConfig:
        # One U-Net level per generator, as pix2pix's tiny config, and no identity passes
        # (tests/test_cyclegan.py checks them): trace time rules the tests.
        return CycleGANConfig(batch_size=8, epochs=1, steps_per_epoch=3, widths=(8,),
                              discriminator_filters=(8,), pool_size=8, identity_weight=0.0,
                              target_dataset="digits")

    def update_groups(self) -> list[base.UpdateGroup]:
        config = self.config
        return [
            base.UpdateGroup("discriminators", self.discriminator.trainable_variables
                             + self.inverse_discriminator.trainable_variables,
                             translation.optimizer(config.learning_rate, config.beta_1),
                             loss="d_loss"),
            base.UpdateGroup("generators", self.generator.trainable_variables
                             + self.inverse_generator.trainable_variables,
                             translation.optimizer(config.learning_rate, config.beta_1),
                             loss="g_loss"),
        ]

    # -- translation ---------------------------------------------------------------------------

    def _to_target(self, sources: tf.Tensor, training: bool = False) -> tf.Tensor:
        return tf.tanh(tf.cast(self.generator(sources, training=training), tf.float32))

    def _to_source(self, targets: tf.Tensor, training: bool = False) -> tf.Tensor:
        return tf.tanh(tf.cast(self.inverse_generator(targets, training=training), tf.float32))

    def translate_direction(self, images: tf.Tensor, direction: str) -> tf.Tensor:
        """X -> Y (`forward`) or Y -> X (`backward`) of images [B, H, W, C] in [-1, 1]."""
        return self._to_source(images) if direction == "backward" else self._to_target(images)

    def translate_tensors(self, sources: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return self.translate_direction(sources, self.config.direction)

    def references(self) -> tf.Tensor:
        return (self.reference_targets if self.config.direction == "backward"
                else self.reference_sources)

    def serving_endpoints(self) -> dict[str, Any]:
        endpoints = super().serving_endpoints()
        other = "forward" if self.config.direction == "backward" else "backward"
        function = tf.function(lambda images: self.translate_direction(images, other),
                               jit_compile=self.samples_with_xla(), autograph=False)

        def serve(sources, seed):  # the seed is unused (deterministic), kept for symmetry
            return {"images": function(sources)}

        endpoints[f"translate_{other}"] = export.ServingEndpoint(
            serve, [tf.TensorSpec([None, *self.image_shape], tf.float32, name="sources"),
                    tf.TensorSpec([], tf.int32, name="seed")],
            f"images [B, H, W, C] in [-1, 1] translated {other} "
            f"({'target domain to source' if other == 'backward' else 'source to target'})")
        return endpoints

    # -- training ------------------------------------------------------------------------------

    def _pooled(self, side: int, fakes: tf.Tensor) -> tf.Tensor:
        """`fakes` through pool `side` (0: targets, 1: sources), which it updates."""
        if not self.config.pool_size:
            return fakes
        shown, pool, count = query_pool(self.pools[side], self.pool_counts[side], fakes,
                                        tf.cast(self.random_seed(), tf.int64))
        self.pools[side].assign(pool)
        self.pool_counts[side].assign(count)
        return shown

    def compute_losses(self, batch: dict[str, tf.Tensor], *, training: bool,
                       group: str | None = None) -> dict[str, tf.Tensor]:
        sources = tf.cast(batch["source"], tf.float32)
        targets = tf.cast(batch["image"], tf.float32)
        results: dict[str, tf.Tensor] = {}
        if group in (None, "discriminators"):
            if training:
                self.remember_sources(sources)
                self.remember(self.reference_targets, targets)
            fake_targets = tf.stop_gradient(self._to_target(sources, training))
            fake_sources = tf.stop_gradient(self._to_source(targets, training))
            if training:
                fake_targets = self._pooled(0, fake_targets)
                fake_sources = self._pooled(1, fake_sources)
            real = [self.discriminator(targets, training=training),
                    self.inverse_discriminator(sources, training=training)]
            fake = [self.discriminator(fake_targets, training=training),
                    self.inverse_discriminator(fake_sources, training=training)]
            results.update(
                d_loss=(losses.least_squares_discriminator_loss(real[0], fake[0])
                        + losses.least_squares_discriminator_loss(real[1], fake[1])),
                d_real=tf.reduce_mean(real[0]) / 2 + tf.reduce_mean(real[1]) / 2,
                d_fake=tf.reduce_mean(fake[0]) / 2 + tf.reduce_mean(fake[1]) / 2)
        if group in (None, "generators"):
            fake_targets = self._to_target(sources, training)
            fake_sources = self._to_source(targets, training)
            # The paper's generator term is E[(D(G(x)) - 1)^2]; the zoo's least-squares
            # generator loss is half of it, so twice it keeps the paper's balance with the
            # cycle weight.
            g_gan = 2.0 * (losses.least_squares_generator_loss(
                self.discriminator(fake_targets, training=False))
                + losses.least_squares_generator_loss(
                    self.inverse_discriminator(fake_sources, training=False)))
            terms = cycle_and_identity(lambda x: self._to_target(x, training),
                                       lambda y: self._to_source(y, training), sources,
                                       targets, fake_targets, fake_sources,
                                       identity=self.config.identity_weight > 0)
            config = self.config
            results.update(g_gan=g_gan, **terms, g_loss=(
                g_gan + config.cycle_weight * terms["cycle"]
                + config.identity_weight * config.cycle_weight * terms["identity"]))
        return results
