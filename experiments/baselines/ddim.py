"""The keras-io DDIM recipe ("Denoising Diffusion Implicit Models"), re-implemented for Keras 3.

Source followed: https://keras.io/examples/generative/ddim/ (keras-team/keras-io,
examples/generative/ddim.py, by András Béres; read at commit 093dad4).

Kept from the recipe: continuous diffusion times with its angular ("cosine") schedule between
signal rates 0.95 and 0.02; images standardised by a `Normalization` layer adapted on the data;
the residual U-Net (a 1x1 input convolution concatenated with a 32-dimensional sinusoidal
embedding of the noise variance, frequencies 1 to 1,000, upsampled to the image size; residual
blocks of batch norm without centre and scale, two 3x3 convolutions with swish after the first,
a 1x1 skip convolution where the width changes; average pooling down, bilinear upsampling and
concatenated skips up; a zero-initialised 1x1 output); epsilon prediction with the mean
absolute error; AdamW (1e-3, weight decay 1e-4); an EMA (0.999) of the weights that sampling
uses; deterministic DDIM sampling; batch 64 and its input pipeline (map with AUTOTUNE, cache,
repeat 5, shuffle 640, batch with drop_remainder, prefetch AUTOTUNE).

Changed to fit 28x28x1 `digits`: widths (32, 64, 96) with 2 blocks per level instead of
(32, 64, 96, 128): 28 halves twice (to 7) but not three times; one channel; no crop or resize
in the pipeline; 20 sampling steps for evaluation (the recipe plots with 20, its in-training
KID uses 5), the same as the zoo's ddpm default; no KID metric or checkpoint callback; samples
are mapped to [-1, 1] for the zoo's metrics. Keras 3 spellings: `keras.ops` in the embedding,
the loss function passed to our `compile` explicitly, the EMA network built a second time
instead of `clone_model` (which also initialises it afresh).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

import keras
from keras import layers

SOURCE = "https://keras.io/examples/generative/ddim/"
FAMILY = "ddpm"
BATCH_SIZE = 64
IMAGE_SIZE = 28
CHANNELS = 1
WIDTHS = (32, 64, 96)
BLOCK_DEPTH = 2
EMBEDDING_DIMS = 32
EMBEDDING_MAX_FREQUENCY = 1000.0
MIN_SIGNAL_RATE, MAX_SIGNAL_RATE = 0.02, 0.95
EMA = 0.999
LEARNING_RATE, WEIGHT_DECAY = 1e-3, 1e-4
DATASET_REPETITIONS = 5
SAMPLE_STEPS = 20


def sinusoidal_embedding(variances):
    frequencies = keras.ops.exp(keras.ops.linspace(
        math.log(1.0), math.log(EMBEDDING_MAX_FREQUENCY), EMBEDDING_DIMS // 2))
    angles = 2.0 * math.pi * frequencies * variances
    return keras.ops.concatenate([keras.ops.sin(angles), keras.ops.cos(angles)], axis=3)


def residual_block(x, width: int):
    skip = x if x.shape[3] == width else layers.Conv2D(width, 1)(x)
    x = layers.BatchNormalization(center=False, scale=False)(x)
    x = layers.Conv2D(width, 3, padding="same", activation="swish")(x)
    x = layers.Conv2D(width, 3, padding="same")(x)
    return layers.Add()([x, skip])


def network(widths=WIDTHS, block_depth: int = BLOCK_DEPTH) -> keras.Model:
    noisy = keras.Input((IMAGE_SIZE, IMAGE_SIZE, CHANNELS))
    variances = keras.Input((1, 1, 1))
    embedding = layers.Lambda(sinusoidal_embedding, output_shape=(1, 1, EMBEDDING_DIMS))(
        variances)
    embedding = layers.UpSampling2D(size=IMAGE_SIZE, interpolation="nearest")(embedding)
    x = layers.Concatenate()([layers.Conv2D(widths[0], 1)(noisy), embedding])
    skips = []
    for width in widths[:-1]:
        for _ in range(block_depth):
            x = residual_block(x, width)
            skips.append(x)
        x = layers.AveragePooling2D(2)(x)
    for _ in range(block_depth):
        x = residual_block(x, widths[-1])
    for width in reversed(widths[:-1]):
        x = layers.UpSampling2D(2, interpolation="bilinear")(x)
        for _ in range(block_depth):
            x = residual_block(layers.Concatenate()([x, skips.pop()]), width)
    out = layers.Conv2D(CHANNELS, 1, kernel_initializer="zeros")(x)
    return keras.Model([noisy, variances], out, name="residual_unet")


def schedule(times):
    """(noise rates, signal rates) at diffusion times in [0, 1]: angles swept linearly."""
    start, end = math.acos(MAX_SIGNAL_RATE), math.acos(MIN_SIGNAL_RATE)
    angles = start + times * (end - start)
    return tf.sin(angles), tf.cos(angles)


class RecipeDiffusion(keras.Model):
    """The recipe's model: a U-Net, its EMA copy, and its own `train_step`."""

    def __init__(self, seed: int = 0, widths=WIDTHS, block_depth: int = BLOCK_DEPTH):
        super().__init__()
        self.normalizer = layers.Normalization()
        self.network = network(widths, block_depth)
        # The recipe's `clone_model`: the same architecture with freshly initialised weights
        # (Keras 3 cannot clone an unregistered Lambda function, so it is built again).
        self.ema_network = network(widths, block_depth)
        self.noise = keras.random.SeedGenerator(seed)
        self.noise_tracker = keras.metrics.Mean(name="n_loss")
        self.image_tracker = keras.metrics.Mean(name="i_loss")
        self._sample = None

    def compile(self, loss_fn, **kwargs):
        super().compile(**kwargs)
        self.loss_fn = loss_fn

    @property
    def metrics(self):
        return [self.noise_tracker, self.image_tracker]

    def denoise(self, noisy, noise_rates, signal_rates, training: bool):
        net = self.network if training else self.ema_network
        noises = net([noisy, noise_rates ** 2], training=training)
        return noises, (noisy - noise_rates * noises) / signal_rates

    def train_step(self, images):
        images = self.normalizer(images, training=True)
        shape = tf.shape(images)
        noises = keras.random.normal(shape, seed=self.noise)
        times = keras.random.uniform((shape[0], 1, 1, 1), seed=self.noise)
        noise_rates, signal_rates = schedule(times)
        noisy = signal_rates * images + noise_rates * noises
        with tf.GradientTape() as tape:
            predicted_noises, predicted_images = self.denoise(noisy, noise_rates, signal_rates,
                                                              training=True)
            noise_loss = self.loss_fn(noises, predicted_noises)
            image_loss = self.loss_fn(images, predicted_images)  # a diagnostic only
        weights = self.network.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(noise_loss, weights), weights))
        self.noise_tracker.update_state(noise_loss)
        self.image_tracker.update_state(image_loss)
        for weight, average in zip(self.network.weights, self.ema_network.weights):
            average.assign(EMA * average + (1.0 - EMA) * weight)
        return {tracker.name: tracker.result() for tracker in self.metrics}

    def reverse_diffusion(self, noise, steps: int):
        """Deterministic DDIM from pure noise (assumed to hold signal at the lowest rate)."""
        step = 1.0 / steps
        count = tf.shape(noise)[0]
        noisy = noise
        for index in range(steps):
            times = tf.fill((count, 1, 1, 1), 1.0 - index * step)
            noise_rates, signal_rates = schedule(times)
            noises, images = self.denoise(noisy, noise_rates, signal_rates, training=False)
            next_noise_rates, next_signal_rates = schedule(times - step)
            noisy = next_signal_rates * images + next_noise_rates * noises
        return images

    def generate(self, noise, steps: int | None = None):
        """Images in [0, 1] from standard normal `noise`, in `steps` (default `SAMPLE_STEPS`)."""
        images = self.reverse_diffusion(noise, steps or SAMPLE_STEPS)
        images = self.normalizer.mean + images * self.normalizer.variance ** 0.5
        return tf.clip_by_value(images, 0.0, 1.0)


def build(seed: int = 0, widths=WIDTHS, block_depth: int = BLOCK_DEPTH) -> RecipeDiffusion:
    keras.utils.set_random_seed(seed)
    model = RecipeDiffusion(seed, widths, block_depth)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=LEARNING_RATE,
                                                   weight_decay=WEIGHT_DECAY),
                  loss_fn=keras.losses.mean_absolute_error)
    return model


def fit_inputs(images: np.ndarray, batch_size: int = BATCH_SIZE) -> tuple[object, dict]:
    """The recipe's pipeline, which also adapts the model's normalizer (`prepare`)."""
    dataset = (tf.data.Dataset.from_tensor_slices(images)
               .map(lambda image: tf.cast(image, tf.float32) / 255.0,
                    num_parallel_calls=tf.data.AUTOTUNE)
               .cache()
               .repeat(DATASET_REPETITIONS)
               .shuffle(10 * batch_size)
               .batch(batch_size, drop_remainder=True)
               .prefetch(buffer_size=tf.data.AUTOTUNE))
    return dataset, {}


def prepare(model: RecipeDiffusion, inputs) -> None:
    """The recipe adapts its normalizer on the training pipeline before `fit`."""
    model.normalizer.adapt(inputs)


def generate(model: RecipeDiffusion, count: int, seed: int) -> np.ndarray:
    noise = tf.constant(np.random.default_rng(seed).standard_normal(
        (count, IMAGE_SIZE, IMAGE_SIZE, CHANNELS)).astype("float32"))
    if model._sample is None:  # traced once: evaluation speed is not what is compared
        model._sample = tf.function(model.generate)
    return model._sample(noise).numpy() * 2.0 - 1.0
