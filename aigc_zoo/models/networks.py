"""Shared network blocks, built as functional Keras models with known input shapes."""

from __future__ import annotations

from typing import Sequence

import keras

from aigc_zoo.errors import UserError


def check_downsampling(image_shape: Sequence[int], num_halvings: int) -> None:
    """`UserError` unless height and width halve `num_halvings` times without remainder."""
    height, width = image_shape[:2]
    factor = 2 ** num_halvings
    if height % factor or width % factor:
        raise UserError(f"image size {height}x{width} is not divisible by {factor}, which "
                        f"{num_halvings} stride-2 stages need; pick another image_size or "
                        "fewer filters")


def conv_encoder(image_shape: Sequence[int], filters: Sequence[int], output_dim: int, *,
                 extra_channels: int = 0, name: str = "encoder") -> keras.Model:
    """Stride-2 3x3 convolutions (one per entry of `filters`), flatten, dense to `output_dim`.

    `extra_channels` widens the input, for conditioning maps concatenated to the image.
    """
    check_downsampling(image_shape, len(filters))
    height, width, channels = image_shape
    inputs = keras.Input((height, width, channels + extra_channels))
    x = inputs
    for width_ in filters:
        x = keras.layers.Conv2D(width_, 3, strides=2, padding="same", activation="silu")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(output_dim)(x)
    return keras.Model(inputs, outputs, name=name)


def conv_decoder(input_dim: int, image_shape: Sequence[int], filters: Sequence[int],
                 output_channels: int, *, name: str = "decoder") -> keras.Model:
    """Mirror of `conv_encoder`: dense to a low-resolution map, stride-2 transposed convs up.

    `filters` are listed from the highest resolution down, as for the encoder.
    """
    check_downsampling(image_shape, len(filters))
    height, width = image_shape[:2]
    factor = 2 ** len(filters)
    inputs = keras.Input((input_dim,))
    x = keras.layers.Dense((height // factor) * (width // factor) * filters[-1],
                           activation="silu")(inputs)
    x = keras.layers.Reshape((height // factor, width // factor, filters[-1]))(x)
    for width_ in reversed(filters):
        x = keras.layers.Conv2DTranspose(width_, 3, strides=2, padding="same",
                                         activation="silu")(x)
    outputs = keras.layers.Conv2D(output_channels, 3, padding="same")(x)
    return keras.Model(inputs, outputs, name=name)
