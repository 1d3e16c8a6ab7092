"""Denoising diffusion: `ddpm` (Ho et al. 2020) and the class-conditional `cddpm`.

Training draws a timestep t uniformly from [0, T), noises the image to x_t (`schedules`), and
regresses a U-Net's output onto epsilon (Ho et al.'s L_simple) or onto v = sqrt(a) eps -
sqrt(1 - a) x_0 (Salimans & Ho 2022), optionally weighted per example by min(SNR, gamma)
(Hang et al. 2023). An exponential moving average of the weights (`ema.WeightAverage`) is
updated after every optimizer step and is what `generate` samples with, by DDIM (Song et al.
2021) or ancestral DDPM steps (`samplers`).

`cddpm` adds a class embedding and replaces the label with a "null" class for a fraction
`label_dropout` of the training examples, so the same network also predicts unconditionally;
`generate(guidance=s)` then mixes the two predictions (classifier-free guidance, Ho & Salimans
2022): s = 0 is unconditional, 1 conditional, above 1 guided.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import keras
import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import optimizers
from aigc_zoo import registry, samplers, schedules
from aigc_zoo.errors import UserError
from aigc_zoo.models import base, ema, networks


@dataclasses.dataclass
class DiffusionConfig(config_lib.TrainConfig):
    """Hyperparameters of the diffusion models.

    Run: `python -m aigc_zoo.run --model=ddpm` (21 minutes on a 2-core CPU; see
    docs/diffusion.md).

    Args:
        timesteps: T, the number of discrete noise levels.
        schedule: noise schedule, one of `schedules.SCHEDULES`.
        prediction: what the network predicts, "epsilon" or "v".
        min_snr_gamma: gamma of min-SNR loss weighting; 0 turns it off (plain MSE).
        widths: U-Net channels per resolution, from the full resolution down.
        blocks_per_level: residual blocks per U-Net level.
        attention: self-attention at the lowest resolution.
        embedding_dim: width of the time and class embedding.
        dropout: dropout rate in the residual blocks.
        learning_rate: Adam's step size.
        gradient_clip: global gradient-norm clip (0: none).
        ema_decay: decay of the sampling weights' moving average.
        label_dropout: `cddpm`: share of training labels replaced by the null class.
        guidance: `cddpm`: default classifier-free guidance scale of `generate`.
        sample_steps: network evaluations per sample of `generate` by default, which is
            what the per-epoch grid, `--mode=sample` and `--mode=eval` use.
        sample_eta: DDIM's eta by default (0: deterministic).
        sample_spacing: which timesteps the sampler visits, one of `samplers.SPACINGS`.
        sample_sampler: `generate`'s sampler by default: "ddim", "ddpm" (ancestral, all
            `timesteps` unless `steps` is given) or "dpmpp_2m" (DPM-Solver++(2M)).
    """

    batch_size: int = 128
    epochs: int = 6
    steps_per_epoch: int = 500
    timesteps: int = 1000
    schedule: str = "cosine"
    prediction: str = "epsilon"
    min_snr_gamma: float = 0.0
    widths: tuple[int, ...] = (16, 32, 64)
    blocks_per_level: int = 1
    attention: bool = True
    embedding_dim: int = 128
    dropout: float = 0.0
    learning_rate: float = 1e-3
    gradient_clip: float = 1.0
    ema_decay: float = 0.995
    label_dropout: float = 0.1
    guidance: float = config_lib.sampling_field(2.0)
    sample_steps: int = config_lib.sampling_field(20)
    sample_eta: float = config_lib.sampling_field(0.0)
    sample_spacing: str = config_lib.sampling_field("trailing")
    sample_sampler: str = config_lib.sampling_field("ddim", added=True)

    def validate(self) -> None:
        super().validate()
        config_lib.check_range("timesteps", self.timesteps, 2, 100_000)
        config_lib.check_choice("schedule", self.schedule, schedules.SCHEDULES)
        config_lib.check_choice("prediction", self.prediction, schedules.PREDICTIONS)
        config_lib.check_range("min_snr_gamma", self.min_snr_gamma, 0.0, float("inf"))
        config_lib.check_widths("widths", self.widths, "16,32,64")
        config_lib.check_positive("blocks_per_level", self.blocks_per_level)
        if self.embedding_dim < 4 or self.embedding_dim % 2:
            raise UserError(f"bad value embedding_dim={self.embedding_dim}: expected an even "
                            "integer >= 4")
        config_lib.check_range("dropout", self.dropout, 0.0, 0.99)
        config_lib.check_positive("learning_rate", self.learning_rate)
        config_lib.check_range("gradient_clip", self.gradient_clip, 0.0, float("inf"))
        config_lib.check_range("ema_decay", self.ema_decay, 0.0, 0.999999)
        config_lib.check_range("label_dropout", self.label_dropout, 0.0, 1.0)
        config_lib.check_range("guidance", self.guidance, 0.0, float("inf"))
        config_lib.check_range("sample_steps", self.sample_steps, 1, self.timesteps)
        config_lib.check_range("sample_eta", self.sample_eta, 0.0, 1.0)
        config_lib.check_choice("sample_spacing", self.sample_spacing, samplers.SPACINGS)
        config_lib.check_choice("sample_sampler", self.sample_sampler, samplers.SAMPLERS)
        try:
            samplers.timesteps(self.timesteps, self.sample_steps, self.sample_spacing)
        except ValueError as error:
            raise UserError(f"bad value sample_steps={self.sample_steps}: {error}") from None


def default_steps(config: DiffusionConfig, sampler: str | None = None) -> int:
    """Network evaluations of `generate` by default with `sampler` (default: the config's):
    all T for ancestral DDPM, else `sample_steps` (each doubled by guidance). sr3's config has
    the same three fields and uses it too."""
    sampler = sampler or config.sample_sampler
    return config.timesteps if sampler == "ddpm" else config.sample_steps


@dataclasses.dataclass
class DDPMConfig(DiffusionConfig):
    """`ddpm` defaults: DDIM sampling with eta = 1 (its ancestral form on the 20-step chain)
    and the min-SNR-5 loss weight, each of which lowered FD on real MNIST digits and on
    `digits` (experiments/real_mnist.py; the numbers are in docs/evaluation.md). cddpm
    (guided) and ldm keep eta 0 and the plain loss until measured."""

    min_snr_gamma: float = 5.0
    sample_eta: float = config_lib.sampling_field(1.0)


@registry.register_model("ddpm")
class DDPM(base.GenerativeModel):
    """Denoising diffusion probabilistic model with a U-Net denoiser and EMA sampling weights.

    Args:
        config: a `DiffusionConfig`.
        **kwargs: `image_shape`, `num_classes`, `seed`, as for `GenerativeModel`.
    """

    config_class = DDPMConfig
    loss_names = ("loss",)
    # x lives in [-1, 1] (pixels): the samplers clip each x_0 prediction and the result to it.
    # A latent diffusion model's x (`ldm`) has no such range.
    pixel_space = True

    def __init__(self, config: DiffusionConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        if self.conditional and not self.num_classes:
            raise UserError(f"{self.registered_name} needs a dataset with labels")
        if len(self.image_shape) != 3:
            raise UserError(f"{self.registered_name} needs images (height, width, channels), "
                            f"not examples of shape {self.image_shape}")
        self.alphas_cumprod = schedules.make_alphas_cumprod(config.schedule, config.timesteps)
        self.unet = self._build_network()
        self.ema = ema.WeightAverage(self.unet, decay=config.ema_decay)

    def diffusion_shape(self) -> tuple[int, ...]:
        """The shape of x, what is noised and denoised: the image's (an `ldm`: its latent's)."""
        return self.image_shape

    def _build_network(self) -> keras.Model:
        """The denoiser [x_t, t(, label)] -> prediction, a U-Net on `diffusion_shape`."""
        config = self.config
        return networks.unet(
            self.diffusion_shape(), config.widths, blocks_per_level=config.blocks_per_level,
            attention=config.attention, embedding_dim=config.embedding_dim,
            num_classes=self.num_classes if self.conditional else None,
            dropout=config.dropout)

    @classmethod
    def knobs(cls, config: DiffusionConfig, image_shape: Sequence[int]) -> base.Knobs:
        # Guidance other than 0 or 1 runs the network on a doubled batch (`_denoise_fn`).
        guided = cls.conditional and config.guidance not in (0.0, 1.0)
        # XLA samples 1.7x faster on an AVX2 CPU (DDIM-20, 64 samples), only 1.2-1.3x on an
        # AVX-512 one, where a new sample count's compile (seconds) eats that gain.
        return base.Knobs(sampling_cost=default_steps(config) * (2 if guided else 1),
                          xla_on_cpu=base.XLA_ON_AVX2, sampling_xla_on_cpu=base.XLA_ON_AVX2)

    @classmethod
    def tiny_config(cls) -> DiffusionConfig:
        # One level and no attention: a second level is 44% of a tiny U-Net's trace and step
        # time, attention 40% of the rest; one test (tests/test_diffusion.py) trains and
        # samples with both on.
        return cls.config_class(batch_size=8, epochs=1, steps_per_epoch=3, timesteps=50,
                                widths=(8,), attention=False, embedding_dim=16, sample_steps=3)

    def update_groups(self) -> list[base.UpdateGroup]:
        # The base class clips (`clip_norm`), so the clip is the same on any number of replicas.
        optimizer = optimizers.Adam(self.config.learning_rate)
        return [base.UpdateGroup("diffusion", self.unet.trainable_variables, optimizer,
                                 loss="loss", clip_norm=self.config.gradient_clip)]

    def after_update(self, group: str) -> None:
        self.ema.update()

    # -- objective -----------------------------------------------------------------------------

    def _network_inputs(self, x_t: tf.Tensor, t: tf.Tensor, labels: tf.Tensor | None
                        ) -> list[tf.Tensor]:
        inputs = [x_t, tf.cast(t, tf.float32)]
        if self.conditional:
            if labels is None:
                raise ValueError(f"{self.registered_name} needs labels")
            inputs.append(tf.cast(tf.reshape(labels, [-1]), tf.int32))
        return inputs

    def compute_losses(self, batch: dict[str, tf.Tensor], *, training: bool,
                       group: str | None = None) -> dict[str, tf.Tensor]:
        x_start = batch["image"]
        size = tf.shape(x_start)[0]
        seeds = tf.random.experimental.stateless_split(tf.cast(self.random_seed(), tf.int64), 3)
        # Per-example draws through `replica_share`: the same noise on any number of replicas.
        t = self.replica_share(lambda n: tf.random.stateless_uniform(
            [n], seeds[0], minval=0, maxval=self.config.timesteps, dtype=tf.int32), size)
        noise = self.replica_share(lambda n: tf.random.stateless_normal(
            tf.concat([[n], tf.shape(x_start)[1:]], 0), seeds[1]), size)
        alpha_bar = tf.gather(tf.constant(self.alphas_cumprod, tf.float32), t)
        x_t = schedules.q_sample(x_start, alpha_bar, noise)
        labels = batch.get("label")
        if self.conditional and training and self.config.label_dropout > 0:
            uniform = self.replica_share(lambda n: tf.random.stateless_uniform([n], seeds[2]),
                                         size)
            dropped = uniform < self.config.label_dropout
            labels = tf.where(dropped, self.num_classes, tf.cast(labels, tf.int32))
        output = tf.cast(self.unet(self._network_inputs(x_t, t, labels), training=training),
                         tf.float32)  # the loss in float32 under mixed precision
        if self.config.prediction == "epsilon":
            target = noise
        else:
            target = schedules.v_target(x_start, noise, alpha_bar)
        mse = tf.reduce_mean(tf.square(output - target), axis=[1, 2, 3])
        if self.config.min_snr_gamma > 0:
            mse *= schedules.min_snr_weight(alpha_bar, gamma=self.config.min_snr_gamma,
                                            prediction=self.config.prediction)
        return {"loss": tf.reduce_mean(mse)}

    # -- sampling ------------------------------------------------------------------------------

    def _denoise_fn(self, labels: tf.Tensor | None, guidance: tf.Tensor) -> samplers.DenoiseFn:
        """The EMA network as the samplers' (x_t, t) -> prediction, guided for `cddpm`.

        `guidance` is a float32 scalar tensor (a runtime input of the exported `sample`):
        exactly 1 is the conditional prediction alone, exactly 0 the null-label one, anything
        else one network call on the doubled batch, mixed by classifier-free guidance.
        """
        network = self.ema.averaged

        def predict(x, t, these_labels):
            return tf.cast(network(self._network_inputs(x, t, these_labels), training=False),
                           tf.float32)

        if labels is None:
            return lambda x, t: predict(x, t, None)
        null = self._null_condition(labels)

        def guided(x, t):
            # Conditional first, then null labels.
            both = predict(tf.concat([x, x], 0), tf.concat([t, t], 0),
                           tf.concat([labels, null], 0))
            conditional, unconditional = tf.split(both, 2)
            return samplers.classifier_free_guidance(unconditional, conditional, guidance)

        return lambda x, t: tf.case(
            [(tf.equal(guidance, 1.0), lambda: predict(x, t, labels)),
             (tf.equal(guidance, 0.0), lambda: predict(x, t, null))], default=lambda: guided(x, t))

    def _null_condition(self, labels: tf.Tensor) -> tf.Tensor:
        """The unconditional branch's conditioning for a batch's: the null class (an `ldm`
        with text: the null prompt)."""
        return tf.fill(tf.shape(labels), self.num_classes)

    def sampling_options(self) -> dict[str, base.SamplingOption]:
        config = self.config
        options = {
            "steps": base.SamplingOption(
                None, tf.int32, f"network evaluations (1..{config.timesteps}; default "
                "sample_steps for DDIM and DPM-Solver++, all T for DDPM)"),
            "eta": base.SamplingOption(config.sample_eta, doc="DDIM's eta (0: deterministic)"),
            "sampler": base.SamplingOption(
                config.sample_sampler, doc="ddim, ddpm (ancestral) or dpmpp_2m "
                "(DPM-Solver++(2M): second order, deterministic)"),
            "spacing": base.SamplingOption(config.sample_spacing, doc="timestep spacing"),
            "return_trajectory": base.SamplingOption(
                False, doc="also return x_t after every step, [steps + 1, N, H, W, C]"),
        }
        if self.conditional:
            options["guidance"] = base.SamplingOption(
                config.guidance, tf.float32, "classifier-free guidance scale (0: unconditional, "
                "1: conditional, above: guided)")
        return options

    def resolve_sampling_options(self, options: dict[str, Any]) -> dict[str, Any]:
        config = self.config
        if options["sampler"] not in samplers.SAMPLERS:
            raise ValueError(f"unknown sampler {options['sampler']!r}; "
                             f"choose one of {samplers.SAMPLERS}")
        if options["steps"] is None:
            options["steps"] = default_steps(config, options["sampler"])
        samplers.timesteps(config.timesteps, options["steps"], options["spacing"])  # ValueError
        options["eta"] = float(options["eta"])
        if self.conditional:
            options["guidance"] = float(options["guidance"])
        return options

    def x_start_bound(self) -> bool | float:
        """What the samplers clip each x_0 prediction to (`samplers`' `clip_denoised`): the
        pixels' [-1, 1] here."""
        return self.pixel_space

    def sample_tensors(self, num_samples: tf.Tensor, seed: tf.Tensor,
                       conditioning: dict[str, tf.Tensor], *, steps: tf.Tensor, eta: float,
                       sampler: str, spacing: str, return_trajectory: bool,
                       guidance: tf.Tensor | None = None) -> Any:
        """Samples clipped to [-1, 1] with the EMA weights; `steps` (int32) and `guidance`
        (float32) are runtime scalars, the other options static."""
        seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        noise = tf.random.stateless_normal(tf.stack([num_samples, *self.diffusion_shape()]),
                                           seed)
        denoise_fn = self._denoise_fn(conditioning.get("labels"),
                                      tf.constant(1.0) if guidance is None else guidance)
        step_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        options = dict(steps=steps, spacing=spacing, prediction=self.config.prediction,
                       return_trajectory=return_trajectory, clip_denoised=self.x_start_bound())
        result = samplers.sample(sampler, denoise_fn, noise, self.alphas_cumprod, eta=eta,
                                 seed=step_seed, **options)
        if not self.pixel_space:
            return result
        if return_trajectory:
            return tf.clip_by_value(result[0], -1.0, 1.0), result[1]
        return tf.clip_by_value(result, -1.0, 1.0)


@registry.register_model("cddpm")
class CDDPM(DDPM):
    """Class-conditional DDPM with classifier-free guidance (Ho & Salimans 2022).

    Run: `python -m aigc_zoo.run --model=cddpm`
    """

    conditional = True
    config_class = DiffusionConfig
