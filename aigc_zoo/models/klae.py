"""KL-regularised autoencoder with a spatial latent, `klae`: the first stage of latent diffusion
(Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", the
"KL-reg." autoencoder), at the zoo's scale.

An encoder maps an image to the mean and log-variance of a Gaussian over a *grid* of latents
(7x7x4 for 28x28 images: 196 numbers, a 4x compression of the pixels, with the image's layout
kept, so a U-Net can model it; the `vae`'s latent is a flat vector no U-Net can work on); a
decoder maps a latent grid back to the image. The loss is the pixels' squared error plus a
*small* weight (`kl_weight`) times the KL divergence to N(0, I) per latent element: enough to
keep the latents near unit scale and smooth, far too little to make the prior a good sampler,
which is the second stage's job. `generate` decodes latents drawn from N(0, I) all the same:
a check of the decoder, not a generator to compare.

Stable Diffusion's first stage adds a perceptual (LPIPS) loss and a patch discriminator for
sharp textures; at 28x28 the squared error alone gives the reconstructions of
`--mode=eval` (PSNR, SSIM), so neither is here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import export
from aigc_zoo import losses
from aigc_zoo import optimizers
from aigc_zoo import registry
from aigc_zoo.metrics import pixels
from aigc_zoo.models import base
from aigc_zoo.models import networks


@dataclasses.dataclass
class KLAEConfig(config_lib.TrainConfig):
    """Hyperparameters of the KL-regularised autoencoder.

    Run: `python -m aigc_zoo.run --model=klae`

    Args:
        filters: widths of the stride-2 convolutions (two: 28x28 images give a 7x7 latent grid).
        residual_blocks: residual blocks after the encoder's and before the decoder's
            convolutions.
        latent_channels: channels of the latent grid.
        kl_weight: weight of the KL term (mean over latent elements) next to the squared error
            (mean over pixels).
        learning_rate: Adam's step size.
        eval_examples: test examples used by `--mode=eval` (0: the whole split).
    """

    batch_size: int = 128
    epochs: int = 10
    filters: tuple[int, ...] = (32, 64)
    residual_blocks: int = 2
    latent_channels: int = 4
    kl_weight: float = 1e-3
    learning_rate: float = 1e-3
    eval_examples: int = config_lib.sampling_field(0)

    def validate(self) -> None:
        super().validate()
        config_lib.check_widths("filters", self.filters)
        config_lib.check_range("residual_blocks", self.residual_blocks, 0, float("inf"))
        config_lib.check_positive("latent_channels", self.latent_channels)
        config_lib.check_range("kl_weight", self.kl_weight, 0.0, float("inf"))
        config_lib.check_positive("learning_rate", self.learning_rate)
        config_lib.check_range("eval_examples", self.eval_examples, 0, float("inf"))


@registry.register_model("klae")
class KLAE(base.GenerativeModel):
    """KL-regularised autoencoder: convolutional encoder to a Gaussian latent grid, decoder.

    Args:
        config: a `KLAEConfig`.
        **kwargs: `image_shape`, `num_classes`, `seed`, as for `GenerativeModel`.
    """

    config_class = KLAEConfig
    loss_names = ("loss", "reconstruction", "kl")

    def __init__(self, config: KLAEConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        networks.check_downsampling(self.image_shape, len(config.filters))
        factor = 2 ** len(config.filters)
        self.latent_shape = (self.image_shape[0] // factor, self.image_shape[1] // factor,
                             config.latent_channels)
        # The encoder's 1x1 output holds the mean and the log-variance of every latent.
        self.encoder = networks.grid_encoder(self.image_shape, config.filters,
                                             2 * config.latent_channels,
                                             residual_blocks=config.residual_blocks)
        self.decoder = networks.grid_decoder(self.latent_shape, self.image_shape, config.filters,
                                             residual_blocks=config.residual_blocks)

    @classmethod
    def knobs(cls, config: KLAEConfig, image_shape: Sequence[int]) -> base.Knobs:
        return base.Knobs(encodes=True, evaluates=True)

    @classmethod
    def tiny_config(cls) -> KLAEConfig:
        return KLAEConfig(batch_size=16, epochs=1, steps_per_epoch=3, filters=(8, 16),
                          residual_blocks=1, latent_channels=2, eval_examples=64)

    def update_groups(self) -> list[base.UpdateGroup]:
        optimizer = optimizers.Adam(self.config.learning_rate)
        return [base.UpdateGroup("klae", self.trainable_variables, optimizer, loss="loss")]

    # -- latents -------------------------------------------------------------------------------

    def encode(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Mean and log-variance [batch, h, w, latent_channels] of q(z | images), in float32."""
        # float32 statistics whatever the compute dtype (mixed precision): the KL and the
        # variance's exponential need the range.
        mean, log_var = tf.split(tf.cast(self.encoder(images), tf.float32), 2, axis=-1)
        return mean, log_var

    def decode(self, z: tf.Tensor) -> tf.Tensor:
        """Images in [-1, 1] for latent grids z [batch, h, w, latent_channels]."""
        return tf.clip_by_value(tf.cast(self.decoder(z), tf.float32), -1.0, 1.0)

    def reconstruct(self, images: tf.Tensor) -> tf.Tensor:
        """Decode each image's posterior mean."""
        return self.decode(self.encode(images)[0])

    def sample_tensors(self, num_samples: tf.Tensor, seed: tf.Tensor,
                       conditioning: dict[str, tf.Tensor]) -> tf.Tensor:
        """Decoded latent grids drawn from N(0, I) (a check of the decoder; see the module)."""
        seed_pair = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        return self.decode(tf.random.stateless_normal([num_samples, *self.latent_shape],
                                                      seed=seed_pair))

    def serving_endpoints(self) -> dict[str, export.ServingEndpoint]:
        shape = "[batch, {}, {}, {}]".format(*self.latent_shape)

        def encode(images):
            mean, log_var = self.encode(images)
            return {"mean": mean, "log_var": log_var}

        def decode(latents):
            return {"images": self.decode(latents)}

        return {
            "encode": export.ServingEndpoint(
                encode, [tf.TensorSpec([None, *self.image_shape], tf.float32, name="images")],
                f"mean and log_var {shape} of q(z | images); images in [-1, 1]"),
            "decode": export.ServingEndpoint(
                decode, [tf.TensorSpec([None, *self.latent_shape], tf.float32, name="latents")],
                f"images in [-1, 1] for latents {shape}"),
        }

    # -- objective -----------------------------------------------------------------------------

    def compute_losses(self, batch: dict[str, tf.Tensor], *, training: bool,
                       group: str | None = None) -> dict[str, tf.Tensor]:
        images = tf.cast(batch["image"], tf.float32)
        mean, log_var = self.encode(batch["image"])
        seed = self.random_seed()
        epsilon = self.replica_share(lambda n: tf.random.stateless_normal(
            [n, *self.latent_shape], seed), tf.shape(mean)[0])
        z = mean + tf.exp(0.5 * log_var) * epsilon
        reconstruction = tf.reduce_mean(tf.square(tf.cast(self.decoder(z), tf.float32) - images))
        # gaussian_kl sums the last axis (the channels): divide to a mean per latent element.
        kl = tf.reduce_mean(losses.gaussian_kl(mean, log_var)) / self.config.latent_channels
        return {"loss": reconstruction + self.config.kl_weight * kl,
                "reconstruction": reconstruction, "kl": kl}

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate_model(self, dataset: tf.data.Dataset, *, seed: int = 0) -> dict[str, Any]:
        """Reconstruction MSE, PSNR and SSIM of the posterior means (images in [0, 1], means
        over images), the KL per latent element, and the latents' mean and standard deviation
        (what a second stage's latent scale factor corrects).

        Args:
            dataset: batches of `{"image", ...}` from the evaluation split, not repeated.
            seed: unused (the evaluation is deterministic); kept for the common signature.
        """
        limit = self.config.eval_examples or None

        @tf.function
        def evaluate_batch(images):
            mean, log_var = self.encode(images)
            scores = pixels.pixel_scores(self.decode(mean), images)
            kl = losses.gaussian_kl(mean, log_var) / self.config.latent_channels
            return (*scores, tf.reduce_mean(kl, axis=[1, 2]), tf.reduce_sum(mean, [1, 2, 3]),
                    tf.reduce_sum(tf.square(mean), [1, 2, 3]))

        sums = dict.fromkeys(("mse", "psnr", "ssim", "kl", "z", "z2"), 0.0)
        count = 0
        for _, images, _ in self.evaluation_batches(dataset, limit):
            for name, values in zip(sums, evaluate_batch(images)):
                sums[name] += float(tf.reduce_sum(values))
            count += int(images.shape[0])
        elements = count * self.latent_shape[0] * self.latent_shape[1] * self.latent_shape[2]
        latent_mean = sums["z"] / elements
        return {
            "reconstruction_mse": sums["mse"] / count,
            "reconstruction_psnr_db": sums["psnr"] / count,
            "reconstruction_ssim": sums["ssim"] / count,
            "kl_per_latent": sums["kl"] / count,
            "latent_mean": latent_mean,
            "latent_std": max(sums["z2"] / elements - latent_mean**2, 0.0) ** 0.5,
            "num_examples": count,
        }
