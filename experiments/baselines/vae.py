"""The keras-io convolutional VAE recipe ("Variational AutoEncoder"), re-implemented for Keras 3.

Source followed: https://keras.io/examples/generative/vae/ (keras-team/keras-io,
examples/generative/vae.py, by fchollet; read at commit 09e02e1).

Kept from the recipe: the encoder (3x3 stride-2 ReLU convolutions of 32 and 64 filters, a
16-unit ReLU layer, the mean and log-variance of a 2-D latent, the reparameterised draw), the
decoder (a dense ReLU layer to 7x7x64, stride-2 3x3 ReLU transposed convolutions of 64 and 32
filters, a 3x3 sigmoid transposed convolution), the loss (per-image sum of pixel-wise binary
cross-entropy plus the analytic KL divergence, averaged over the batch), Adam at Keras'
default rate (1e-3), batch 128, and its input: a NumPy array in [0, 1] given to `fit`, which
batches and shuffles it with Keras' own data adapter.

Changed: `digits`' train split instead of MNIST's train and test splits; Keras 3 spellings
(`keras.random.normal` with a seed generator); samples are the decoder's means for latents drawn
from the prior, mapped to [-1, 1] for the zoo's metrics (the recipe only plots a latent grid).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import keras
from keras import layers

SOURCE = "https://keras.io/examples/generative/vae/"
FAMILY = "vae"
BATCH_SIZE = 128
LATENT_DIM = 2


class Sampling(layers.Layer):
    """z = mean + sigma * epsilon, epsilon from a seeded standard normal."""

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.noise = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        mean, log_var = inputs
        epsilon = keras.random.normal(tf.shape(mean), seed=self.noise)
        return mean + tf.exp(0.5 * log_var) * epsilon


def encoder(seed: int = 0) -> keras.Model:
    images = keras.Input((28, 28, 1))
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(images)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Dense(16, activation="relu")(layers.Flatten()(x))
    mean = layers.Dense(LATENT_DIM, name="z_mean")(x)
    log_var = layers.Dense(LATENT_DIM, name="z_log_var")(x)
    z = Sampling(seed)([mean, log_var])
    return keras.Model(images, [mean, log_var, z], name="encoder")


def decoder() -> keras.Model:
    latents = keras.Input((LATENT_DIM,))
    x = layers.Reshape((7, 7, 64))(layers.Dense(7 * 7 * 64, activation="relu")(latents))
    x = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(x)
    out = layers.Conv2DTranspose(1, 3, padding="same", activation="sigmoid")(x)
    return keras.Model(latents, out, name="decoder")


class RecipeVAE(keras.Model):
    """The recipe's model: one optimizer, its own `train_step` and loss trackers."""

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.decoder = encoder(seed), decoder()
        self.total_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")

    @property
    def metrics(self):
        return [self.total_tracker, self.reconstruction_tracker, self.kl_tracker]

    def train_step(self, images):
        with tf.GradientTape() as tape:
            mean, log_var, z = self.encoder(images)
            decoded = self.decoder(z)
            reconstruction = tf.reduce_mean(tf.reduce_sum(
                keras.losses.binary_crossentropy(images, decoded), axis=(1, 2)))
            kl = -0.5 * (1.0 + log_var - tf.square(mean) - tf.exp(log_var))
            kl = tf.reduce_mean(tf.reduce_sum(kl, axis=1))
            total = reconstruction + kl
        weights = self.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(total, weights), weights))
        self.total_tracker.update_state(total)
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        return {tracker.name: tracker.result() for tracker in self.metrics}

    def call(self, images):
        return self.decoder(self.encoder(images)[2])


def build(seed: int = 0) -> RecipeVAE:
    keras.utils.set_random_seed(seed)
    model = RecipeVAE(seed)
    model.compile(optimizer=keras.optimizers.Adam())
    return model


def fit_inputs(images: np.ndarray, batch_size: int = BATCH_SIZE) -> tuple[object, dict]:
    """The recipe's `fit` input: the float array itself, batched by `fit`."""
    return images.astype("float32") / 255.0, {"batch_size": batch_size}


def generate(model: RecipeVAE, count: int, seed: int) -> np.ndarray:
    latents = np.random.default_rng(seed).standard_normal((count, LATENT_DIM)).astype("float32")
    return model.decoder.predict_on_batch(latents) * 2.0 - 1.0
