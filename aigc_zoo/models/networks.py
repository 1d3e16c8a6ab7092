"""Shared network blocks, built as functional Keras models with known input shapes."""

from __future__ import annotations

import math
from typing import Sequence

import keras
import tensorflow as tf

from aigc_zoo.errors import UserError


def batch_normalization(**kwargs) -> keras.layers.BatchNormalization:
    """Batch norm whose statistics span the global batch when built for several replicas.

    Under a `tf.distribute` strategy with more than one replica (`strategy.scope()` is active
    while models are built), the mean and variance are all-reduced over every replica's
    examples, so training matches one device with the same global batch and the replicas'
    moving statistics stay equal. With one replica it is the plain layer (no extra work).
    """
    synchronized = tf.distribute.get_strategy().num_replicas_in_sync > 1
    return keras.layers.BatchNormalization(synchronized=synchronized, **kwargs)


def check_downsampling(image_shape: Sequence[int], num_halvings: int) -> None:
    """`UserError` unless height and width halve `num_halvings` times without remainder."""
    if len(image_shape) != 3:
        raise UserError(f"this model needs images (height, width, channels), not data of shape "
                        f"{tuple(image_shape)}; the 2D toy datasets are for the GANs")
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


def _plain_residual_block(x, hidden: int, name: str):
    """ReLU, 3x3 conv to `hidden`, ReLU, 1x1 conv back, added to the input (the VQ-VAE's)."""
    channels = x.shape[-1]
    h = keras.layers.Activation("relu")(x)
    h = keras.layers.Conv2D(hidden, 3, padding="same", name=f"{name}_conv1")(h)
    h = keras.layers.Activation("relu")(h)
    h = keras.layers.Conv2D(channels, 1, name=f"{name}_conv2")(h)
    return keras.layers.Add()([x, h])


def grid_encoder(image_shape: Sequence[int], filters: Sequence[int], output_channels: int, *,
                 residual_blocks: int = 2, name: str = "encoder") -> keras.Model:
    """Images to a grid of vectors (van den Oord et al. 2017): a stride-2 4x4 convolution per
    entry of `filters`, a 3x3 convolution, residual blocks, and a 1x1 convolution to
    `output_channels`; 28x28 images with two filters give a 7x7 grid."""
    check_downsampling(image_shape, len(filters))
    inputs = keras.Input(tuple(image_shape))
    x = inputs
    for index, width in enumerate(filters):
        x = keras.layers.Conv2D(width, 4, strides=2, padding="same", name=f"{name}_down{index}")(x)
        x = keras.layers.Activation("relu")(x)
    x = keras.layers.Conv2D(filters[-1], 3, padding="same", name=f"{name}_conv")(x)
    for index in range(residual_blocks):
        x = _plain_residual_block(x, filters[-1] // 2, f"{name}_residual{index}")
    x = keras.layers.Activation("relu")(x)
    outputs = keras.layers.Conv2D(output_channels, 1, name=f"{name}_out")(x)
    return keras.Model(inputs, outputs, name=name)


def grid_decoder(grid_shape: Sequence[int], image_shape: Sequence[int],
                 filters: Sequence[int], *, residual_blocks: int = 2,
                 name: str = "decoder") -> keras.Model:
    """Mirror of `grid_encoder`: a grid of vectors [h, w, d] to images shaped `image_shape`
    (a 3x3 convolution, residual blocks, a stride-2 4x4 transposed convolution per filter, the
    last one to the image's channels; no output activation)."""
    inputs = keras.Input(tuple(grid_shape))
    x = keras.layers.Conv2D(filters[-1], 3, padding="same", name=f"{name}_conv")(inputs)
    for index in range(residual_blocks):
        x = _plain_residual_block(x, filters[-1] // 2, f"{name}_residual{index}")
    x = keras.layers.Activation("relu")(x)
    widths = list(reversed(filters))[1:] + [image_shape[-1]]
    for index, width in enumerate(widths):
        x = keras.layers.Conv2DTranspose(width, 4, strides=2, padding="same",
                                         name=f"{name}_up{index}")(x)
        if index < len(widths) - 1:
            x = keras.layers.Activation("relu")(x)
    return keras.Model(inputs, x, name=name)


# -- a small U-Net for diffusion models (Ho et al. 2020, after PixelCNN++ / Wide ResNets) --------


@keras.saving.register_keras_serializable(package="aigc_zoo")
class SinusoidalEmbedding(keras.layers.Layer):
    """Transformer-style sinusoidal features of a scalar per example (Vaswani et al. 2017).

    Maps t [batch] to [batch, dim]: sin and cos of t * 10000^(-i / (dim / 2 - 1)), the
    diffusion timestep embedding of Ho et al. (2020).

    Args:
        dim: output features (even).
        max_period: the longest wavelength.
    """

    def __init__(self, dim: int, *, max_period: float = 10000.0, **kwargs):
        super().__init__(**kwargs)
        if dim % 2 or dim < 4:
            raise ValueError(f"embedding dim must be even and >= 4, got {dim}")
        self.dim = dim
        self.max_period = max_period

    def call(self, t):
        half = self.dim // 2
        exponents = keras.ops.arange(half, dtype="float32") / (half - 1)
        frequencies = keras.ops.exp(-math.log(self.max_period) * exponents)
        angles = keras.ops.cast(t, "float32")[:, None] * frequencies[None, :]
        return keras.ops.concatenate([keras.ops.sin(angles), keras.ops.cos(angles)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "max_period": self.max_period}


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 when they divide the channels (8 groups of >= 4), else fewer."""
    for groups in (8, 4, 2):
        if channels % groups == 0 and channels // groups >= 2:
            return groups
    return 1


def _residual_block(x, embedding, channels: int, dropout: float, name: str):
    """GroupNorm-SiLU-conv twice, with the (time, class) embedding added in between."""
    skip = x
    h = keras.layers.GroupNormalization(_groups(x.shape[-1]), name=f"{name}_norm1")(x)
    h = keras.layers.Activation("silu")(h)
    h = keras.layers.Conv2D(channels, 3, padding="same", name=f"{name}_conv1")(h)
    if embedding is not None:  # None: a U-Net without timestep (`unet(timestep=False)`)
        shift = keras.layers.Dense(channels, name=f"{name}_embedding")(embedding)
        h = keras.layers.Add()([h, keras.layers.Reshape((1, 1, channels))(shift)])
    h = keras.layers.GroupNormalization(_groups(channels), name=f"{name}_norm2")(h)
    h = keras.layers.Activation("silu")(h)
    if dropout:
        h = keras.layers.Dropout(dropout)(h)
    # Zero-initialised: each block starts as the identity, which steadies early training.
    h = keras.layers.Conv2D(channels, 3, padding="same", kernel_initializer="zeros",
                            name=f"{name}_conv2")(h)
    if skip.shape[-1] != channels:
        skip = keras.layers.Conv2D(channels, 1, name=f"{name}_skip")(skip)
    return keras.layers.Add()([skip, h])


def _attention_block(x, heads: int, name: str):
    """Self-attention over the H*W positions, with a residual connection."""
    height, width, channels = x.shape[1:]
    h = keras.layers.GroupNormalization(_groups(channels), name=f"{name}_norm")(x)
    h = keras.layers.Reshape((height * width, channels))(h)
    h = keras.layers.MultiHeadAttention(heads, channels // heads, name=f"{name}_attention")(h, h)
    h = keras.layers.Reshape((height, width, channels))(h)
    return keras.layers.Add()([x, h])


@keras.saving.register_keras_serializable(package="aigc_zoo")
class CrossAttention(keras.layers.Layer):
    """x + attention(norm(x) -> context) over the H*W positions of x [B, H, W, C], to a context
    [B, L, D] whose keys a boolean mask [B, L] keeps (the U-Net's text conditioning).

    Args:
        heads: attention heads (dividing C).
    """

    def __init__(self, heads: int, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads

    def build(self, input_shape):
        x_shape, context_shape = input_shape[0], input_shape[1]
        channels = x_shape[-1]
        self.norm = keras.layers.GroupNormalization(_groups(channels), name="norm")
        self.norm.build(x_shape)
        self.attention = keras.layers.MultiHeadAttention(self.heads, channels // self.heads,
                                                         name="attention")
        self.attention.build((None, None, channels), (None, None, context_shape[-1]))
        self.built = True

    def call(self, inputs):
        x, context, mask = inputs
        height, width, channels = x.shape[1], x.shape[2], x.shape[3]
        h = tf.reshape(self.norm(x), [-1, height * width, channels])
        allowed = tf.tile(tf.cast(mask, tf.bool)[:, None, :], [1, height * width, 1])
        h = self.attention(h, tf.cast(context, h.dtype), attention_mask=allowed)
        return x + tf.reshape(h, [-1, height, width, channels])

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "heads": self.heads}


def _cross_attention(x, context, heads: int, name: str):
    """`CrossAttention` of x to the U-Net's (context, mask), or x itself without a context."""
    if context is None:
        return x
    return CrossAttention(heads, name=name)([x, *context])


def unet(image_shape: Sequence[int], widths: Sequence[int], *, blocks_per_level: int = 1,
         attention: bool = True, attention_heads: int = 4, embedding_dim: int = 128,
         num_classes: int | None = None, dropout: float = 0.0, timestep: bool = True,
         output_channels: int | None = None, context_dim: int | None = None,
         name: str = "unet") -> keras.Model:
    """A small U-Net denoiser: [x_t, t(, label)] -> a tensor shaped like x_t.

    Level i works at resolution H / 2^i with `widths[i]` channels and `blocks_per_level`
    residual blocks on the way down (`blocks_per_level + 1` on the way up, each taking a skip
    connection); the middle is residual, attention (if `attention`), residual at the lowest
    resolution, where the residual blocks also get attention. The timestep's sinusoidal
    embedding goes through a 2-layer MLP and, with `num_classes`, a learned class embedding
    is added to it; label `num_classes` is the "null" class of classifier-free guidance.

    Args:
        image_shape: (H, W, C) of x_t; H and W must halve len(widths) - 1 times.
        widths: channels per resolution, from the highest resolution down.
        blocks_per_level: residual blocks per level on the way down.
        attention: self-attention at the lowest resolution.
        attention_heads: heads of each attention layer (must divide the lowest width).
        embedding_dim: width of the time (and class) embedding.
        num_classes: None for an unconditional network; else labels in [0, num_classes].
        dropout: dropout rate inside the residual blocks.
        timestep: False makes a plain image-to-image U-Net, x -> y, with no time (or class)
            embedding: the generator of pix2pix (`models.image_to_image`).
        output_channels: channels of the output (default: the input's C); SR3's input holds
            the noisy image and its condition, its output the noise of the image alone.
        context_dim: with a value, every residual block is followed by cross-attention from
            the image positions to a context sequence [B, L, context_dim] (a text encoder's
            features) whose keys a boolean context_mask [B, L] keeps (Rombach et al. 2022);
            these are two more inputs, after the label.
        name: the model's name.
    Returns:
        A functional model taking [x_t float32 [B, H, W, C], t float32 [B](, label int32 [B])
        (, context, context_mask)], or x alone without `timestep`.

    H and W need not halve evenly: a stride-2 convolution rounds an odd size up, and the up
    path crops its upsampled map to the skip's size (a 7x7 latent grid runs at 7, 4, 2). For
    sizes that halve evenly no crop is made, so those networks are unchanged.
    """
    _check_unet(image_shape, widths, blocks_per_level, attention, attention_heads)
    x_input, embedding, inputs, context = _unet_inputs(
        image_shape, widths, attention_heads=attention_heads, embedding_dim=embedding_dim,
        num_classes=num_classes, timestep=timestep, context_dim=context_dim)
    h = _unet_body(x_input, embedding, widths, blocks_per_level=blocks_per_level,
                   attention=attention, attention_heads=attention_heads, dropout=dropout,
                   context=context)
    h = keras.layers.GroupNormalization(_groups(widths[0]), name="norm_out")(h)
    h = keras.layers.Activation("silu")(h)
    outputs = keras.layers.Conv2D(output_channels or image_shape[-1], 3, padding="same",
                                  kernel_initializer="zeros", name="conv_out")(h)
    return keras.Model(inputs, outputs, name=name)


def _check_unet(image_shape: Sequence[int], widths: Sequence[int], blocks_per_level: int,
                attention: bool, attention_heads: int) -> None:
    """`UserError` for U-Net arguments no network can be built with."""
    if not widths or min(widths) < 1 or blocks_per_level < 1:
        raise UserError(f"bad U-Net widths={tuple(widths)!r} / blocks_per_level="
                        f"{blocks_per_level}: expected positive values, e.g. 32,64,64 and 1")
    if attention and widths[-1] % attention_heads:
        raise UserError(f"the lowest width {widths[-1]} is not divisible by "
                        f"{attention_heads} attention heads")
    if len(image_shape) != 3:
        check_downsampling(image_shape, 0)  # its error for data that are not images


def _unet_inputs(image_shape: Sequence[int], widths: Sequence[int], *, attention_heads: int,
                 embedding_dim: int, num_classes: int | None, timestep: bool,
                 context_dim: int | None):
    """The U-Net's inputs and conditioning: x_t, the embedding, all inputs and the context."""
    x_input = keras.Input(tuple(image_shape), name="x_t")
    if timestep:
        t_input = keras.Input((), name="t")
        embedding, label_inputs = _conditioning(t_input, embedding_dim, num_classes)
        inputs = [x_input, t_input, *label_inputs]
    else:
        if num_classes or context_dim:
            raise ValueError("a U-Net without timestep takes no labels or context")
        embedding, inputs = None, x_input
    context = None
    if context_dim:
        if any(w % attention_heads for w in widths):
            raise UserError(f"U-Net widths {tuple(widths)!r} are not all divisible by "
                            f"{attention_heads} attention heads, which cross-attention needs")
        context = (keras.Input((None, context_dim), name="context"),
                   keras.Input((None,), dtype="bool", name="context_mask"))
        inputs = [*inputs, *context]
    return x_input, embedding, inputs, context


def _conditioning(t_input, embedding_dim: int, num_classes: int | None):
    """The U-Net's conditioning vector: the timestep's features through a 2-layer MLP, plus a
    learned class embedding with `num_classes`; returns it and the label input (if any)."""
    embedding = SinusoidalEmbedding(embedding_dim, name="time_features")(t_input)
    embedding = keras.layers.Dense(embedding_dim, activation="silu", name="time_mlp1")(embedding)
    embedding = keras.layers.Dense(embedding_dim, name="time_mlp2")(embedding)
    label_inputs = []
    if num_classes:
        label_input = keras.Input((), dtype="int32", name="label")
        label_inputs.append(label_input)
        labels = keras.layers.Embedding(num_classes + 1, embedding_dim,
                                        name="class_embedding")(label_input)
        embedding = keras.layers.Add()([embedding, labels])
    return keras.layers.Activation("silu")(embedding), label_inputs


def _unet_body(x_input, embedding, widths: Sequence[int], *, blocks_per_level: int,
               attention: bool, attention_heads: int, dropout: float, context=None):
    """Down path with skips, middle, up path (see `unet`); layers made in a fixed order."""
    lowest = len(widths) - 1
    h = keras.layers.Conv2D(widths[0], 3, padding="same", name="conv_in")(x_input)
    skips = [h]
    for level, channels in enumerate(widths):
        for block in range(blocks_per_level):
            h = _residual_block(h, embedding, channels, dropout, f"down{level}_{block}")
            h = _cross_attention(h, context, attention_heads, f"down{level}_{block}_cross")
            if attention and level == lowest:
                h = _attention_block(h, attention_heads, f"down{level}_{block}_attn")
            skips.append(h)
        if level < lowest:
            h = keras.layers.Conv2D(channels, 3, strides=2, padding="same",
                                    name=f"downsample{level}")(h)
            skips.append(h)
    h = _residual_block(h, embedding, widths[-1], dropout, "middle1")
    h = _cross_attention(h, context, attention_heads, "middle1_cross")
    if attention:
        h = _attention_block(h, attention_heads, "middle_attn")
    h = _residual_block(h, embedding, widths[-1], dropout, "middle2")
    for level in reversed(range(len(widths))):
        for block in range(blocks_per_level + 1):
            h = keras.layers.Concatenate()([h, skips.pop()])
            h = _residual_block(h, embedding, widths[level], dropout, f"up{level}_{block}")
            h = _cross_attention(h, context, attention_heads, f"up{level}_{block}_cross")
            if attention and level == lowest:
                h = _attention_block(h, attention_heads, f"up{level}_{block}_attn")
        if level > 0:
            h = keras.layers.UpSampling2D(2, name=f"upsample{level}")(h)
            # An odd size was rounded up on the way down: back to the skip's size.
            extra = (h.shape[1] - skips[-1].shape[1], h.shape[2] - skips[-1].shape[2])
            if any(extra):
                h = keras.layers.Cropping2D(((0, extra[0]), (0, extra[1])),
                                            name=f"crop{level}")(h)
            h = keras.layers.Conv2D(widths[level], 3, padding="same", name=f"upconv{level}")(h)
    return h


# -- a pre-norm transformer block (GPT-2, Radford et al. 2019) -----------------------------------


@keras.saving.register_keras_serializable(package="aigc_zoo")
class TransformerBlock(keras.layers.Layer):
    """x + attention(norm(x)), then x + mlp(norm(x)), over sequences [batch, length, width].

    `causal` blocks let position i attend to positions <= i only (a decoder, GPT); the others
    attend everywhere (an encoder), optionally only to the keys a `key_mask` [batch, length]
    keeps.
    A causal block can also run one position at a time (`step`) with a key/value cache, which
    gives what `call` gives for that position: the sampler of an autoregressive model (after
    `prefill` has run a given prefix, such as a prompt, in one pass).

    Args:
        width: features per position (divisible by `heads`).
        heads: attention heads.
        mlp_ratio: the MLP's hidden width over `width`.
        causal: mask attention to earlier positions.
    """

    def __init__(self, width: int, heads: int, *, mlp_ratio: int = 4, causal: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.width, self.heads, self.mlp_ratio, self.causal = width, heads, mlp_ratio, causal
        self.norm_attention = keras.layers.LayerNormalization(epsilon=1e-5, name="norm_attention")
        self.qkv = keras.layers.Dense(3 * width, name="qkv")
        self.projection = keras.layers.Dense(width, name="projection")
        self.norm_mlp = keras.layers.LayerNormalization(epsilon=1e-5, name="norm_mlp")
        self.hidden = keras.layers.Dense(mlp_ratio * width, activation="gelu", name="hidden")
        self.output_layer = keras.layers.Dense(width, name="output")

    def build(self, input_shape=None):
        shape = (None, None, self.width)
        for layer in (self.norm_attention, self.qkv, self.projection, self.norm_mlp,
                      self.hidden):
            layer.build(shape)
        self.output_layer.build((None, None, self.mlp_ratio * self.width))
        self.built = True

    def _split_heads(self, x: tf.Tensor) -> list[tf.Tensor]:
        """q, k, v [batch, heads, length, width / heads] of the normalised input."""
        qkv = self.qkv(self.norm_attention(x))
        batch, length = tf.shape(qkv)[0], tf.shape(qkv)[1]
        qkv = tf.reshape(qkv, [batch, length, 3, self.heads, self.width // self.heads])
        return tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4]))

    def _attend(self, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, allowed: tf.Tensor
                ) -> tf.Tensor:
        """Softmax attention [batch, queries, width]; `allowed` broadcasts to the scores
        [batch, heads, queries, keys]. The softmax is in float32 under mixed precision."""
        scale = 1.0 / math.sqrt(self.width // self.heads)
        scores = tf.cast(tf.matmul(q, k, transpose_b=True), tf.float32) * scale
        weights = tf.nn.softmax(tf.where(allowed, scores, -1e9), axis=-1)
        out = tf.matmul(tf.cast(weights, v.dtype), v)
        batch, queries = tf.shape(out)[0], tf.shape(out)[2]
        return tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [batch, queries, self.width])

    def _mlp_residual(self, x: tf.Tensor) -> tf.Tensor:
        return x + self.output_layer(self.hidden(self.norm_mlp(x)))

    @staticmethod
    def _causal_mask(length: tf.Tensor | int) -> tf.Tensor:
        """[1, 1, length, length]: query i may see keys j <= i."""
        return tf.cast(tf.linalg.band_part(tf.ones([length, length]), -1, 0), tf.bool)[None, None]

    def call(self, x: tf.Tensor, key_mask: tf.Tensor | None = None) -> tf.Tensor:
        q, k, v = self._split_heads(x)
        length = tf.shape(x)[1]
        allowed = tf.ones([1, 1, length, length], tf.bool)
        if self.causal:
            allowed = self._causal_mask(length)
        if key_mask is not None:  # not Keras' `mask`, which Keras would propagate
            allowed = tf.logical_and(allowed, tf.cast(key_mask, tf.bool)[:, None, None, :])
        x = x + self.projection(self._attend(q, k, v, allowed))
        return self._mlp_residual(x)

    def empty_cache(self, batch: tf.Tensor, length: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Keys and values [batch, heads, length, width / heads] of no position yet."""
        shape = tf.stack([batch, self.heads, length, self.width // self.heads])
        zeros = tf.zeros(shape, self.compute_dtype)
        return zeros, zeros

    def prefill(self, x: tf.Tensor, cache: tuple[tf.Tensor, tf.Tensor]
                ) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
        """The outputs of the first positions x [batch, p, width] (p static), as `call` gives
        them, and the cache holding their keys and values: a prompt in one pass, then `step`."""
        if not self.causal:
            raise ValueError("prefill() is for causal blocks: a position may not see later ones")
        q, k, v = self._split_heads(x)
        keys, values = cache
        length = x.shape[1]
        keys = tf.concat([k, keys[:, :, length:]], axis=2)
        values = tf.concat([v, values[:, :, length:]], axis=2)
        x = x + self.projection(self._attend(q, k, v, self._causal_mask(length)))
        return self._mlp_residual(x), (keys, values)

    def step(self, x: tf.Tensor, cache: tuple[tf.Tensor, tf.Tensor], position: tf.Tensor
             ) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
        """The output at `position` for its input x [batch, 1, width], given the cache of the
        earlier positions' keys and values; returns it and the cache with this position's."""
        if not self.causal:
            raise ValueError("step() is for causal blocks: a position may not see later ones")
        q, k, v = self._split_heads(x)
        keys, values = cache
        length = tf.shape(keys)[2]
        here = tf.cast(tf.equal(tf.range(length), position), keys.dtype)[None, None, :, None]
        keys = keys * (1 - here) + k * here
        values = values * (1 - here) + v * here
        allowed = (tf.range(length) <= position)[None, None, None, :]
        x = x + self.projection(self._attend(q, keys, values, allowed))
        return self._mlp_residual(x), (keys, values)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "heads": self.heads,
                "mlp_ratio": self.mlp_ratio, "causal": self.causal}
