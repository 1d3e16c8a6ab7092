"""The GAN family on the shared train step: `gan`, `dcgan`, `wgan_gp`, `sngan` and `cgan`.

One class, `GAN`, with two update groups: the discriminator (stepped `d_steps` times, each on
its own slice of the batch) and then the generator. The variants differ only in their config:

| model     | networks            | loss           | discriminator                            |
|-----------|---------------------|----------------|------------------------------------------|
| `gan`     | fully connected     | non-saturating | plain (Goodfellow et al. 2014)           |
| `dcgan`   | convolutional, BN G | non-saturating | plain (Radford et al. 2016)              |
| `wgan_gp` | convolutional, BN G | Wasserstein    | 5 steps, gradient penalty (Gulrajani 2017) |
| `sngan`   | convolutional, BN G | hinge          | spectral norm (Miyato et al. 2018)       |
| `cgan`    | convolutional, BN G | hinge          | SN, projection (Miyato & Koyama 2018)   |

On the 2D toy datasets (`ring8`, `grid25`) every variant uses fully connected networks of the
same kind, with the variant's loss and regulariser (`default_config(dataset)`).

`generate` samples from an exponential moving average of the generator's weights
(`ema_decay`, Yazıcı et al. 2019); `ema_decay=0` samples from the live generator.

`augment=diffaugment` or `augment=ada` shows the discriminator augmented images only, real and
generated, on both networks' steps (`aigc_zoo.augment`; Zhao et al. 2020, Karras et al. 2020).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import keras
import tensorflow as tf

from aigc_zoo import augment as augment_lib
from aigc_zoo import config as config_lib
from aigc_zoo import domains
from aigc_zoo import losses
from aigc_zoo import optimizers
from aigc_zoo import registry
from aigc_zoo.errors import UserError
from aigc_zoo.models import base
from aigc_zoo.models import ema
from aigc_zoo.models import gan_networks

# loss name -> (discriminator loss(real, fake), generator loss(fake))
LOSSES = {
    "minimax": (losses.minimax_discriminator_loss, losses.minimax_generator_loss),
    "non_saturating": (losses.minimax_discriminator_loss, losses.non_saturating_generator_loss),
    "wasserstein": (losses.wasserstein_critic_loss, losses.wasserstein_generator_loss),
    "hinge": (losses.hinge_discriminator_loss, losses.wasserstein_generator_loss),
    "least_squares": (losses.least_squares_discriminator_loss,
                      losses.least_squares_generator_loss),
}
ARCHITECTURES = ("conv", "mlp")
_STATISTICS_BATCH = 2048  # latents whose activations give the averaged generator's BN statistics
_STATISTICS_SEED = 4321
# ADA's r_t = E[sign(D(real))] needs scores centred on 0 (a logit, or hinge's margin): a
# Wasserstein critic's scale drifts freely and least squares aims real scores at 1, fakes at 0.
_ADA_LOSSES = ("minimax", "non_saturating", "hinge")


@dataclasses.dataclass
class GANConfig(config_lib.TrainConfig):
    """Hyperparameters shared by every GAN variant (each variant changes the defaults).

    Args:
        batch_size: real examples per train step; with `d_steps` > 1 every discriminator step
            takes its own `batch_size / d_steps` of them, and the generator step draws as many
            latents as one discriminator step.
        latent_dim: dimensions of the generator's Gaussian latent.
        architecture: `conv` or `mlp` for images (points always use `mlp`).
        generator_filters / discriminator_filters: widths of the stride-2 layers, from the
            highest resolution down (convolutional networks).
        mlp_units: widths of the hidden layers (fully connected networks).
        generator_batch_norm: batch norm in the generator's hidden layers.
        spectral_norm: spectrally normalise every discriminator layer.
        loss: one of `LOSSES`.
        d_steps: discriminator updates per generator update.
        gradient_penalty: weight lambda of the WGAN-GP penalty (0: off).
        r1_gamma: weight gamma of the R1 penalty on real data, applied as gamma / 2 (0: off).
        d_learning_rate / g_learning_rate: Adam step sizes.
        beta_1 / beta_2: Adam's moment decays (both networks).
        lr_decay_steps: decay both learning rates linearly to 0 over this many generator steps
            (0: constant rates).
        ema_decay: decay of the generator's weight average used by `generate` (0: off).
        augment: `none`, `diffaugment` (Zhao et al. 2020) or `ada` (Karras et al. 2020): the
            discriminator sees augmented real and generated images on both networks' steps.
        augment_policy: DiffAugment's operations, in order (`color`, `translation`, `cutout`).
        ada_target: the r_t = E[sign(D(real))] that ADA's controller aims for.
        ada_interval: discriminator steps between two adjustments of ADA's p.
        ada_kimg: thousands of real images over which ADA's p can go from 0 to 1 (the paper's
            500 is for runs of tens of millions of images; 100 lets p reach 1 within a fifth
            of the default 480k-image dcgan run on digits).
    """

    batch_size: int = 64
    epochs: int = 8
    latent_dim: int = 64
    architecture: str = "conv"
    generator_filters: tuple[int, ...] = (64, 128)
    discriminator_filters: tuple[int, ...] = (64, 128)
    mlp_units: tuple[int, ...] = (256, 512)
    generator_batch_norm: bool = True
    spectral_norm: bool = False
    loss: str = "non_saturating"
    d_steps: int = 1
    gradient_penalty: float = 0.0
    r1_gamma: float = 0.0
    d_learning_rate: float = 2e-4
    g_learning_rate: float = 2e-4
    beta_1: float = 0.5
    beta_2: float = 0.999
    lr_decay_steps: int = 0
    ema_decay: float = 0.999
    # Added fields: GAN runs saved before augmentation existed load as augment="none".
    augment: str = config_lib.added_field("none")
    augment_policy: tuple[str, ...] = config_lib.added_field(augment_lib.POLICIES)
    ada_target: float = config_lib.added_field(0.6)
    ada_interval: int = config_lib.added_field(4)
    ada_kimg: float = config_lib.added_field(100.0)

    def validate(self) -> None:
        super().validate()
        config_lib.check_positive("latent_dim", self.latent_dim)
        config_lib.check_choice("architecture", self.architecture, ARCHITECTURES)
        config_lib.check_choice("loss", self.loss, LOSSES)
        config_lib.check_positive("d_steps", self.d_steps)
        config_lib.check_range("gradient_penalty", self.gradient_penalty, 0.0, float("inf"))
        config_lib.check_range("r1_gamma", self.r1_gamma, 0.0, float("inf"))
        config_lib.check_positive("d_learning_rate", self.d_learning_rate)
        config_lib.check_positive("g_learning_rate", self.g_learning_rate)
        config_lib.check_range("beta_1", self.beta_1, 0.0, 0.999999)
        config_lib.check_range("beta_2", self.beta_2, 0.0, 0.999999)
        config_lib.check_range("lr_decay_steps", self.lr_decay_steps, 0, float("inf"))
        config_lib.check_range("ema_decay", self.ema_decay, 0.0, 0.999999)
        for name in ("generator_filters", "discriminator_filters", "mlp_units"):
            config_lib.check_widths(name, getattr(self, name), "64,128")
        self._validate_augment()
        if self.batch_size % self.d_steps:
            raise UserError(f"bad value batch_size={self.batch_size}: expected a multiple of "
                            f"d_steps={self.d_steps} (each discriminator step takes an equal "
                            "share)")

    def _validate_augment(self) -> None:
        config_lib.check_choice("augment", self.augment, augment_lib.MODES)
        for name in self.augment_policy:
            config_lib.check_choice("augment_policy", name, augment_lib.POLICIES)
        config_lib.check_range("ada_target", self.ada_target, 0.0, 1.0)
        config_lib.check_positive("ada_interval", self.ada_interval)
        config_lib.check_positive("ada_kimg", self.ada_kimg)
        if self.augment == "diffaugment" and not self.augment_policy:
            raise UserError("bad value augment_policy=(): augment=diffaugment needs one or more "
                            f"of {', '.join(augment_lib.POLICIES)}")
        if self.augment == "ada" and self.loss not in _ADA_LOSSES:
            raise UserError(f"augment=ada needs discriminator scores centred on 0 (loss "
                            f"{', '.join(_ADA_LOSSES)}), not loss={self.loss}: its r_t = "
                            "E[sign(D(real))] means nothing there; use augment=diffaugment")


# The toy datasets' settings, the same for every variant: small fully connected networks, 256
# points per discriminator step, a learning rate of 2e-4 and 20,000 generator steps (measured
# with experiments/gan_modes.py: larger batches and the higher rate sharpened WGAN-GP's modes);
# no R1 (dcgan's image default, not measured on points).
_TOY_DEFAULTS = {"architecture": "mlp", "mlp_units": (128, 128, 128), "latent_dim": 16,
                 "d_learning_rate": 2e-4, "g_learning_rate": 2e-4, "epochs": 20,
                 "steps_per_epoch": 1000, "r1_gamma": 0.0}
_TOY_BATCH_PER_STEP = 256


class GAN(base.GenerativeModel):
    """A generator and a discriminator trained in alternation on the shared train step.

    Args:
        config: a `GANConfig`.
        **kwargs: `image_shape`, `num_classes`, `seed`, as for `GenerativeModel`.
    """

    config_class = GANConfig

    @classmethod
    def knobs(cls, config: GANConfig, image_shape: Sequence[int]) -> base.Knobs:
        # 4 steps per call measured faster than 1 on a CPU (make benchmark). Fully connected
        # networks (`gan`, and every variant on 2D points): XLA's fused step was 1.6x faster
        # than graph mode for `gan` on a CPU; the convolutional ones are faster in graph mode
        # on an AVX-512 CPU, 1.7-1.9x slower on an AVX2 one; dcgan's sampling likewise (1.9x
        # faster with XLA on the AVX2 CPU, 0.8x on the AVX-512 one).
        fully_connected = domains.holds_points(image_shape) or config.architecture == "mlp"
        return base.Knobs(steps_per_execution=4,
                          xla_on_cpu=True if fully_connected else base.XLA_ON_AVX2,
                          sampling_xla_on_cpu=False if fully_connected else base.XLA_ON_AVX2)

    def __init__(self, config: GANConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        if self.conditional and not self.num_classes:
            raise UserError(f"{self.registered_name} needs a dataset with labels")
        self.points = domains.holds_points(self.image_shape)
        if self.points and config.augment != "none":
            raise UserError(f"augment={config.augment} augments images; 2D points cannot be "
                            "augmented (use augment=none)")
        classes = self.num_classes if self.conditional else None
        if self.points or config.architecture == "mlp":
            self.generator = gan_networks.mlp_generator(
                config.latent_dim, self.image_shape, config.mlp_units,
                batch_norm=config.generator_batch_norm, tanh=not self.points,
                num_classes=classes)
            self.discriminator = gan_networks.mlp_discriminator(
                self.image_shape, config.mlp_units, spectral_norm=config.spectral_norm,
                num_classes=classes)
        else:
            self.generator = gan_networks.conv_generator(
                config.latent_dim, self.image_shape, config.generator_filters,
                batch_norm=config.generator_batch_norm, num_classes=classes)
            self.discriminator = gan_networks.conv_discriminator(
                self.image_shape, config.discriminator_filters,
                spectral_norm=config.spectral_norm, num_classes=classes)
        self.generator_average = (ema.WeightAverage(self.generator, decay=config.ema_decay)
                                  if config.ema_decay > 0 else None)
        self._d_loss, self._g_loss = LOSSES[config.loss]
        if config.augment == "ada":
            # Model variables, so checkpoints carry them; every replica computes the same
            # values from replica-summed statistics, so each keeps the first replica's.
            self.ada_p = keras.Variable(0.0, trainable=False, name="ada_p",
                                        aggregation="only_first_replica")
            # Since the last adjustment: sum of sign(D(real)), real images, discriminator steps.
            self.ada_statistics = keras.Variable(tf.zeros([3]), trainable=False,
                                                 name="ada_statistics",
                                                 aggregation="only_first_replica")

    @property
    def loss_names(self) -> tuple[str, ...]:
        names = ("d_loss", "g_loss", "d_real", "d_fake")
        if self.config.gradient_penalty:
            names += ("gradient_penalty",)
        if self.config.r1_gamma:
            names += ("r1_penalty",)
        if self.config.augment == "ada":
            names += ("ada_p", "ada_r_t")
        return names

    @classmethod
    def default_config(cls, dataset: str | None = None) -> GANConfig:
        config = cls.config_class()
        if dataset is not None and domains.for_dataset(dataset).kind == "points":
            config = dataclasses.replace(config, **_TOY_DEFAULTS,
                                         batch_size=_TOY_BATCH_PER_STEP * config.d_steps)
        return config

    @classmethod
    def tiny_config(cls) -> GANConfig:
        return dataclasses.replace(
            cls.config_class(), batch_size=8 * cls.config_class.d_steps, epochs=1,
            steps_per_epoch=3, latent_dim=8, generator_filters=(8, 16),
            discriminator_filters=(8, 16), mlp_units=(16, 16))

    def update_groups(self) -> list[base.UpdateGroup]:
        config = self.config

        def adam(learning_rate, steps_per_update):
            if config.lr_decay_steps:
                # The schedule reads the group's own step count: d_steps per generator step.
                learning_rate = keras.optimizers.schedules.PolynomialDecay(
                    learning_rate, config.lr_decay_steps * steps_per_update, 0.0)
            return optimizers.Adam(learning_rate, beta_1=config.beta_1,
                                         beta_2=config.beta_2)

        return [
            base.UpdateGroup("discriminator", self.discriminator.trainable_variables,
                             adam(config.d_learning_rate, config.d_steps), loss="d_loss",
                             repeats=config.d_steps, split_batch=config.d_steps > 1),
            base.UpdateGroup("generator", self.generator.trainable_variables,
                             adam(config.g_learning_rate, 1), loss="g_loss"),
        ]

    def after_update(self, group: str) -> None:
        if group == "generator" and self.generator_average is not None:
            self.generator_average.update()

    # -- networks ------------------------------------------------------------------------------

    def _latents(self, count, seed: tf.Tensor) -> tf.Tensor:
        return tf.random.stateless_normal([count, self.config.latent_dim], seed)

    def _batch_latents(self, count) -> tf.Tensor:
        """Fresh latents for `count` examples of this replica's share of the batch."""
        seed = self.random_seed()
        return self.replica_share(lambda n: self._latents(n, seed), count)

    def _generate(self, network: keras.Model, latents: tf.Tensor, labels: tf.Tensor | None,
                  training: bool) -> tf.Tensor:
        inputs = [latents, labels] if self.conditional else latents
        return tf.cast(network(inputs, training=training), tf.float32)

    def _score(self, samples: tf.Tensor, labels: tf.Tensor | None, training: bool) -> tf.Tensor:
        inputs = [samples, labels] if self.conditional else samples
        return tf.cast(self.discriminator(inputs, training=training), tf.float32)

    def _random_labels(self, count) -> tf.Tensor | None:
        seed = self.random_seed()  # taken either way, so every variant's stream stays as it was
        if not self.conditional:
            return None
        return self.replica_share(lambda n: tf.random.stateless_uniform(
            [n], seed, 0, self.num_classes, dtype=tf.int32), count)

    # -- objective -----------------------------------------------------------------------------

    def compute_losses(self, batch: dict[str, tf.Tensor], *, training: bool,
                       group: str | None = None) -> dict[str, tf.Tensor]:
        real = batch["image"]
        labels = batch.get("label") if self.conditional else None
        results: dict[str, tf.Tensor] = {}
        augmenting = training and self.config.augment != "none"
        if group in (None, "discriminator"):
            count = tf.shape(real)[0]
            fake = self._generate(self.generator, self._batch_latents(count), labels, training)
            if augmenting:  # the discriminator (and its penalties) sees augmented images only
                real, fake = self._augment(real), self._augment(fake)
            real_scores = self._score(real, labels, training)
            fake_scores = self._score(fake, labels, training)
            d_loss = self._d_loss(real_scores, fake_scores)
            results.update(d_real=tf.reduce_mean(real_scores),
                           d_fake=tf.reduce_mean(fake_scores))
            if self.config.gradient_penalty:
                seed = self.random_seed()
                epsilon = self.replica_share(lambda n: tf.random.stateless_uniform([n], seed),
                                             count)
                penalty = losses.gradient_penalty(
                    lambda x: self._score(x, labels, training), real, fake, epsilon)
                results["gradient_penalty"] = penalty
                d_loss += self.config.gradient_penalty * penalty
            if self.config.r1_gamma:
                penalty = losses.r1_penalty(lambda x: self._score(x, labels, training), real)
                results["r1_penalty"] = penalty
                d_loss += 0.5 * self.config.r1_gamma * penalty
            results["d_loss"] = d_loss
            if augmenting and self.config.augment == "ada" and group == "discriminator":
                results.update(self._adapt_probability(real_scores))
        if group in (None, "generator"):
            # As many fakes as one discriminator step sees (per replica under tf.distribute).
            count = tf.shape(real)[0] // self.config.d_steps
            fake_labels = self._random_labels(count)
            fake = self._generate(self.generator, self._batch_latents(count), fake_labels,
                                  training)
            if augmenting:  # through the same augmentations, so G is not taught to make them
                fake = self._augment(fake)
            # The discriminator is not being trained here: no spectral-norm power iteration.
            results["g_loss"] = self._g_loss(self._score(fake, fake_labels, training=False))
        return results

    # -- augmentation (aigc_zoo.augment) -------------------------------------------------------

    def _augment(self, images: tf.Tensor) -> tf.Tensor:
        """DiffAugment or ADA with a fresh draw of the model's seeded stream."""
        seed = self.random_seed()
        if self.config.augment == "diffaugment":
            return augment_lib.diff_augment(images, seed, policy=self.config.augment_policy,
                                            share=self.replica_share)
        return augment_lib.ada_augment(images, seed, p=tf.convert_to_tensor(self.ada_p),
                                       share=self.replica_share)

    def _adapt_probability(self, real_scores: tf.Tensor) -> dict[str, tf.Tensor]:
        """ADA's controller: accumulate sign(D(real)) over `ada_interval` discriminator steps,
        then move p by the images seen / (ada_kimg * 1000) towards r_t = `ada_target`.

        The sums are over replicas, so every replica computes the same p (as VQ-VAE's EMA
        codebook); returns the p now in use and the r_t of the interval so far.
        """
        config = self.config
        signs = self.replica_sum(tf.stack([tf.reduce_sum(tf.sign(real_scores)),
                                       tf.cast(tf.size(real_scores), tf.float32)]))
        statistics = (tf.convert_to_tensor(self.ada_statistics)
                      + tf.concat([tf.stop_gradient(signs), [1.0]], 0))
        r_t = statistics[0] / statistics[1]
        due = statistics[2] >= config.ada_interval
        p = tf.convert_to_tensor(self.ada_p)
        step = statistics[1] / (config.ada_kimg * 1000.0)
        p = tf.where(due, augment_lib.ada_update(p, r_t, target=config.ada_target, step=step),
                     p)
        # Assigned either way: under tf.distribute an assignment may not sit inside a cond.
        self.ada_p.assign(p)
        self.ada_statistics.assign(tf.where(due, tf.zeros([3]), statistics))
        return {"ada_p": p, "ada_r_t": r_t}

    # -- sampling ------------------------------------------------------------------------------

    def _statistics_inputs(self):
        """Fixed latents (and labels) whose activations give the average's BN statistics."""
        count = _STATISTICS_BATCH
        latents = self._latents(count, tf.constant([_STATISTICS_SEED, 1], tf.int32))
        if not self.conditional:
            return latents
        return [latents, tf.range(count) % self.num_classes]

    def sampling_options(self) -> dict[str, base.SamplingOption]:
        return {
            # Static: each is its own graph. The defaults are what exports serve.
            "average": base.SamplingOption(True, doc="sample from the weight average (when "
                                           "ema_decay > 0), else the live generator"),
            "standing": base.SamplingOption(True, doc="give the average batch-norm statistics "
                                            "of its own activations first (False keeps what it "
                                            "holds: for experiments/ema_batchnorm.py)"),
        }

    def resolve_sampling_options(self, options: dict[str, Any]) -> dict[str, Any]:
        for name, value in options.items():
            if not isinstance(value, bool):
                raise ValueError(f"sampling option {name} must be True or False, not {value!r}")
        return options

    def prepare_sampling(self, options: dict[str, Any]) -> None:
        """Give the weight average standing batch-norm statistics (if not done since training)."""
        if self.generator_average is not None and options["average"] and options["standing"]:
            self.generator_average.ensure_statistics(self._statistics_inputs)

    def sample_tensors(self, num_samples: tf.Tensor, seed: tf.Tensor,
                       conditioning: dict[str, tf.Tensor], *, average: bool,
                       standing: bool) -> tf.Tensor:
        """Samples of the weight average (`average`, when there is one) or the generator."""
        network = self.generator
        if average and self.generator_average is not None:
            network = self.generator_average.averaged
        return self._samples(network, num_samples, seed, conditioning.get("labels"))

    def _samples(self, network: keras.Model, num_samples, seed: tf.Tensor,
                 labels: tf.Tensor | None) -> tf.Tensor:
        seed_pair = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        samples = self._generate(network, self._latents(num_samples, seed_pair), labels,
                                 training=False)
        return samples if self.points else tf.clip_by_value(samples, -1.0, 1.0)


@dataclasses.dataclass
class VanillaGANConfig(GANConfig):
    """`gan` defaults."""

    epochs: int = 20
    architecture: str = "mlp"
    generator_batch_norm: bool = False


@registry.register_model("gan")
class VanillaGAN(GAN):
    """The original fully connected GAN (Goodfellow et al. 2014), non-saturating loss."""

    config_class = VanillaGANConfig


@dataclasses.dataclass
class DCGANConfig(GANConfig):
    """`dcgan` defaults: the paper's, with an R1 penalty on real images (Mescheder et al.
    2018). Measured on real MNIST digits and on `digits` for the same steps
    (experiments/real_mnist.py; docs/evaluation.md): gamma = 1 lowered FD and raised the domain
    classifier's confidence on samples on both, and evened out the classes it draws."""

    r1_gamma: float = 1.0


@registry.register_model("dcgan")
class DCGAN(GAN):
    """DCGAN (Radford et al. 2016): convolutional, batch norm in G, leaky ReLU in D; R1."""

    config_class = DCGANConfig


@dataclasses.dataclass
class WGANGPConfig(GANConfig):
    """`wgan_gp` defaults."""

    batch_size: int = 320  # 64 per critic step
    epochs: int = 6
    loss: str = "wasserstein"
    d_steps: int = 5
    gradient_penalty: float = 10.0
    d_learning_rate: float = 1e-4
    g_learning_rate: float = 1e-4
    beta_1: float = 0.0
    beta_2: float = 0.9


@registry.register_model("wgan_gp")
class WGANGP(GAN):
    """WGAN-GP (Gulrajani et al. 2017): 5 critic steps, lambda = 10, Adam(0, 0.9), no BN in D."""

    config_class = WGANGPConfig


@dataclasses.dataclass
class SNGANConfig(GANConfig):
    """`sngan` defaults."""

    loss: str = "hinge"
    spectral_norm: bool = True


@registry.register_model("sngan")
class SNGAN(GAN):
    """SNGAN (Miyato et al. 2018): hinge loss, spectral norm in every discriminator layer."""

    config_class = SNGANConfig


@dataclasses.dataclass
class ConditionalGANConfig(GANConfig):
    """`cgan` defaults."""

    epochs: int = 3  # the labels make it converge faster than the unconditional variants
    loss: str = "hinge"
    spectral_norm: bool = True


@registry.register_model("cgan")
class ConditionalGAN(GAN):
    """Class-conditional GAN: label embedding in G, projection discriminator with SN, hinge."""

    conditional = True

    config_class = ConditionalGANConfig
