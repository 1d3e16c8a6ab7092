"""A small text encoder: token embeddings, learned positions and transformer encoder blocks.

The conditioning network of the text-to-image models (the CLIP/T5 text encoder of Stable
Diffusion and the caption prefix of DALL-E, at miniature scale, trained with the generator
from scratch): token ids [batch, length] from `aigc_zoo.text.Tokenizer` to features
[batch, length, width] and the mask of the positions that hold a word (or the null token),
which cross-attention reads. The blocks are the shared `networks.TransformerBlock`, without
the causal mask, attending only to the kept positions.

Classifier-free guidance (Ho & Salimans 2022) trains one network for both branches:
`drop_prompts` replaces a share of a batch's prompts by the null prompt (the null token, then
padding), which is also what sampling feeds the unconditional branch.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from aigc_zoo.errors import UserError
from aigc_zoo.models import networks

PAD_ID, NULL_ID = 0, 1  # aigc_zoo.text's padding and null-prompt tokens


@keras.saving.register_keras_serializable(package="aigc_zoo")
class TextEncoder(keras.layers.Layer):
    """Token ids [batch, length] to (features [batch, length, width], mask [batch, length]).

    Args:
        vocabulary_size: token ids are in [0, vocabulary_size).
        max_length: the tokenizer's `max_length` (positions learned).
        width: features per token.
        layers: transformer encoder blocks.
        heads: attention heads per block.
        mlp_ratio: each block's MLP hidden width over `width`.
    """

    def __init__(self, vocabulary_size: int, max_length: int, *, width: int = 64,
                 layers: int = 2, heads: int = 4, mlp_ratio: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size, self.max_length = vocabulary_size, max_length
        self.width, self.num_layers, self.heads, self.mlp_ratio = width, layers, heads, mlp_ratio
        self.tokens = keras.layers.Embedding(vocabulary_size, width, name="tokens")
        self.blocks = [networks.TransformerBlock(width, heads, mlp_ratio=mlp_ratio, causal=False,
                                                 name=f"block_{i}") for i in range(layers)]
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")

    def build(self, input_shape=None):
        self.positions = self.add_weight(
            name="positions", shape=(self.max_length, self.width),
            initializer=keras.initializers.RandomNormal(stddev=0.02))
        self.tokens.build((None, self.max_length))
        for block in self.blocks:
            block.build((None, self.max_length, self.width))
        self.norm.build((None, self.max_length, self.width))
        self.built = True

    def call(self, tokens: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        mask = tf.not_equal(tokens, PAD_ID)
        x = self.tokens(tokens) + tf.cast(self.positions, self.compute_dtype)[None]
        for block in self.blocks:
            x = block(x, key_mask=mask)
        return self.norm(x), mask

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "max_length": self.max_length, "width": self.width, "layers": self.num_layers,
                "heads": self.heads, "mlp_ratio": self.mlp_ratio}


def null_prompts(batch: int | tf.Tensor, max_length: int) -> tf.Tensor:
    """int32 [batch, max_length]: the null prompt, as `Tokenizer.null_tokens` makes it."""
    first = tf.fill([batch, 1], NULL_ID)
    return tf.concat([first, tf.zeros([batch, max_length - 1], tf.int32)], axis=1)


def drop_prompts(tokens: tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
    """`tokens` [batch, length] with each row replaced by the null prompt with probability
    `rate` (a stateless draw from the int32 [2] `seed`, so a traced step stays pure)."""
    if rate <= 0:
        return tokens
    batch = tf.shape(tokens)[0]
    dropped = tf.random.stateless_uniform([batch], seed) < rate
    return tf.where(dropped[:, None], null_prompts(batch, tokens.shape[1]), tokens)


def check_tokens(tokens: Any, num_samples: Any, vocabulary_size: int) -> tf.Tensor:
    """Token ids [num_samples, length] as an int32 tensor, checked in eager mode and in a graph
    alike: one row per sample and every id in [0, vocabulary_size), else the failed check's
    `tf.errors.InvalidArgumentError` (checked as int64 first: int32 would wrap 2**32 + 3 to a
    valid 3). The text models' `check_conditioning` of their `tokens` input."""
    tokens = tf.cast(tokens, tf.int64)
    in_range = f"token ids must be in [0, {vocabulary_size})"
    checks = [
        tf.debugging.assert_equal(tf.shape(tokens)[0], tf.cast(num_samples, tf.int32),
                                  message="need one prompt per sample"),
        tf.debugging.assert_greater_equal(tokens, tf.constant(0, tf.int64), message=in_range),
        tf.debugging.assert_less(tokens, tf.constant(vocabulary_size, tf.int64),
                                 message=in_range)]
    # The dependency makes the checks run before any user of the tokens (a wrong count would
    # otherwise fail later with a shape error instead of this message).
    with tf.control_dependencies(checks):
        return tf.cast(tokens, tf.int32)


def check_text_fields(config: Any) -> None:
    """`UserError` for bad text fields of a text model's config (`text_vocabulary_size`,
    `text_max_length`, `held_out_combinations`); 0 sizes mean "not known yet" (the runner
    fills them in from the tokenizer it builds)."""
    from aigc_zoo import text  # the models do not import the tokenizer otherwise
    size, length = config.text_vocabulary_size, config.text_max_length
    if size and size < 3:
        raise UserError(f"bad value text_vocabulary_size={size}: expected 0 (the tokenizer's, "
                        "filled in by the runner) or an integer >= 3")
    if length < 0:
        raise UserError(f"bad value text_max_length={length}: expected 0 (the longest "
                        "training caption's) or an integer >= 1")
    phrases = getattr(config, "held_out_combinations", ())
    if phrases and getattr(config, "conditioning", "text") != "text":
        raise UserError("held_out_combinations is for conditioning=text (it drops training "
                        "examples by their captions)")
    for phrase in phrases:
        if not text.words(phrase):
            raise UserError(f"bad value held_out_combinations: {phrase!r} has no words")


def check_sizes_known(config: Any, takes_text: bool) -> None:
    """`ValueError` when a text model is built before its tokenizer's sizes are in `config`
    (the runner fills them in; in-process, set them from a `text.Tokenizer`)."""
    if takes_text and not (config.text_vocabulary_size and config.text_max_length):
        raise ValueError("a text-conditional model needs text_vocabulary_size and "
                         "text_max_length (a text.Tokenizer's size and max_length); the runner "
                         "fills them in from the training captions")
