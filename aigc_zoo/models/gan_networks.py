"""Generators and discriminators of the GAN family, and spectrally normalised layers.

Two shapes of network, chosen by the data:

- convolutional (DCGAN, Radford et al. 2016) for images: the generator projects the latent to a
  low-resolution map and doubles it with 4x4 stride-2 transposed convolutions (batch norm and
  ReLU between them, tanh at the end); the discriminator halves with 4x4 stride-2
  convolutions and leaky ReLU (0.2), then one linear output;
- fully connected for the original GAN and for the 2D toy datasets, whose samples are points
  (linear output, no tanh).

Discriminators return one unnormalised score (a logit, or a critic value) per example. A
conditional discriminator is a projection discriminator (Miyato & Koyama 2018):
`linear(phi(x)) + <embed(y), phi(x)>`; a conditional generator concatenates a learned label
embedding to the latent.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from aigc_zoo.models import networks

LABEL_EMBEDDING = 32  # width of the generator's label embedding


class _SpectralNorm:
    """Divides a layer's kernel by its largest singular value (Miyato et al. 2018).

    The singular value comes from one power iteration per training call, with the vectors
    held fixed in the gradient (as in the paper), so the gradient flows through W / sigma(W).
    Every training call advances the iteration, so the real, fake and penalty passes of one
    discriminator step use slightly different estimates, as in the reference implementations.
    The projection discriminator's label embedding is not normalised.
    Unlike `keras.layers.SpectralNormalization`, which overwrites the kernel with its
    normalised value, the trained variable stays the unnormalised W.
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.u = self.add_weight(shape=(1, self.kernel.shape[-1]), trainable=False, name="sn_u",
                                 initializer=keras.initializers.RandomNormal(stddev=1.0),
                                 aggregation="only_first_replica")

    # Dense's and Conv2D's own (quantisation-aware) serialisation writes only kernel and bias;
    # the base Layer's writes every variable of the layer, so `.keras` files keep `sn_u`.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def call(self, inputs, training=False):
        outputs = self._apply_kernel(inputs, self._normalised_kernel(training))
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs

    def _normalised_kernel(self, training: bool):
        kernel = ops.cast(self.kernel, "float32")
        matrix = ops.reshape(kernel, (-1, kernel.shape[-1]))
        u = self.u
        v = _l2_normalise(ops.matmul(u, ops.transpose(matrix)))
        u_new = _l2_normalise(ops.matmul(v, matrix))
        u_new, v = ops.stop_gradient(u_new), ops.stop_gradient(v)
        if training:
            self.u.assign(u_new)
        sigma = ops.sum(ops.matmul(v, matrix) * u_new)
        return ops.cast(kernel / sigma, self.compute_dtype)


def _l2_normalise(x):
    return x / ops.sqrt(ops.sum(ops.square(x)) + 1e-12)


@keras.saving.register_keras_serializable(package="aigc_zoo")
class SpectralDense(_SpectralNorm, keras.layers.Dense):
    """`keras.layers.Dense` with a spectrally normalised kernel."""

    def _apply_kernel(self, inputs, kernel):
        return ops.matmul(inputs, kernel)


@keras.saving.register_keras_serializable(package="aigc_zoo")
class SpectralConv2D(_SpectralNorm, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with a spectrally normalised kernel."""

    def _apply_kernel(self, inputs, kernel):
        return ops.conv(inputs, kernel, strides=self.strides, padding=self.padding,
                        dilation_rate=self.dilation_rate, data_format=self.data_format)


def _dense(units: int, spectral_norm: bool, **kwargs) -> keras.layers.Layer:
    return SpectralDense(units, **kwargs) if spectral_norm else keras.layers.Dense(units, **kwargs)


def _conv(filters: int, spectral_norm: bool, **kwargs) -> keras.layers.Layer:
    layer = SpectralConv2D if spectral_norm else keras.layers.Conv2D
    return layer(filters, 4, strides=2, padding="same", **kwargs)


def _generator_inputs(latent_dim: int, num_classes: int | None):
    latent = keras.Input((latent_dim,), name="latent")
    if not num_classes:
        return [latent], latent
    labels = keras.Input((), dtype="int32", name="label")
    embedded = keras.layers.Embedding(num_classes, LABEL_EMBEDDING)(labels)
    return [latent, labels], keras.layers.Concatenate()([latent, embedded])


def _hidden(x, units: int, batch_norm: bool):
    x = keras.layers.Dense(units, use_bias=not batch_norm)(x)
    if batch_norm:
        x = networks.batch_normalization()(x)
    return keras.layers.ReLU()(x)


def mlp_generator(latent_dim: int, output_shape: Sequence[int], units: Sequence[int], *,
                  batch_norm: bool, tanh: bool, num_classes: int | None = None,
                  name: str = "generator") -> keras.Model:
    """Latent (and label) -> hidden ReLU layers -> `output_shape` (tanh for images)."""
    inputs, x = _generator_inputs(latent_dim, num_classes)
    for width in units:
        x = _hidden(x, width, batch_norm)
    size = 1
    for dim in output_shape:
        size *= int(dim)
    # float32 output layers under mixed precision: float16 would round 2D points to ~0.002.
    x = keras.layers.Dense(size, activation="tanh" if tanh else None, dtype="float32")(x)
    outputs = keras.layers.Reshape(tuple(output_shape), dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def conv_generator(latent_dim: int, image_shape: Sequence[int], filters: Sequence[int], *,
                   batch_norm: bool, num_classes: int | None = None,
                   name: str = "generator") -> keras.Model:
    """DCGAN generator: dense to (H/2^n, W/2^n, filters[-1]), n transposed convs up, tanh.

    `filters` are listed from the highest resolution down, as for `networks.conv_decoder`;
    the last transposed convolution outputs the image's channels.
    """
    networks.check_downsampling(image_shape, len(filters))
    height, width, channels = image_shape
    factor = 2 ** len(filters)
    inputs, x = _generator_inputs(latent_dim, num_classes)
    x = _hidden(x, (height // factor) * (width // factor) * filters[-1], batch_norm)
    x = keras.layers.Reshape((height // factor, width // factor, filters[-1]))(x)
    for width_ in reversed(filters[:-1]):
        x = keras.layers.Conv2DTranspose(width_, 4, strides=2, padding="same",
                                         use_bias=not batch_norm)(x)
        if batch_norm:
            x = networks.batch_normalization()(x)
        x = keras.layers.ReLU()(x)
    outputs = keras.layers.Conv2DTranspose(channels, 4, strides=2, padding="same",
                                           activation="tanh", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def _score(features, spectral_norm: bool, num_classes: int | None, inputs: list):
    """Linear score of the features, plus the projection term when labels are given."""
    score = _dense(1, spectral_norm)(features)
    if num_classes:
        labels = keras.Input((), dtype="int32", name="label")
        inputs.append(labels)
        embedded = keras.layers.Embedding(num_classes, features.shape[-1])(labels)
        projection = keras.layers.Dot(axes=1)([embedded, features])
        score = keras.layers.Add()([score, projection])
    return keras.layers.Reshape((), dtype="float32")(
        keras.layers.Activation("linear", dtype="float32")(score))


def mlp_discriminator(input_shape: Sequence[int], units: Sequence[int], *, spectral_norm: bool,
                      num_classes: int | None = None, name: str = "discriminator"
                      ) -> keras.Model:
    """Flatten -> hidden leaky-ReLU layers -> one score per example.

    `units` are given in the generator's order (latent side first) and used in reverse, so a
    discriminator narrows towards its score as the generator widens towards its sample.
    """
    inputs = [keras.Input(tuple(input_shape), name="sample")]
    x = keras.layers.Flatten()(inputs[0])
    for width in reversed(units):
        x = keras.layers.LeakyReLU(0.2)(_dense(width, spectral_norm)(x))
    return keras.Model(inputs, _score(x, spectral_norm, num_classes, inputs), name=name)


def conv_discriminator(image_shape: Sequence[int], filters: Sequence[int], *,
                       spectral_norm: bool, num_classes: int | None = None,
                       name: str = "discriminator") -> keras.Model:
    """DCGAN discriminator: 4x4 stride-2 convolutions with leaky ReLU, flatten, one score."""
    networks.check_downsampling(image_shape, len(filters))
    inputs = [keras.Input(tuple(image_shape), name="sample")]
    x = inputs[0]
    for width in filters:
        x = keras.layers.LeakyReLU(0.2)(_conv(width, spectral_norm)(x))
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, _score(x, spectral_norm, num_classes, inputs), name=name)
