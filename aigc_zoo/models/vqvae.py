"""Vector-quantised VAE, `vqvae` (van den Oord et al. 2017, "Neural Discrete Representation
Learning").

An encoder maps an image to a grid of vectors (7x7 for 28x28 images); each is replaced by its
nearest entry of a codebook of `codebook_size` vectors, and a decoder maps the grid of entries
back to the image. The quantisation has no gradient, so the decoder's gradient is copied to the
encoder's output (the straight-through estimator), and a commitment loss (weight 0.25) keeps the
encoder's outputs near their codes. The codebook is updated one of two ways (`codebook_update`):

- `ema` (the paper's appendix, the default): each code becomes the running mean of the encoder
  outputs assigned to it, with exponential moving averages (decay 0.99) of the assignment counts
  and of the sums of the assigned outputs; the counts are Laplace-smoothed, so a code with no
  assignments does not divide by zero;
- `loss`: the codebook is a trainable variable and the loss adds ||sg(z) - e||^2.

Two additions that practice has settled on keep the codebook in use: on the first train step the
codebook is set by k-means (Lloyd's iterations) on the batch's encoder outputs instead of a random
initialisation, and a code whose moving count falls below `dead_code_threshold` (assignments per
batch) is restarted at a random encoder output of the current batch (Dhariwal et al. 2020,
Jukebox; Zeghidour et al. 2021, SoundStream). Under `tf.distribute` the counts and sums are
summed over replicas and the k-means and restart candidates come from the whole global batch
(gathered), so every replica holds the same codebook and N replicas train as one device.

`generate` decodes codes drawn independently from their moving frequencies: the no-prior
baseline that an autoregressive prior over the codes must beat.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import keras
import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import export
from aigc_zoo import optimizers
from aigc_zoo import registry
from aigc_zoo.metrics import pixels
from aigc_zoo.models import base
from aigc_zoo.models import networks

CODEBOOK_UPDATES = ("ema", "loss")
_SMOOTHING = 1e-5  # the Laplace smoothing of the moving counts


@dataclasses.dataclass
class VQVAEConfig(config_lib.TrainConfig):
    """Hyperparameters of the VQ-VAE.

    Run: `python -m aigc_zoo.run --model=vqvae`

    Args:
        filters: widths of the stride-2 convolutions (two: 28x28 images give a 7x7 code grid).
        residual_blocks: residual blocks after the encoder's and before the decoder's
            convolutions.
        code_dim: dimensions of a code vector.
        codebook_size: number of codes, K.
        commitment: beta, the commitment loss's weight.
        codebook_update: one of `CODEBOOK_UPDATES`.
        ema_decay: decay of the codebook's moving averages (`ema`), and of the moving counts
            that dead-code restarts and `generate` read (both updates).
        dead_code_threshold: a code whose moving count of assignments per batch falls below
            this is restarted at an encoder output (0: never).
        kmeans_iterations: Lloyd iterations of the first step's k-means (0: keep the random
            initial codebook).
        learning_rate: Adam's step size.
        eval_examples: test examples used by `--mode=eval` (0: the whole split).
    """

    batch_size: int = 128
    epochs: int = 10
    filters: tuple[int, ...] = (32, 64)
    residual_blocks: int = 2
    code_dim: int = 16
    codebook_size: int = 128
    commitment: float = 0.25
    codebook_update: str = "ema"
    ema_decay: float = 0.99
    dead_code_threshold: float = 1.0
    kmeans_iterations: int = 10
    learning_rate: float = 1e-3
    eval_examples: int = config_lib.sampling_field(0)

    def validate(self) -> None:
        super().validate()
        config_lib.check_widths("filters", self.filters)
        config_lib.check_range("residual_blocks", self.residual_blocks, 0, float("inf"))
        config_lib.check_positive("code_dim", self.code_dim)
        config_lib.check_range("codebook_size", self.codebook_size, 2, float("inf"))
        config_lib.check_range("commitment", self.commitment, 0.0, float("inf"))
        config_lib.check_choice("codebook_update", self.codebook_update, CODEBOOK_UPDATES)
        config_lib.check_range("ema_decay", self.ema_decay, 0.0, 1.0)
        config_lib.check_range("dead_code_threshold", self.dead_code_threshold, 0.0,
                               float("inf"))
        config_lib.check_range("kmeans_iterations", self.kmeans_iterations, 0, float("inf"))
        config_lib.check_positive("learning_rate", self.learning_rate)
        config_lib.check_range("eval_examples", self.eval_examples, 0, float("inf"))


def nearest_codes(vectors: tf.Tensor, codebook: tf.Tensor) -> tf.Tensor:
    """The index of each vector's nearest code (squared Euclidean distance).

    Args:
        vectors: [N, D].
        codebook: [K, D].
    Returns:
        int32 [N].
    """
    distances = (tf.reduce_sum(tf.square(codebook), axis=1)[None, :]
                 - 2.0 * tf.matmul(vectors, codebook, transpose_b=True))
    return tf.argmin(distances, axis=1, output_type=tf.int32)


def kmeans(vectors: tf.Tensor, k: int, iterations: int, seed: tf.Tensor
           ) -> tuple[tf.Tensor, tf.Tensor]:
    """Lloyd's k-means from `k` distinct random rows of `vectors` (cycled when there are fewer).

    Args:
        vectors: [N, D].
        k: number of centroids.
        iterations: Lloyd iterations (assign, then move each centroid to its members' mean; a
            centroid with no members stays where it is).
        seed: a stateless seed [2].
    Returns:
        The centroids [k, D] and their member counts [k] at the last assignment.
    """
    count = tf.shape(vectors)[0]
    order = tf.argsort(tf.random.stateless_uniform([count], seed))
    centroids = tf.gather(vectors, tf.gather(order, tf.range(k) % count))
    members = tf.zeros([k], vectors.dtype)
    for _ in range(iterations):
        assignment = tf.one_hot(nearest_codes(vectors, centroids), k, dtype=vectors.dtype)
        members = tf.reduce_sum(assignment, axis=0)
        sums = tf.matmul(assignment, vectors, transpose_a=True)
        centroids = tf.where(members[:, None] > 0,
                             sums / tf.maximum(members, 1.0)[:, None], centroids)
    if iterations:
        members = tf.reduce_sum(tf.one_hot(nearest_codes(vectors, centroids), k,
                                           dtype=vectors.dtype), axis=0)
    return centroids, members


def straight_through(vectors: tf.Tensor, codes: tf.Tensor) -> tf.Tensor:
    """`codes` in the forward pass; in the backward pass the gradient goes to `vectors`
    unchanged (and none to `codes`), as if the quantiser were the identity."""
    return vectors + tf.stop_gradient(codes - vectors)


def perplexity(counts: tf.Tensor) -> tf.Tensor:
    """exp of the entropy of the code distribution `counts` [K] (K when every code is used
    equally, 1 when one code takes everything)."""
    probabilities = counts / tf.maximum(tf.reduce_sum(counts), 1e-12)
    entropy = -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(probabilities), probabilities))
    return tf.exp(entropy)


class VectorQuantizer(keras.layers.Layer):
    """The codebook [K, D] and its moving statistics, in float32 whatever the compute dtype.

    Every replica computes the same updates (from replica-summed and gathered values), so each
    variable takes the first replica's (`only_first_replica`, no all-reduce); the codebook is
    trainable for `codebook_update="loss"` (the optimizer updates it across replicas).
    """

    def __init__(self, codebook_size: int, code_dim: int, *, trainable_codebook: bool,
                 **kwargs: Any):
        super().__init__(dtype="float32", **kwargs)
        self.codebook_size, self.code_dim = codebook_size, code_dim
        limit = 1.0 / codebook_size
        self.codebook = self.add_weight(
            shape=(codebook_size, code_dim), name="codebook",
            initializer=keras.initializers.RandomUniform(-limit, limit, seed=0),
            trainable=trainable_codebook, aggregation="only_first_replica")
        self.counts = self.add_weight(shape=(codebook_size,), name="counts", initializer="zeros",
                                      trainable=False, aggregation="only_first_replica")
        self.sums = self.add_weight(shape=(codebook_size, code_dim), name="sums",
                                    initializer="zeros", trainable=False,
                                    aggregation="only_first_replica")
        self.initialized = self.add_weight(shape=(), name="initialized", initializer="zeros",
                                           trainable=False, aggregation="only_first_replica")
        self.built = True


def _replica_gather(value: tf.Tensor) -> tf.Tensor:
    """Every replica's `value` concatenated along the first axis, in replica order (the global
    batch's order)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_gather(value, axis=0)


@registry.register_model("vqvae")
class VQVAE(base.GenerativeModel):
    """VQ-VAE: convolutional encoder, vector quantiser, convolutional decoder.

    Args:
        config: a `VQVAEConfig`.
        **kwargs: `image_shape`, `num_classes`, `seed`, as for `GenerativeModel`.
    """

    config_class = VQVAEConfig
    loss_names = ("loss", "reconstruction", "quantization_error", "perplexity", "codes_used")

    def __init__(self, config: VQVAEConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        networks.check_downsampling(self.image_shape, len(config.filters))
        factor = 2 ** len(config.filters)
        self.grid_shape = (self.image_shape[0] // factor, self.image_shape[1] // factor)
        self.encoder = networks.grid_encoder(self.image_shape, config.filters, config.code_dim,
                                             residual_blocks=config.residual_blocks)
        self.decoder = networks.grid_decoder((*self.grid_shape, config.code_dim),
                                             self.image_shape, config.filters,
                                             residual_blocks=config.residual_blocks)
        self.quantizer = VectorQuantizer(config.codebook_size, config.code_dim,
                                         trainable_codebook=config.codebook_update == "loss",
                                         name="quantizer")

    @classmethod
    def knobs(cls, config: VQVAEConfig, image_shape: Sequence[int]) -> base.Knobs:
        return base.Knobs(encodes=True, evaluates=True)

    @classmethod
    def tiny_config(cls) -> VQVAEConfig:
        return VQVAEConfig(batch_size=16, epochs=1, steps_per_epoch=3, filters=(8, 16),
                           residual_blocks=1, code_dim=4, codebook_size=16, kmeans_iterations=2,
                           eval_examples=64)

    def update_groups(self) -> list[base.UpdateGroup]:
        optimizer = optimizers.Adam(self.config.learning_rate)
        # The EMA codebook is not trainable, so it is not among these variables.
        return [base.UpdateGroup("vqvae", self.trainable_variables, optimizer, loss="loss")]

    # -- codes ---------------------------------------------------------------------------------

    def encoder_outputs(self, images: tf.Tensor) -> tf.Tensor:
        """The encoder's vectors [batch, h, w, code_dim] in float32, before quantisation."""
        return tf.cast(self.encoder(images), tf.float32)

    def encode(self, images: tf.Tensor) -> tf.Tensor:
        """The code indices [batch, h, w] (int32) of images in [-1, 1]."""
        vectors = self.encoder_outputs(images)
        flat = tf.reshape(vectors, [-1, self.config.code_dim])
        codebook = tf.convert_to_tensor(self.quantizer.codebook)
        return tf.reshape(nearest_codes(flat, codebook), tf.shape(vectors)[:3])

    def _decode_vectors(self, vectors: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.decoder(vectors), tf.float32)

    def decode(self, codes: tf.Tensor) -> tf.Tensor:
        """Images in [-1, 1] for code indices [batch, h, w]."""
        vectors = tf.gather(tf.convert_to_tensor(self.quantizer.codebook), codes)
        return tf.clip_by_value(self._decode_vectors(vectors), -1.0, 1.0)

    def reconstruct(self, images: tf.Tensor) -> tf.Tensor:
        """Decode each image's codes."""
        return self.decode(self.encode(images))

    def code_frequencies(self) -> tf.Tensor:
        """The moving frequencies [K] of the codes in training (uniform before training)."""
        counts = tf.convert_to_tensor(self.quantizer.counts)
        total = tf.reduce_sum(counts)
        uniform = tf.fill([self.config.codebook_size], 1.0 / self.config.codebook_size)
        return tf.where(total > 0, counts / tf.maximum(total, 1e-12), uniform)

    def sample_tensors(self, num_samples: tf.Tensor, seed: tf.Tensor,
                       conditioning: dict[str, tf.Tensor]) -> tf.Tensor:
        """Decoded grids of codes drawn independently from their training frequencies."""
        seed_pair = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        height, width = self.grid_shape
        logits = tf.math.log(self.code_frequencies() + 1e-12)[None, :]
        codes = tf.random.stateless_categorical(logits, num_samples * height * width, seed_pair,
                                                dtype=tf.int32)
        return self.decode(tf.reshape(codes, [num_samples, height, width]))

    def serving_endpoints(self) -> dict[str, export.ServingEndpoint]:
        height, width = self.grid_shape

        def encode(images):
            return {"codes": self.encode(images)}

        def decode(codes):
            return {"images": self.decode(codes)}

        return {
            "encode": export.ServingEndpoint(
                encode, [tf.TensorSpec([None, *self.image_shape], tf.float32, name="images")],
                f"code indices [batch, {height}, {width}] (int32, in [0, "
                f"{self.config.codebook_size})) of images in [-1, 1]"),
            "decode": export.ServingEndpoint(
                decode, [tf.TensorSpec([None, height, width], tf.int32, name="codes")],
                f"images in [-1, 1] for code indices [batch, {height}, {width}]"),
        }

    # -- objective -----------------------------------------------------------------------------

    def compute_losses(self, batch: dict[str, tf.Tensor], *, training: bool,
                       group: str | None = None) -> dict[str, tf.Tensor]:
        images = tf.cast(batch["image"], tf.float32)
        vectors = self.encoder_outputs(batch["image"])
        flat = tf.reshape(vectors, [-1, self.config.code_dim])
        if training:
            # Drawn every step, so the seed stream does not depend on what the step does.
            kmeans_seed, restart_seed = self.random_seed(), self.random_seed()
            gathered = tf.stop_gradient(_replica_gather(flat))
            self._initialize_codebook(gathered, kmeans_seed)
        codebook = tf.convert_to_tensor(self.quantizer.codebook)
        indices = nearest_codes(tf.stop_gradient(flat), tf.stop_gradient(codebook))
        codes = tf.gather(codebook, indices)
        quantization_error = tf.reduce_mean(tf.square(flat - tf.stop_gradient(codes)))
        quantized = tf.reshape(straight_through(flat, codes), tf.shape(vectors))
        reconstruction = tf.reduce_mean(tf.square(self._decode_vectors(quantized) - images))
        loss = reconstruction + self.config.commitment * quantization_error
        if self.config.codebook_update == "loss":
            loss += tf.reduce_mean(tf.square(tf.stop_gradient(flat) - codes))
        assignment = tf.one_hot(indices, self.config.codebook_size)
        counts = base.GenerativeModel.replica_sum(tf.reduce_sum(assignment, axis=0))
        if training:
            self._update_codebook(flat, assignment, counts, gathered, restart_seed)
        return {"loss": loss, "reconstruction": reconstruction,
                "quantization_error": quantization_error, "perplexity": perplexity(counts),
                "codes_used": tf.reduce_mean(tf.cast(counts > 0, tf.float32))}

    def _initialize_codebook(self, vectors: tf.Tensor, seed: tf.Tensor) -> None:
        """On the first train step: the codebook from k-means on the global batch's vectors."""
        quantizer, config = self.quantizer, self.config
        if not config.kmeans_iterations:
            return
        fresh = quantizer.initialized <= 0
        # Only the computation is conditional: under tf.distribute a variable's assignment in
        # a replica is a synchronisation point, which TensorFlow does not allow inside a cond.
        centroids, members = tf.cond(
            fresh,
            lambda: kmeans(vectors, config.codebook_size, config.kmeans_iterations, seed),
            lambda: (tf.convert_to_tensor(quantizer.codebook),
                     tf.convert_to_tensor(quantizer.counts)))
        sums = tf.where(fresh, centroids * members[:, None], quantizer.sums)
        quantizer.codebook.assign(centroids)
        quantizer.counts.assign(members)
        quantizer.sums.assign(sums)
        quantizer.initialized.assign(1.0)

    def _update_codebook(self, flat: tf.Tensor, assignment: tf.Tensor, counts: tf.Tensor,
                         gathered: tf.Tensor, seed: tf.Tensor) -> None:
        """The moving averages, the EMA codebook, and restarts of dead codes."""
        quantizer, config = self.quantizer, self.config
        decay = config.ema_decay
        moving_counts = decay * quantizer.counts + (1.0 - decay) * counts
        # Restart candidates: random vectors of the global batch, the same on every replica.
        picks = tf.random.stateless_uniform([config.codebook_size], seed, 0,
                                            tf.shape(gathered)[0], dtype=tf.int32)
        candidates = tf.gather(gathered, picks)
        dead = moving_counts < config.dead_code_threshold
        moving_counts = tf.where(dead, config.dead_code_threshold, moving_counts)
        if config.codebook_update == "ema":
            sums = base.GenerativeModel.replica_sum(
                tf.matmul(assignment, tf.stop_gradient(flat), transpose_a=True))
            moving_sums = decay * quantizer.sums + (1.0 - decay) * sums
            moving_sums = tf.where(dead[:, None], candidates * config.dead_code_threshold,
                                   moving_sums)
            total = tf.reduce_sum(moving_counts)
            smoothed = ((moving_counts + _SMOOTHING)
                        / (total + config.codebook_size * _SMOOTHING) * total)
            quantizer.sums.assign(moving_sums)
            # A restarted code sits at its candidate (its sum over its count).
            codebook = tf.where(dead[:, None], candidates, moving_sums / smoothed[:, None])
        else:
            codebook = tf.where(dead[:, None], candidates, quantizer.codebook)
        quantizer.counts.assign(moving_counts)
        quantizer.codebook.assign(codebook)

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate_model(self, dataset: tf.data.Dataset, *, seed: int = 0) -> dict[str, Any]:
        """Reconstruction MSE, PSNR and SSIM (images in [0, 1], means over images), and the
        share of codes the split's images use and the perplexity of their codes.

        Args:
            dataset: batches of `{"image", ...}` from the evaluation split, not repeated.
            seed: unused (the evaluation is deterministic); kept for the common signature.
        """
        limit = self.config.eval_examples or None
        size = self.config.codebook_size

        @tf.function
        def evaluate_batch(images):
            codes = self.encode(images)
            return (*pixels.pixel_scores(self.decode(codes), images),
                    tf.math.bincount(codes, minlength=size, maxlength=size, dtype=tf.float32))

        sums = {"mse": 0.0, "psnr": 0.0, "ssim": 0.0}
        counts = tf.zeros([size], tf.float32)
        count = 0
        for _, images, _ in self.evaluation_batches(dataset, limit):
            mse, psnr, ssim, batch_counts = evaluate_batch(images)
            for name, values in (("mse", mse), ("psnr", psnr), ("ssim", ssim)):
                sums[name] += float(tf.reduce_sum(values))
            counts += batch_counts
            count += int(mse.shape[0])
        return {
            "reconstruction_mse": sums["mse"] / count,
            "reconstruction_psnr_db": sums["psnr"] / count,
            "reconstruction_ssim": sums["ssim"] / count,
            "codes_used": float(tf.reduce_mean(tf.cast(counts > 0, tf.float32))),
            "code_perplexity": float(perplexity(counts)),
            "codebook_size": size,
            "bits_per_image": math.prod(self.grid_shape) * math.log2(size),
            "num_examples": count,
        }
