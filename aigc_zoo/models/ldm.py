"""Latent diffusion, `ldm` (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models"): the `ddpm`/`cddpm` recipe run on the latent grid of a trained first stage.

A trained autoencoder (named by `--set autoencoder=<its workdir>`: a `klae`, whose posterior
mean is the latent, or a `vqvae`, whose encoder outputs *before* quantisation are; the paper's
"KL-reg." and "VQ-reg." first stages) maps each 28x28 image to a 7x7 grid; the shared U-Net
(`networks.unet`, which runs on odd grids: 7, 4, 2) denoises that grid, the samplers
(`samplers.ddim_sample` / `ddpm_sample`) run in it without clipping x_0 (latents have no
[-1, 1] range), and the first stage decodes the result (a `vqvae` quantises it to its nearest
codes first, as the paper's VQ-reg. decoder does).

The latents are multiplied by a scale factor so the diffusion sees unit variance, as the paper
does: `latent_scale` 0 (the default) makes it 1 / std of the first training batch's latents
(over the global batch, computed in the first train step and kept in the `latent_scale`
variable, so checkpoints, `.keras` files and exports carry it); any other value is used as is.

`conditioning`: "none" (unconditional), "label" (class-conditional with classifier-free
guidance exactly as `cddpm`: `label_dropout` in training, `guidance` in sampling), or "text":
a `TextEncoder` (trained with the U-Net) maps a prompt's token ids to per-token features that
every U-Net residual block reads by cross-attention (`networks.CrossAttention`); in training a
share `label_dropout` of the prompts is replaced by the null prompt, and sampling guides
between the prompt and the null prompt. The token ids come from an `aigc_zoo.text.Tokenizer`
the runner builds on the training captions (and saves as `<workdir>/tokenizer.json`), whose
size and length it fills into the config (`text_vocabulary_size`, `text_max_length`; 0 until
then); `compute_losses` reads batch["tokens"] and `generate(n, tokens=...)` samples. On a
captioned dataset (`digits`, `shapes`, a folder with captions) the runner makes "text" the
default when `--set conditioning=` is not given (`request.py`); in-process the config's
value holds. `held_out_combinations` names caption phrases whose examples training never
sees (compositional generalisation, measured by the prompt-agreement evaluation).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import keras
import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import registry
from aigc_zoo.errors import UserError
from aigc_zoo.models import base, diffusion, networks, text_encoder, vqvae

CONDITIONINGS = ("none", "label", "text")


@dataclasses.dataclass
class LDMConfig(diffusion.DiffusionConfig):
    """Hyperparameters of latent diffusion: `DiffusionConfig`'s, on a first stage's latents.

    Run: `python -m aigc_zoo.run --model=ldm --set autoencoder=<a trained klae's workdir>`

    Args:
        autoencoder: the workdir of a trained `klae` or `vqvae` run (the first stage).
        conditioning: one of `CONDITIONINGS`.
        latent_scale: the latents' multiplier; 0: 1 / std of the first training batch's.
        sample_clip: the samplers clip each predicted (scaled) latent x_0 to [-c, c] (0: no
            clip), as pixel models clip theirs to [-1, 1]: at the first steps of the cosine
            schedule (alpha_bar 2.4e-9 at t = T - 1) an epsilon prediction's x_0 multiplies
            its error by 1 / sqrt(alpha_bar), and unclipped the default run's latents
            diverged (std 712 against 0.88; docs/text_to_image.md). 5: the scaled training
            latents' range (about +-5 on `digits`; their std is 1).
        text_vocabulary_size: conditioning "text": the tokenizer's vocabulary size (0: not
            known yet; the runner fills it in from the tokenizer it builds).
        text_max_length: conditioning "text": the tokenizer's `max_length` (tokens a prompt;
            0: the longest training caption's, filled in by the runner; a larger value
            allows longer prompts).
        held_out_combinations: conditioning "text": phrases (e.g. "red circle") whose
            training examples are dropped: a training caption holding one of them as a run
            of whole words, under the tokenizer's word rules (`text.holds_phrase`), is never
            trained on. Evaluation splits keep them.
        text_width: the text encoder's features per token.
        text_layers: the text encoder's transformer blocks.
        text_heads: the text encoder's attention heads.
        (the rest: see `DiffusionConfig`; `widths` are the U-Net's on the latent grid.)
    """

    autoencoder: str = config_lib.stage_field(("klae", "vqvae"))
    conditioning: str = "label"
    # 1,500 steps, so that the default klae and ldm train within 30 minutes on a 2-core CPU
    # (26 min on the AMD VM); 6 epochs gave FD 1.60 against 2.12, in 45 (docs/text_to_image.md).
    epochs: int = 3
    latent_scale: float = 0.0
    sample_clip: float = config_lib.sampling_field(5.0, added=True)
    widths: tuple[int, ...] = (64, 128)
    text_vocabulary_size: int = 0
    text_max_length: int = 0
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    held_out_combinations: tuple[str, ...] = config_lib.added_field(())

    def validate(self) -> None:
        super().validate()
        config_lib.check_choice("conditioning", self.conditioning, CONDITIONINGS)
        config_lib.check_range("latent_scale", self.latent_scale, 0.0, float("inf"))
        config_lib.check_range("sample_clip", self.sample_clip, 0.0, float("inf"))
        text_encoder.check_text_fields(self)
        if self.conditioning == "text":
            for name in ("text_width", "text_layers", "text_heads"):
                config_lib.check_positive(name, getattr(self, name))
            if self.text_width % self.text_heads:
                raise UserError(f"bad value text_width={self.text_width}: expected a multiple "
                                f"of text_heads={self.text_heads}")


def latent_scale_factor(latents: tf.Tensor, replica_sum: Any = None) -> tf.Tensor:
    """1 / the standard deviation of all elements of `latents` (Rombach et al.'s scale factor),
    float32; `replica_sum` (a `GenerativeModel.replica_sum`) makes it the global batch's."""
    latents = tf.cast(latents, tf.float32)
    moments = [tf.reduce_sum(latents), tf.reduce_sum(tf.square(latents)),
               tf.cast(tf.size(latents), tf.float32)]
    total, squares, count = replica_sum(moments) if replica_sum else moments
    mean = total / count
    variance = tf.maximum(squares / count - tf.square(mean), 0.0)
    return 1.0 / tf.maximum(tf.sqrt(variance), 1e-6)


@registry.register_model("ldm")
class LDM(diffusion.DDPM):
    """Latent diffusion: a U-Net denoiser on a frozen first stage's latent grid.

    Args:
        config: an `LDMConfig`.
        **kwargs: `image_shape`, `num_classes`, `seed`, `stages` (the `autoencoder`), as for
            `GenerativeModel`.
    """

    config_class = LDMConfig
    pixel_space = False

    def __init__(self, config: LDMConfig, **kwargs: Any):
        text_encoder.check_sizes_known(config, type(self).takes_text(config))
        # An instance attribute: whether labels condition is the config's choice here.
        self.conditional = config.conditioning == "label"
        super().__init__(config, **kwargs)
        self.latent_scale = keras.Variable(config.latent_scale, dtype="float32",
                                           trainable=False, name="latent_scale",
                                           aggregation="only_first_replica")

    @classmethod
    def knobs(cls, config: LDMConfig, image_shape: Sequence[int]) -> base.Knobs:
        guided = config.conditioning != "none" and config.guidance not in (0.0, 1.0)
        # Plus one decode by the first stage, about one U-Net pass (not counted). XLA for
        # sampling where it wins as for pixel diffusion (`DDPM.knobs`).
        return base.Knobs(sampling_cost=diffusion.default_steps(config) * (2 if guided else 1),
                          xla_on_cpu=base.XLA_ON_AVX2, sampling_xla_on_cpu=base.XLA_ON_AVX2)

    @classmethod
    def check_stages(cls, config: LDMConfig, image_shape: Sequence[int],
                     num_classes: int | None, stages: dict[str, dict[str, Any]]) -> None:
        shape = tuple(stages["autoencoder"]["image_shape"])
        if shape != tuple(image_shape):
            raise UserError(f"the autoencoder was trained on images of shape {shape}, this run's "
                            f"are {tuple(image_shape)}; train a klae on this data first")
        if config.conditioning == "label" and not num_classes:
            raise UserError("conditioning=label needs a dataset with labels; use "
                            "--set conditioning=none")

    @classmethod
    def tiny_config(cls) -> LDMConfig:
        # One U-Net level, as the tiny ddpm's; tests/test_ldm.py runs two on the 7x7 grid
        # (at 7 and 4, cropping back to 7). Unconditional: guidance's three-branch sampler (the
        # code cddpm's tests run) would double the harness's tracing; tests/test_ldm.py runs a
        # guided text model. Through the runner on a captioned dataset it is text-conditional
        # (request.py), with a text encoder as tiny as its U-Net.
        return LDMConfig(batch_size=8, epochs=1, steps_per_epoch=3, timesteps=50,
                         widths=(8,), attention=False, embedding_dim=16, sample_steps=3,
                         conditioning="none", text_width=8, text_layers=1, text_heads=2)

    # -- the first stage -----------------------------------------------------------------------

    @property
    def text(self) -> bool:
        return self.config.conditioning == "text"

    def _build_network(self) -> keras.Model:
        if not self.text:
            return super()._build_network()
        # One functional model [x_t, t, tokens] -> prediction holding the text encoder and the
        # U-Net, so the EMA, the optimizer and the checkpoints treat them as one network.
        config = self.config
        unet = networks.unet(
            self.diffusion_shape(), config.widths, blocks_per_level=config.blocks_per_level,
            attention=config.attention, embedding_dim=config.embedding_dim,
            dropout=config.dropout, context_dim=config.text_width)
        encoder = text_encoder.TextEncoder(
            config.text_vocabulary_size, config.text_max_length, width=config.text_width,
            layers=config.text_layers, heads=config.text_heads, name="text_encoder")
        x_t = keras.Input(self.diffusion_shape(), name="x_t")
        t = keras.Input((), name="t")
        tokens = keras.Input((config.text_max_length,), dtype="int32", name="tokens")
        features, mask = encoder(tokens)
        return keras.Model([x_t, t, tokens], unet([x_t, t, features, mask]), name="denoiser")

    def _network_inputs(self, x_t: tf.Tensor, t: tf.Tensor, labels: tf.Tensor | None
                        ) -> list[tf.Tensor]:
        if self.text:  # `labels` holds the token ids [batch, text_max_length]
            return [x_t, tf.cast(t, tf.float32), tf.cast(labels, tf.int32)]
        return super()._network_inputs(x_t, t, labels)

    def _null_condition(self, labels: tf.Tensor) -> tf.Tensor:
        if self.text:
            return text_encoder.null_prompts(tf.shape(labels)[0], self.config.text_max_length)
        return super()._null_condition(labels)

    def diffusion_shape(self) -> tuple[int, ...]:
        stage = self.autoencoder
        if isinstance(stage, vqvae.VQVAE):
            return (*stage.grid_shape, stage.config.code_dim)
        return tuple(stage.latent_shape)

    def latents(self, images: tf.Tensor) -> tf.Tensor:
        """The first stage's latents of images in [-1, 1], unscaled, float32."""
        stage = self.autoencoder
        if isinstance(stage, vqvae.VQVAE):
            return stage.encoder_outputs(images)
        return stage.encode(images)[0]  # the posterior mean

    def decode(self, latents: tf.Tensor) -> tf.Tensor:
        """Images in [-1, 1] of unscaled latents (a `vqvae` quantises them first)."""
        stage = self.autoencoder
        if isinstance(stage, vqvae.VQVAE):
            flat = tf.reshape(latents, [-1, stage.config.code_dim])
            codes = vqvae.nearest_codes(flat, tf.convert_to_tensor(stage.quantizer.codebook))
            return stage.decode(tf.reshape(codes, tf.shape(latents)[:3]))
        return stage.decode(latents)

    def x_start_bound(self) -> bool | float:
        return self.config.sample_clip

    def scale(self) -> tf.Tensor:
        """The latent scale factor in use (1 until the first train step has set it)."""
        value = tf.convert_to_tensor(self.latent_scale)
        return tf.where(value > 0, value, 1.0)

    # -- objective -----------------------------------------------------------------------------

    def compute_losses(self, batch: dict[str, tf.Tensor], *, training: bool,
                       group: str | None = None) -> dict[str, tf.Tensor]:
        latents = self.latents(batch["image"])
        if training:
            # Measured every step (three sums) and kept once set: under tf.distribute neither
            # an all-reduce nor an assignment may sit inside a cond in a replica.
            measured = latent_scale_factor(latents, self.replica_sum)
            self.latent_scale.assign(tf.where(self.latent_scale > 0, self.latent_scale,
                                              measured))
        batch = {**batch, "image": latents * self.scale()}
        if self.text:
            tokens = tf.cast(batch["tokens"], tf.int32)
            if training and self.config.label_dropout > 0:
                seed = tf.random.experimental.stateless_fold_in(
                    tf.cast(self.random_seed(), tf.int64), 7)
                uniform = self.replica_share(lambda n: tf.random.stateless_uniform([n], seed),
                                             tf.shape(tokens)[0])
                tokens = tf.where((uniform < self.config.label_dropout)[:, None],
                                  self._null_condition(tokens), tokens)
            # DDPM's objective passes "label" to `_network_inputs`: here the prompts.
            batch["label"] = tokens
        return super().compute_losses(batch, training=training, group=group)

    # -- sampling ------------------------------------------------------------------------------

    def sample_tensors(self, num_samples: tf.Tensor, seed: tf.Tensor,
                       conditioning: dict[str, tf.Tensor], **options: Any) -> Any:
        """Latents drawn by the diffusion samplers, unscaled and decoded by the first stage;
        with `return_trajectory`, the (scaled) latent trajectory comes second."""
        if self.text:
            conditioning = {"labels": conditioning["tokens"]}
        result = super().sample_tensors(num_samples, seed, conditioning, **options)
        if options["return_trajectory"]:
            return self.decode(result[0] / self.scale()), result[1]
        return self.decode(result / self.scale())

    def sampling_options(self) -> dict[str, base.SamplingOption]:
        options = super().sampling_options()
        if self.text:
            options["guidance"] = base.SamplingOption(
                self.config.guidance, tf.float32, "classifier-free guidance scale (0: the null "
                "prompt, 1: the prompt, above: guided)")
        return options

    def resolve_sampling_options(self, options: dict[str, Any]) -> dict[str, Any]:
        options = super().resolve_sampling_options(options)
        if self.text:
            options["guidance"] = float(options["guidance"])
        return options

    # -- text conditioning ---------------------------------------------------------------------

    def conditioning_specs(self) -> dict[str, tf.TensorSpec]:
        if self.text:
            return {"tokens": tf.TensorSpec([None, self.config.text_max_length], tf.int32,
                                            name="tokens")}
        return super().conditioning_specs()

    def check_conditioning(self, conditioning: dict[str, Any], num_samples: Any
                           ) -> dict[str, tf.Tensor]:
        if not self.text:
            return super().check_conditioning(conditioning, num_samples)
        return {"tokens": text_encoder.check_tokens(conditioning["tokens"], num_samples,
                                                    self.config.text_vocabulary_size)}
