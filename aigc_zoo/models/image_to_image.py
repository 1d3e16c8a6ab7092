"""Image-to-image models on the shared train step: `espcn` (regression) and `pix2pix` (GAN).

Both learn a paired task of `aigc_zoo.data.paired` (`--task=sr:4|sr:2|inpaint|edges`) from
`{"source", "image"}` batches; `aigc_zoo.models.translation` gives them `translate`, the
export's `translate` signature and `generate` (translations of reference sources).

- `espcn` (Shi et al. 2016, "Real-Time Single Image and Video Super-Resolution Using an
  Efficient Sub-Pixel Convolutional Neural Network"): convolutions at the low resolution, the
  last with C * F^2 channels, rearranged into an F-times larger image by the sub-pixel shuffle
  (`pixel_shuffle`); L1 or L2 regression. On same-size tasks (`inpaint`, `edges`) the same
  network without the shuffle: the regression baseline the GANs are measured against.
- `pix2pix` (Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial
  Networks"): a U-Net generator (`networks.unet` without timestep) on the source at the
  image's size, a PatchGAN discriminator scoring 4x4-strided patches of (source, image) pairs,
  the non-saturating conditional GAN loss plus 100 x L1. Two update groups, discriminator then
  generator, as the GANs of `models.gan` (whose losses it uses). Deviations from the paper:
  the generator is the zoo's residual U-Net with group norm and no dropout noise (the paper
  found its noise mostly ignored), and the discriminator has no batch norm.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import registry
from aigc_zoo.errors import UserError
from aigc_zoo.models import base, gan, networks, translation


def pixel_shuffle(x: tf.Tensor, factor: int) -> tf.Tensor:
    """[B, h, w, C * F^2] -> [B, h * F, w * F, C]: channel c * ... of pixel (i, j) goes to
    sub-pixel (i * F + a, j * F + b) with channel index (a * F + b) * C + c (depth_to_space)."""
    return tf.nn.depth_to_space(x, factor)


@keras.saving.register_keras_serializable(package="aigc_zoo")
class PixelShuffle(keras.layers.Layer):
    """`pixel_shuffle` as a layer (the sub-pixel convolution's rearrangement)."""

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x):
        return pixel_shuffle(x, self.factor)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        f = self.factor
        return (batch, height and height * f, width and width * f, channels // (f * f))

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def espcn_network(source_shape, channels: int, factor: int, filters, name: str = "espcn"
                  ) -> keras.Model:
    """5x5 then 3x3 tanh convolutions at the source's size, a 3x3 convolution to
    `channels * factor^2`, the shuffle (factor > 1), tanh: images in [-1, 1]."""
    inputs = keras.Input(tuple(source_shape), name="source")
    h = keras.layers.Conv2D(filters[0], 5, padding="same", activation="tanh")(inputs)
    for width in filters[1:]:
        h = keras.layers.Conv2D(width, 3, padding="same", activation="tanh")(h)
    h = keras.layers.Conv2D(channels * factor * factor, 3, padding="same")(h)
    if factor > 1:
        h = PixelShuffle(factor)(h)
    outputs = keras.layers.Activation("tanh", dtype="float32")(h)
    return keras.Model(inputs, outputs, name=name)


@dataclasses.dataclass
class ESPCNConfig(translation.TranslationConfig):
    """Hyperparameters of `espcn`.

    Run: `python -m aigc_zoo.run --model=espcn --task=sr:4`

    Args:
        filters: widths of the hidden convolutions (the paper's 64, 32).
        loss: `l1` or `l2` (the paper's mean squared error).
        learning_rate: Adam's step size.
    """

    batch_size: int = 64
    epochs: int = 5
    steps_per_epoch: int = 500
    filters: tuple[int, ...] = (64, 32)
    loss: str = "l2"
    learning_rate: float = 1e-3

    def validate(self) -> None:
        super().validate()
        config_lib.check_choice("loss", self.loss, ("l1", "l2"))
        config_lib.check_positive("learning_rate", self.learning_rate)
        if not self.filters or min(self.filters) < 1:
            raise UserError(f"bad value filters={self.filters!r}: expected one or more "
                            "positive integers, e.g. 64,32")


@registry.register_model("espcn")
class ESPCN(translation.TranslationModel):
    """Sub-pixel convolution regression from a paired task's sources to its images.

    Args:
        config: an `ESPCNConfig`.
        **kwargs: `image_shape`, `num_classes`, `seed`, as for `GenerativeModel`.
    """

    config_class = ESPCNConfig
    loss_names = ("loss", "l1", "mse")

    def __init__(self, config: ESPCNConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.network = espcn_network(self.source_shape, self.image_shape[-1], self.task.factor,
                                     config.filters)

    @classmethod
    def tiny_config(cls) -> ESPCNConfig:
        return ESPCNConfig(batch_size=8, epochs=1, steps_per_epoch=3, filters=(8, 8))

    def update_groups(self) -> list[base.UpdateGroup]:
        return [base.UpdateGroup("espcn", self.network.trainable_variables,
                                 translation.optimizer(self.config.learning_rate), loss="loss")]

    def translate_tensors(self, sources: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.network(sources, training=False), tf.float32)

    def compute_losses(self, batch: dict[str, tf.Tensor], *, training: bool,
                       group: str | None = None) -> dict[str, tf.Tensor]:
        if training:
            self.remember_sources(batch["source"])
        images = tf.cast(batch["image"], tf.float32)
        outputs = tf.cast(self.network(batch["source"], training=training), tf.float32)
        l1 = self.l1(images, outputs)
        mse = tf.reduce_mean(tf.square(images - outputs))
        return {"loss": l1 if self.config.loss == "l1" else mse, "l1": l1, "mse": mse}


def patch_discriminator(source_shape, image_shape, filters, name: str = "discriminator"
                        ) -> keras.Model:
    """PatchGAN: [source at the image's size, image] -> a logit per patch, [B, h, w]; with
    `source_shape` None, unconditional: image -> logits (cyclegan's).

    4x4 stride-2 convolutions with leaky ReLU (one per width of `filters`), then a 4x4 stride-1
    convolution to one channel: each logit judges the patch its receptive field covers.
    """
    networks.check_downsampling(image_shape, len(filters))
    image = keras.Input(tuple(image_shape), name="image")
    if source_shape is None:
        inputs, h = image, image
    else:
        source = keras.Input(tuple(source_shape), name="source")
        inputs, h = [source, image], keras.layers.Concatenate()([source, image])
    for width in filters:
        h = keras.layers.Conv2D(width, 4, strides=2, padding="same")(h)
        h = keras.layers.LeakyReLU(0.2)(h)
    h = keras.layers.Conv2D(1, 4, padding="same", dtype="float32")(h)
    return keras.Model(inputs, keras.layers.Reshape(h.shape[1:3])(h), name=name)


@dataclasses.dataclass
class Pix2PixConfig(translation.TranslationConfig):
    """Hyperparameters of `pix2pix`.

    Run: `python -m aigc_zoo.run --model=pix2pix --task=edges`

    Args:
        widths: the U-Net generator's channels per resolution.
        blocks_per_level: its residual blocks per level.
        discriminator_filters: the PatchGAN's stride-2 widths.
        l1_weight: weight of the L1 term in the generator's loss (the paper's 100).
        loss: a GAN loss of `models.gan.LOSSES` (the paper's non-saturating one) except
            `wasserstein`, which needs a gradient penalty or clipping pix2pix does not have.
        learning_rate / beta_1: Adam, for both networks (the paper's 2e-4 and 0.5).
    """

    task: str = "edges"
    batch_size: int = 32
    epochs: int = 10
    steps_per_epoch: int = 500
    widths: tuple[int, ...] = (32, 64, 64)
    blocks_per_level: int = 1
    discriminator_filters: tuple[int, ...] = (64, 128)
    l1_weight: float = 100.0
    loss: str = "non_saturating"
    learning_rate: float = 2e-4
    beta_1: float = 0.5

    def validate(self) -> None:
        super().validate()
        config_lib.check_range("l1_weight", self.l1_weight, 0.0, float("inf"))
        config_lib.check_choice("loss", self.loss, gan.LOSSES)
        if self.loss == "wasserstein":  # its critic needs a Lipschitz bound pix2pix lacks
            raise UserError("bad value loss='wasserstein': pix2pix has no gradient penalty or "
                            "weight clipping for a Wasserstein critic; use "
                            f"{', '.join(name for name in gan.LOSSES if name != 'wasserstein')}")
        config_lib.check_positive("learning_rate", self.learning_rate)
        config_lib.check_range("beta_1", self.beta_1, 0.0, 0.999999)
        config_lib.check_positive("blocks_per_level", self.blocks_per_level)
        for name in ("widths", "discriminator_filters"):
            config_lib.check_widths(name, getattr(self, name))


@registry.register_model("pix2pix")
class Pix2Pix(translation.TranslationModel):
    """Conditional GAN with a U-Net generator and a PatchGAN discriminator, plus L1.

    Args:
        config: a `Pix2PixConfig`.
        **kwargs: `image_shape`, `num_classes`, `seed`, as for `GenerativeModel`.
    """

    config_class = Pix2PixConfig
    loss_names = ("d_loss", "g_loss", "l1", "g_gan", "d_real", "d_fake")

    def __init__(self, config: Pix2PixConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        # The source at the image's size: SR sources are upsampled (bicubic) first.
        wide_source = (*self.image_shape[:2], self.source_shape[-1])
        self.generator = networks.unet(
            wide_source, config.widths, blocks_per_level=config.blocks_per_level,
            attention=False, timestep=False, output_channels=self.image_shape[-1],
            name="generator")
        self.discriminator = patch_discriminator(wide_source, self.image_shape,
                                                 config.discriminator_filters)
        self._d_loss, self._g_loss = gan.LOSSES[config.loss]

    @classmethod
    def tiny_config(cls) -> Pix2PixConfig:
        # One U-Net level: the GroupNorm residual blocks dominate the harness's trace time.
        return Pix2PixConfig(batch_size=8, epochs=1, steps_per_epoch=3, widths=(8,),
                             discriminator_filters=(8,))

    def update_groups(self) -> list[base.UpdateGroup]:
        config = self.config
        return [
            base.UpdateGroup("discriminator", self.discriminator.trainable_variables,
                             translation.optimizer(config.learning_rate, config.beta_1),
                             loss="d_loss"),
            base.UpdateGroup("generator", self.generator.trainable_variables,
                             translation.optimizer(config.learning_rate, config.beta_1),
                             loss="g_loss"),
        ]

    def _translate(self, wide_sources: tf.Tensor, training: bool) -> tf.Tensor:
        return tf.tanh(tf.cast(self.generator(wide_sources, training=training), tf.float32))

    def translate_tensors(self, sources: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return self._translate(self.source_at_image_size(sources), training=False)

    def compute_losses(self, batch: dict[str, tf.Tensor], *, training: bool,
                       group: str | None = None) -> dict[str, tf.Tensor]:
        if training and group == "discriminator":
            self.remember_sources(batch["source"])
        sources = self.source_at_image_size(tf.cast(batch["source"], tf.float32))
        images = tf.cast(batch["image"], tf.float32)
        fake = self._translate(sources, training)
        results: dict[str, tf.Tensor] = {}
        if group in (None, "discriminator"):
            real_logits = self.discriminator([sources, images], training=training)
            fake_logits = self.discriminator([sources, tf.stop_gradient(fake)],
                                             training=training)
            results.update(d_loss=self._d_loss(real_logits, fake_logits),
                           d_real=tf.reduce_mean(real_logits),
                           d_fake=tf.reduce_mean(fake_logits))
        if group in (None, "generator"):
            g_gan = self._g_loss(self.discriminator([sources, fake], training=False))
            l1 = self.l1(images, fake)
            results.update(g_loss=g_gan + self.config.l1_weight * l1, g_gan=g_gan, l1=l1)
        return results
