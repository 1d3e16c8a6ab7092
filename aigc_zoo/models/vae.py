"""Variational autoencoders: `vae` (Kingma & Welling 2014) and the label-conditioned `cvae`.

Encoder q(z | x) is a diagonal Gaussian; the prior p(z) is N(0, I); the decoder's likelihood
p(x | z) is chosen by `likelihood`:

- `bernoulli`: pixels are binarised (a fresh draw each time a batch is seen, the usual
  "dynamically binarised MNIST"), so the NLL in nats is comparable to published numbers;
- `logistic`: a discretised logistic over the 256 grey levels (Salimans et al. 2017);
- `gaussian`: a continuous Gaussian density with a learned per-pixel scale (`--mode=eval`
  reports the NLL of the 8-bit image: the density times the bin width).

The training objective is reconstruction + beta * KL, with beta ramped linearly from 0 over
`kl_warmup_steps`; the reported `loss` is always the negative ELBO (beta = 1), in nats per image.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import export, losses
from aigc_zoo import optimizers
from aigc_zoo import registry
from aigc_zoo.errors import UserError
from aigc_zoo.models import base
from aigc_zoo.models import networks

LIKELIHOODS = ("bernoulli", "logistic", "gaussian")
_MIN_LOG_SCALE = -7.0  # keeps logistic/Gaussian scales from collapsing onto a grey level
_LOG_HALF_LEVELS = math.log(255 / 2)  # -log of an 8-bit bin's width in [-1, 1]


@dataclasses.dataclass
class VAEConfig(config_lib.TrainConfig):
    """Hyperparameters of the convolutional VAE.

    Run: `python -m aigc_zoo.run --model=vae` (about 4 minutes on a 2-core CPU).

    Args:
        latent_dim: dimensions of z.
        filters: widths of the encoder's stride-2 convolutions (the decoder mirrors them).
        likelihood: one of `LIKELIHOODS`.
        beta: weight of the KL term in the objective (1 gives the ELBO; Higgins et al. 2017).
        kl_warmup_steps: steps over which beta ramps up from 0 (0: no warm-up).
        learning_rate: Adam's step size.
        eval_importance_samples: k of the importance-weighted NLL estimate in `--mode=eval`.
        eval_examples: test examples used by `--mode=eval` (0: the whole split).
    """

    batch_size: int = 128
    epochs: int = 8
    latent_dim: int = 8
    filters: tuple[int, ...] = (32, 64)
    likelihood: str = "bernoulli"
    beta: float = 1.0
    kl_warmup_steps: int = 0
    learning_rate: float = 1e-3
    eval_importance_samples: int = config_lib.sampling_field(100)
    eval_examples: int = config_lib.sampling_field(0)

    def network_batches(self) -> dict[str, int]:
        # `--mode=eval` decodes k posterior samples of each of 100 images at once
        # (`trained.evaluate`'s batch, `log_likelihood_bounds`).
        return {**super().network_batches(),
                "eval_importance_samples": 100 * self.eval_importance_samples}

    def validate(self) -> None:
        super().validate()
        config_lib.check_positive("latent_dim", self.latent_dim)
        config_lib.check_choice("likelihood", self.likelihood, LIKELIHOODS)
        config_lib.check_range("beta", self.beta, 0.0, float("inf"))
        config_lib.check_range("kl_warmup_steps", self.kl_warmup_steps, 0, float("inf"))
        config_lib.check_positive("learning_rate", self.learning_rate)
        config_lib.check_positive("eval_importance_samples", self.eval_importance_samples)
        config_lib.check_range("eval_examples", self.eval_examples, 0, float("inf"))
        config_lib.check_widths("filters", self.filters)


@registry.register_model("vae")
class VAE(base.GenerativeModel):
    """Convolutional VAE with a diagonal Gaussian posterior.

    Args:
        config: a `VAEConfig`.
        **kwargs: `image_shape`, `num_classes`, `seed`, as for `GenerativeModel`.
    """

    config_class = VAEConfig
    loss_names = ("loss", "reconstruction", "kl")

    def __init__(self, config: VAEConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        if self.conditional and not self.num_classes:
            raise UserError(f"{self.registered_name} needs a dataset with labels")
        channels = self.image_shape[-1]
        label_dims = self.num_classes if self.conditional else 0
        decoder_channels = channels if config.likelihood == "bernoulli" else 2 * channels
        self.encoder = networks.conv_encoder(self.image_shape, config.filters,
                                             2 * config.latent_dim, extra_channels=label_dims)
        self.decoder = networks.conv_decoder(config.latent_dim + label_dims, self.image_shape,
                                             config.filters, decoder_channels)

    @classmethod
    def knobs(cls, config: VAEConfig, image_shape: Sequence[int]) -> base.Knobs:
        # 4 steps per call measured faster than 1 on a CPU (make benchmark).
        return base.Knobs(steps_per_execution=4, encodes=True, evaluates=True)

    @classmethod
    def tiny_config(cls) -> VAEConfig:
        return VAEConfig(batch_size=16, epochs=1, steps_per_epoch=3, latent_dim=4,
                         filters=(8, 16), eval_importance_samples=4, eval_examples=64)

    def update_groups(self) -> list[base.UpdateGroup]:
        optimizer = optimizers.Adam(self.config.learning_rate)
        return [base.UpdateGroup("vae", self.trainable_variables, optimizer, loss="objective")]

    # -- encoder and decoder -------------------------------------------------------------------

    def _one_hot(self, labels: tf.Tensor | None, batch_size: tf.Tensor) -> tf.Tensor | None:
        if not self.conditional:
            return None
        if labels is None:
            raise ValueError(f"{self.registered_name} needs labels")
        return tf.one_hot(tf.reshape(labels, [batch_size]), self.num_classes)

    def encode(self, images: tf.Tensor, labels: tf.Tensor | None = None
               ) -> tuple[tf.Tensor, tf.Tensor]:
        """Mean and log-variance of q(z | images)."""
        one_hot = self._one_hot(labels, tf.shape(images)[0])
        if one_hot is not None:
            height, width = self.image_shape[:2]
            label_maps = tf.tile(one_hot[:, None, None, :], [1, height, width, 1])
            images = tf.concat([images, label_maps], axis=-1)
        # float32 statistics whatever the compute dtype (mixed precision): the KL and the
        # reparameterisation are computed in float32.
        mean, log_var = tf.split(tf.cast(self.encoder(images), tf.float32), 2, axis=-1)
        return mean, log_var

    def _decoder_output(self, z: tf.Tensor, labels: tf.Tensor | None) -> tf.Tensor:
        one_hot = self._one_hot(labels, tf.shape(z)[0])
        output = self.decoder(z if one_hot is None else tf.concat([z, one_hot], axis=-1))
        return tf.cast(output, tf.float32)  # likelihoods in float32 under mixed precision

    def decode(self, z: tf.Tensor, labels: tf.Tensor | None = None) -> tf.Tensor:
        """The decoder's mean image for latents `z`, in [-1, 1]."""
        output = self._decoder_output(z, labels)
        if self.config.likelihood == "bernoulli":
            return 2.0 * tf.sigmoid(output) - 1.0
        mean, _ = tf.split(output, 2, axis=-1)
        return tf.clip_by_value(mean, -1.0, 1.0)

    def reconstruct(self, images: tf.Tensor, labels: tf.Tensor | None = None) -> tf.Tensor:
        """Decode the posterior mean of each image."""
        mean, _ = self.encode(images, labels)
        return self.decode(mean, labels)

    def sample_tensors(self, num_samples: tf.Tensor, seed: tf.Tensor,
                       conditioning: dict[str, tf.Tensor]) -> tf.Tensor:
        """Decoded prior samples; `cvae` decodes them with its `labels`."""
        seed_pair = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        z = tf.random.stateless_normal([num_samples, self.config.latent_dim], seed=seed_pair)
        return self.decode(z, conditioning.get("labels"))

    def serving_endpoints(self) -> dict[str, export.ServingEndpoint]:
        label_inputs = ([tf.TensorSpec([None], tf.int32, name="labels")] if self.conditional
                        else [])
        label_doc = "; labels [batch]" if self.conditional else ""

        def encode(images, labels=None):
            mean, log_var = self.encode(images, labels)
            return {"mean": mean, "log_var": log_var}

        def decode(latents, labels=None):
            return {"images": self.decode(latents, labels)}

        endpoints = {}
        endpoints["encode"] = export.ServingEndpoint(
            encode, [tf.TensorSpec([None, *self.image_shape], tf.float32, name="images"),
                     *label_inputs],
            "mean and log_var [batch, latent_dim] of q(z | images); images in [-1, 1]"
            + label_doc)
        endpoints["decode"] = export.ServingEndpoint(
            decode, [tf.TensorSpec([None, self.config.latent_dim], tf.float32, name="latents"),
                     *label_inputs],
            "the decoder's mean images in [-1, 1] for latents [batch, latent_dim]" + label_doc)
        return endpoints

    # -- objective -----------------------------------------------------------------------------

    def _observation(self, images: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        """What the likelihood models: binarised pixels in {0, 1}, or the [-1, 1] image."""
        if self.config.likelihood != "bernoulli":
            return images
        return tf.cast(self.binarize(images, seed), images.dtype)

    def _encoder_input(self, observation: tf.Tensor) -> tf.Tensor:
        return 2.0 * observation - 1.0 if self.config.likelihood == "bernoulli" else observation

    def _log_likelihood(self, observation: tf.Tensor, output: tf.Tensor) -> tf.Tensor:
        if self.config.likelihood == "bernoulli":
            return losses.bernoulli_log_likelihood(observation, output)
        mean, log_scale = tf.split(output, 2, axis=-1)
        log_scale = tf.maximum(log_scale, _MIN_LOG_SCALE)
        if self.config.likelihood == "logistic":
            return losses.discretized_logistic_log_likelihood(observation, mean, log_scale)
        return losses.gaussian_log_likelihood(observation, mean, log_scale)

    def _beta(self) -> tf.Tensor:
        if self.config.kl_warmup_steps <= 0:
            return tf.constant(self.config.beta, tf.float32)
        progress = tf.cast(self.global_step + 1, tf.float32) / self.config.kl_warmup_steps
        return self.config.beta * tf.minimum(progress, 1.0)

    def compute_losses(self, batch: dict[str, tf.Tensor], *, training: bool,
                       group: str | None = None) -> dict[str, tf.Tensor]:
        labels = batch.get("label")
        observation = self._observation(batch["image"])
        mean, log_var = self.encode(self._encoder_input(observation), labels)
        seed = self.random_seed()
        epsilon = self.replica_share(lambda n: tf.random.stateless_normal(
            [n, self.config.latent_dim], seed), tf.shape(mean)[0])
        z = mean + tf.exp(0.5 * log_var) * epsilon
        output = self._decoder_output(z, labels)
        reconstruction = -tf.reduce_mean(self._log_likelihood(observation, output))
        kl = tf.reduce_mean(losses.gaussian_kl(mean, log_var))
        return {"objective": reconstruction + self._beta() * kl, "loss": reconstruction + kl,
                "reconstruction": reconstruction, "kl": kl}

    # -- evaluation ----------------------------------------------------------------------------

    def log_likelihood_bounds(self, images: tf.Tensor, labels: tf.Tensor | None = None, *,
                              num_samples: int, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """Per-example ELBO and importance-weighted bound (k = `num_samples`) on log p(x).

        Args:
            images: [batch, H, W, C] in [-1, 1].
            labels: [batch] ints, for `cvae`.
            num_samples: k, the number of posterior samples per image.
            seed: a stateless seed [2] (binarisation and posterior samples derive from it).
        Returns:
            `elbo` and `iw_bound`, each [batch], in nats.
        """
        seeds = tf.random.experimental.stateless_split(seed, 2)
        observation = self._observation(images, seeds[0])
        mean, log_var = self.encode(self._encoder_input(observation), labels)
        batch = tf.shape(mean)[0]
        epsilon = tf.random.stateless_normal([num_samples, batch, self.config.latent_dim], seeds[1])
        z = mean + tf.exp(0.5 * log_var) * epsilon  # [k, batch, latent]
        tiled_labels = None if labels is None else tf.tile(labels, [num_samples])
        output = self._decoder_output(tf.reshape(z, [-1, self.config.latent_dim]), tiled_labels)
        tiled = tf.tile(observation, [num_samples, 1, 1, 1])
        log_px_z = tf.reshape(self._log_likelihood(tiled, output), [num_samples, batch])
        zeros = tf.zeros_like(mean)
        log_prior = losses.log_normal(z, zeros, zeros)
        log_weights = log_px_z + log_prior - losses.log_normal(z, mean, log_var)
        elbo = tf.reduce_mean(log_px_z, axis=0) - losses.gaussian_kl(mean, log_var)
        return {"elbo": elbo, "iw_bound": losses.importance_weighted_bound(log_weights)}

    def evaluate_model(self, dataset: tf.data.Dataset, *, seed: int = 0) -> dict[str, Any]:
        """Negative ELBO, importance-weighted NLL (nats, bits/dim), reconstruction PSNR and SSIM.

        Reconstructions decode the posterior mean; PSNR and SSIM (Wang et al. 2004, 11-pixel
        Gaussian window) compare them with the images in [0, 1] and are averaged over images.

        Args:
            dataset: batches of `{"image", "label"}` from the evaluation split, not repeated.
            seed: seeds binarisation and posterior samples.
        """
        k = self.config.eval_importance_samples
        limit = self.config.eval_examples or None

        @tf.function
        def evaluate_batch(images, labels, batch_seed):
            labels = labels if self.conditional else None
            bounds = self.log_likelihood_bounds(images, labels, num_samples=k, seed=batch_seed)
            reconstructions = (self.reconstruct(images, labels) + 1) / 2
            psnr = tf.image.psnr(reconstructions, (images + 1) / 2, 1.0)
            ssim = tf.image.ssim(reconstructions, (images + 1) / 2, 1.0, filter_size=filter_size)
            return bounds["elbo"], bounds["iw_bound"], psnr, ssim

        # SSIM's Gaussian window is 11 pixels (Wang et al. 2004), unless the image is smaller.
        filter_size = min(11, *self.image_shape[:2])
        sums = {"elbo": 0.0, "iw": 0.0, "psnr": 0.0, "ssim": 0.0}
        count = 0
        for index, images, labels in self.evaluation_batches(dataset, limit):
            elbo, iw_bound, psnr, ssim = evaluate_batch(images, labels,
                                                        tf.constant([seed, index], tf.int64))
            sums["elbo"] += float(tf.reduce_sum(elbo))
            sums["iw"] += float(tf.reduce_sum(iw_bound))
            sums["psnr"] += float(tf.reduce_sum(psnr))
            sums["ssim"] += float(tf.reduce_sum(ssim))
            count += int(elbo.shape[0])
        dims = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        negative_elbo, nll = -sums["elbo"] / count, -sums["iw"] / count
        if self.config.likelihood == "gaussian":
            # A continuous density is not a probability: the 8-bit image's probability is about
            # the density times the bin volume (2/255 per pixel in [-1, 1]), so its NLL is the
            # density's plus D log(255/2). This keeps all likelihoods in comparable units.
            negative_elbo += dims * _LOG_HALF_LEVELS
            nll += dims * _LOG_HALF_LEVELS
        return {
            "negative_elbo_nats": negative_elbo,
            "negative_elbo_bits_per_dim": losses.bits_per_dim(negative_elbo, dims),
            "nll_nats": nll,
            "nll_bits_per_dim": losses.bits_per_dim(nll, dims),
            "importance_samples": k,
            "reconstruction_psnr_db": sums["psnr"] / count,
            "reconstruction_ssim": sums["ssim"] / count,
            "likelihood": self.config.likelihood,
            "num_examples": count,
        }


@registry.register_model("cvae")
class CVAE(VAE):
    """Label-conditioned VAE (Sohn et al. 2015): the label feeds encoder and decoder.

    Run: `python -m aigc_zoo.run --model=cvae`
    """

    conditional = True
