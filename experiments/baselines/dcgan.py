"""The keras-io DCGAN recipe ("GAN overriding `Model.train_step`"), re-implemented for Keras 3.

Source followed: https://keras.io/examples/generative/dcgan_overriding_train_step/
(keras-team/keras-io, examples/generative/dcgan_overriding_train_step.py, by fchollet, in
its 28x28 MNIST version, "last modified 2020/04/29", read at commit 0d5f327). The same page now
holds "DCGAN to generate face images" (CelebA at 64x64x3, 2023), with the same model class and
`train_step` but larger networks and other hyperparameters; those were not used: the MNIST
version fits 28x28x1 without changing its architecture.

Kept from the recipe: both networks (D: two stride-2 3x3 convolutions of 64 and 128 filters with
LeakyReLU 0.2, global max pooling, one logit; G: a dense layer to 7x7x128, two stride-2 4x4
transposed convolutions of 128 filters, a 7x7 sigmoid convolution), latent size 128, Adam
3e-4 for both, binary cross-entropy on logits, the 0.05 uniform noise added to the
discriminator's labels, one D step then one G step on fresh latents per batch, batch 64, and its
input pipeline: `from_tensor_slices(x).shuffle(1024).batch(64).prefetch(32)` over images in
[0, 1], the last partial batch kept and tf.data's autotuner left at its default (on).

Changed: `digits`' train split (60,000 images) instead of MNIST's train and test splits; Keras 3
spellings (`negative_slope`, `keras.random` with a seed generator instead of `tf.random`);
no monitor callback writing PNGs; samples are mapped to [-1, 1] for the zoo's metrics.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import keras
from keras import layers

SOURCE = "https://keras.io/examples/generative/dcgan_overriding_train_step/"
FAMILY = "dcgan"
BATCH_SIZE = 64
LATENT_DIM = 128
LEARNING_RATE = 3e-4
LABEL_NOISE = 0.05


def discriminator() -> keras.Model:
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(64, 3, strides=2, padding="same"),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Conv2D(128, 3, strides=2, padding="same"),
        layers.LeakyReLU(negative_slope=0.2),
        layers.GlobalMaxPooling2D(),
        layers.Dense(1),
    ], name="discriminator")


def generator() -> keras.Model:
    return keras.Sequential([
        keras.Input((LATENT_DIM,)),
        layers.Dense(7 * 7 * 128),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Reshape((7, 7, 128)),
        layers.Conv2DTranspose(128, 4, strides=2, padding="same"),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Conv2DTranspose(128, 4, strides=2, padding="same"),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Conv2D(1, 7, padding="same", activation="sigmoid"),
    ], name="generator")


class RecipeGAN(keras.Model):
    """The recipe's model: its own `compile` takes two optimizers and a loss, its own
    `train_step` alternates one discriminator and one generator update."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.discriminator = discriminator()
        self.generator = generator()
        self.noise = keras.random.SeedGenerator(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")

    def compile(self, d_optimizer, g_optimizer, loss_fn):
        super().compile()
        self.d_optimizer, self.g_optimizer, self.loss_fn = d_optimizer, g_optimizer, loss_fn

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def train_step(self, real):
        count = tf.shape(real)[0]
        fake = self.generator(keras.random.normal((count, LATENT_DIM), seed=self.noise))
        both = tf.concat([fake, real], axis=0)
        # 1 = fake, 0 = real, as in the recipe, softened by a little uniform noise.
        targets = tf.concat([tf.ones((count, 1)), tf.zeros((count, 1))], axis=0)
        targets += LABEL_NOISE * keras.random.uniform(tf.shape(targets), seed=self.noise)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(targets, self.discriminator(both))
        weights = self.discriminator.trainable_weights
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, weights), weights))

        latents = keras.random.normal((count, LATENT_DIM), seed=self.noise)
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(tf.zeros((count, 1)),
                                  self.discriminator(self.generator(latents)))
        weights = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, weights), weights))
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}


def build(seed: int = 0) -> RecipeGAN:
    """The recipe's model, compiled as the recipe compiles it."""
    keras.utils.set_random_seed(seed)
    model = RecipeGAN(seed)
    model.compile(d_optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  g_optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss_fn=keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def fit_inputs(images: np.ndarray, batch_size: int = BATCH_SIZE) -> tuple[object, dict]:
    """What the recipe passes to `fit`, from uint8 images [N, 28, 28, 1]: its own tf.data
    pipeline of floats in [0, 1]."""
    scaled = images.astype("float32") / 255.0
    dataset = tf.data.Dataset.from_tensor_slices(scaled)
    return dataset.shuffle(buffer_size=1024).batch(batch_size).prefetch(32), {}


def generate(model: RecipeGAN, count: int, seed: int) -> np.ndarray:
    """`count` samples in [-1, 1] (the recipe's sigmoid output rescaled)."""
    latents = np.random.default_rng(seed).standard_normal((count, LATENT_DIM)).astype("float32")
    return model.generator.predict_on_batch(latents) * 2.0 - 1.0
