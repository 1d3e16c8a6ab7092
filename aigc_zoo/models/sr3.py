"""`sr3`: image-to-image diffusion (Saharia et al. 2021, "Image Super-Resolution via Iterative
Refinement"), on the zoo's diffusion pieces.

The denoiser is the diffusion U-Net (`networks.unet`) whose input is the noisy image x_t
concatenated along the channels with the task's source at the image's size (for SR the
bicubic-upsampled low-resolution image, as in the paper; for `inpaint` the masked image and
its mask; for `edges` the edge map), and whose output is the noise of x_t alone. Training is
DDPM's epsilon regression (`schedules.q_sample`, a uniform t); `translate` runs `ddpm`'s
samplers (`samplers.sample`: DDIM by default, `sample_steps` network evaluations, a sampling
field, so quality against steps can be measured with `--mode=eval --set sample_steps=N`;
`sample_sampler` chooses DPM-Solver++(2M) or ancestral DDPM instead) from the EMA weights.
Deviations from the paper: the zoo's discrete cosine schedule and timestep embedding instead
of the paper's continuous noise-level conditioning, and DDIM rather than ancestral steps by
default (`sample_eta=1` gives DDPM-like stochastic steps on DDIM's chain).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import optimizers
from aigc_zoo import registry, samplers, schedules
from aigc_zoo.models import base, diffusion, ema, networks, translation


@dataclasses.dataclass
class SR3Config(translation.TranslationConfig):
    """Hyperparameters of `sr3` (the diffusion fields mean what they mean for `ddpm`).

    Run: `python -m aigc_zoo.run --model=sr3 --task=sr:4`

    Args:
        timesteps / schedule: T and the noise schedule (`schedules.SCHEDULES`).
        widths / blocks_per_level / attention / embedding_dim: the U-Net.
        learning_rate / gradient_clip / ema_decay: training, as for `ddpm`.
        sample_steps: DDIM and DPM-Solver++ steps of `translate` (a sampling field).
        sample_eta: DDIM's eta (0: deterministic given the seed's starting noise).
        sample_sampler: `translate`'s sampler, as `ddpm`'s: "ddim", "ddpm" (ancestral over
            all `timesteps`) or "dpmpp_2m" (DPM-Solver++(2M), `sample_steps`).
    """

    batch_size: int = 64
    epochs: int = 6
    steps_per_epoch: int = 500
    timesteps: int = 1000
    schedule: str = "cosine"
    widths: tuple[int, ...] = (32, 64, 64)
    blocks_per_level: int = 1
    attention: bool = False
    embedding_dim: int = 64
    learning_rate: float = 1e-3
    gradient_clip: float = 1.0
    ema_decay: float = 0.995
    sample_steps: int = config_lib.sampling_field(20)
    sample_eta: float = config_lib.sampling_field(0.0)
    sample_sampler: str = config_lib.sampling_field("ddim", added=True)

    def validate(self) -> None:
        super().validate()
        config_lib.check_positive("timesteps", self.timesteps)
        config_lib.check_choice("schedule", self.schedule, schedules.SCHEDULES)
        config_lib.check_positive("learning_rate", self.learning_rate)
        config_lib.check_range("gradient_clip", self.gradient_clip, 0.0, float("inf"))
        config_lib.check_range("ema_decay", self.ema_decay, 0.0, 0.999999)
        config_lib.check_range("sample_steps", self.sample_steps, 1, self.timesteps)
        config_lib.check_range("sample_eta", self.sample_eta, 0.0, 1.0)
        config_lib.check_choice("sample_sampler", self.sample_sampler, samplers.SAMPLERS)


@registry.register_model("sr3")
class SR3(translation.TranslationModel):
    """A conditional diffusion model: noise + source (channel concatenation) -> noise.

    Args:
        config: an `SR3Config`.
        **kwargs: `image_shape`, `num_classes`, `seed`, as for `GenerativeModel`.
    """

    config_class = SR3Config
    loss_names = ("loss",)

    def __init__(self, config: SR3Config, **kwargs: Any):
        super().__init__(config, **kwargs)
        height, width, channels = self.image_shape
        self.alphas_cumprod = schedules.make_alphas_cumprod(config.schedule, config.timesteps)
        self.unet = networks.unet(
            (height, width, channels + self.source_shape[-1]), config.widths,
            blocks_per_level=config.blocks_per_level, attention=config.attention,
            embedding_dim=config.embedding_dim, output_channels=channels)
        self.ema = ema.WeightAverage(self.unet, decay=config.ema_decay)

    @classmethod
    def knobs(cls, config: SR3Config, image_shape: Sequence[int]) -> base.Knobs:
        return base.Knobs(task=config.task, sampling_cost=diffusion.default_steps(config))

    @classmethod
    def tiny_config(cls) -> SR3Config:
        return SR3Config(batch_size=8, epochs=1, steps_per_epoch=3, timesteps=20, widths=(8,),
                         embedding_dim=8, sample_steps=2)

    def update_groups(self) -> list[base.UpdateGroup]:
        return [base.UpdateGroup("sr3", self.unet.trainable_variables,
                                 optimizers.Adam(self.config.learning_rate), loss="loss",
                                 clip_norm=self.config.gradient_clip)]

    def after_update(self, group: str) -> None:
        self.ema.update()

    def compute_losses(self, batch: dict[str, tf.Tensor], *, training: bool,
                       group: str | None = None) -> dict[str, tf.Tensor]:
        if training:
            self.remember_sources(batch["source"])
        x_start = tf.cast(batch["image"], tf.float32)
        condition = self.source_at_image_size(tf.cast(batch["source"], tf.float32))
        size = tf.shape(x_start)[0]
        seeds = tf.random.experimental.stateless_split(tf.cast(self.random_seed(), tf.int64), 2)
        t = self.replica_share(lambda n: tf.random.stateless_uniform(
            [n], seeds[0], minval=0, maxval=self.config.timesteps, dtype=tf.int32), size)
        noise = self.replica_share(lambda n: tf.random.stateless_normal(
            tf.concat([[n], tf.shape(x_start)[1:]], 0), seeds[1]), size)
        alpha_bar = tf.gather(tf.constant(self.alphas_cumprod, tf.float32), t)
        x_t = schedules.q_sample(x_start, alpha_bar, noise)
        output = self.unet([tf.concat([x_t, condition], -1), tf.cast(t, tf.float32)],
                           training=training)
        return {"loss": tf.reduce_mean(tf.square(tf.cast(output, tf.float32) - noise))}

    def translate_tensors(self, sources: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """The config's sampler from the seed's noise, the EMA U-Net seeing the source at
        every step."""
        condition = self.source_at_image_size(sources)
        network = self.ema.averaged
        seed_pair = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        noise = tf.random.stateless_normal(
            tf.concat([tf.shape(sources)[:1], self.image_shape], 0), seed_pair)

        def denoise(x, t):
            return tf.cast(network([tf.concat([x, condition], -1), tf.cast(t, tf.float32)],
                                   training=False), tf.float32)

        sampler = self.config.sample_sampler
        result = samplers.sample(
            sampler, denoise, noise, self.alphas_cumprod,
            steps=diffusion.default_steps(self.config, sampler), eta=self.config.sample_eta,
            seed=tf.random.experimental.stateless_fold_in(seed_pair, 1))
        return tf.clip_by_value(result, -1.0, 1.0)
