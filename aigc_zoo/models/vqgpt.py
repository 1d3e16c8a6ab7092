"""A GPT over VQ-VAE codes, `vqgpt`: the two-stage recipe of VQ-VAE priors and DALL-E
(van den Oord et al. 2017; Esser et al. 2021, "Taming Transformers"; Ramesh et al. 2021).

A trained `vqvae` (the first stage, named by `--set autoencoder=<its workdir>`) turns an image
into a grid of codes (7x7 for digits); a small decoder-only transformer (causal self-attention,
learned positions: GPT, Radford et al. 2019, at miniature scale) models the codes in raster
order, log p(c) = sum_i log p(c_i | c_<i, y), and a sample is decoded by the VQ-VAE.

The sequence starts with a class token, the label's embedding, so the model is class-
conditional (`dalle`, aigc_zoo/models/dalle.py, is this model with a caption's tokens as the
prefix instead); in training a share `label_dropout` of the labels is replaced by a null class,
so the same network also models the codes unconditionally, and sampling can mix the two with
classifier-free guidance on the logits (Ho & Salimans 2022; `guidance` 0 is unconditional, 1
conditional, above 1 guided). Each next code is drawn from the guided logits over
`temperature`, restricted to the `top_k` most likely codes (0: all).

Sampling is one compiled loop over the positions for the whole batch. With `sample_cache` (the
default) the prefix runs in one pass that fills each block's cache of keys and values, and
each block keeps those of the positions already drawn, so a position costs one position of
work per block; `sample_cache=False` runs the whole sequence per position,
for comparison (the same codes for a seed in float32).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import keras
import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import optimizers
from aigc_zoo import registry
from aigc_zoo import samplers
from aigc_zoo.errors import UserError
from aigc_zoo.models import base
from aigc_zoo.models import networks


@dataclasses.dataclass
class VQGPTConfig(config_lib.TrainConfig):
    """Hyperparameters of the transformer prior over a VQ-VAE's codes.

    Run: `python -m aigc_zoo.run --model=vqgpt --set autoencoder=<a trained vqvae's workdir>`

    Args:
        autoencoder: the workdir of a trained `vqvae` run (the first stage).
        width: features per position.
        layers: transformer blocks.
        heads: attention heads per block.
        mlp_ratio: each block's MLP hidden width over `width`.
        label_dropout: share of training labels replaced by the null class.
        learning_rate: AdamW's step size (after a linear warm-up of `warmup_steps`).
        warmup_steps: train steps of the learning rate's warm-up.
        weight_decay: AdamW's decoupled weight decay.
        clip_norm: the gradient's global-norm clip (0: none).
        guidance: default classifier-free guidance scale of `generate`.
        temperature: default divisor of the logits in sampling.
        top_k: default number of most likely codes sampled from (0: all).
        sample_cache: sample with the key/value cache (see the module's doc).
        eval_examples: test examples used by `--mode=eval` (0: the whole split).
    """

    autoencoder: str = config_lib.stage_field(("vqvae",))
    batch_size: int = 64
    epochs: int = 2
    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    label_dropout: float = 0.1
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    guidance: float = config_lib.sampling_field(1.5)
    temperature: float = config_lib.sampling_field(1.0)
    top_k: int = config_lib.sampling_field(0)
    sample_cache: bool = config_lib.sampling_field(True)
    eval_examples: int = config_lib.sampling_field(0)

    def validate(self) -> None:
        super().validate()
        for name in ("width", "layers", "heads", "mlp_ratio", "learning_rate"):
            config_lib.check_positive(name, getattr(self, name))
        if self.width % self.heads:
            raise UserError(f"bad value width={self.width}: expected a multiple of heads="
                            f"{self.heads}")
        config_lib.check_range("label_dropout", self.label_dropout, 0.0, 1.0)
        config_lib.check_range("warmup_steps", self.warmup_steps, 0, float("inf"))
        config_lib.check_range("weight_decay", self.weight_decay, 0.0, float("inf"))
        config_lib.check_range("clip_norm", self.clip_norm, 0.0, float("inf"))
        _check_sampling(self.guidance, self.temperature, self.top_k, error=UserError)
        config_lib.check_range("eval_examples", self.eval_examples, 0, float("inf"))


def check_autoencoder_shape(image_shape: Sequence[int], stages: dict[str, dict[str, Any]]
                            ) -> None:
    """The first stage was trained on this run's image shape (else `UserError`)."""
    shape = tuple(stages["autoencoder"]["image_shape"])
    if shape != tuple(image_shape):
        raise UserError(f"the autoencoder was trained on images of shape {shape}, this run's "
                        f"are {tuple(image_shape)}; train a vqvae on this data first")


def _check_sampling(guidance: float, temperature: float, top_k: int, *,
                    error: type[Exception] = ValueError) -> None:
    """The sampling values' checks: `ValueError` for `generate`, `UserError` for a config."""
    if not (math.isfinite(guidance) and guidance >= 0):
        raise error(f"bad value guidance={guidance!r}: expected a finite number >= 0")
    if not (math.isfinite(temperature) and temperature > 0):
        raise error(f"bad value temperature={temperature!r}: expected a finite number > 0")
    if top_k < 0:
        raise error(f"bad value top_k={top_k!r}: expected 0 (all codes) or more")


def filter_logits(logits: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor) -> tf.Tensor:
    """`logits` [batch, K] over `temperature`, with every code outside the `top_k` largest at
    -inf (`top_k` 0 or >= K keeps all; ties with the k-th largest are kept)."""
    logits = logits / temperature
    size = tf.shape(logits)[-1]

    def cut():
        # A sort, not tf.math.top_k: k is a runtime input, which XLA's top_k cannot take.
        threshold = tf.gather(tf.sort(logits, direction="DESCENDING"), top_k - 1, axis=-1)
        return tf.where(logits >= threshold[:, None], logits, -math.inf)

    # Only sort when it cuts: a sort of every position's logits was 11% of vqgpt's guided
    # sampling time and 24% at guidance 1 (the default top_k 0 keeps all; docs/autoregressive.md).
    return tf.cond(tf.logical_or(top_k <= 0, top_k >= size), lambda: logits, cut)


@keras.saving.register_keras_serializable(package="aigc_zoo")
class _WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warm-up from 0 to `rate` over `steps` optimizer steps, then `rate`."""

    def __init__(self, rate: float, steps: int):
        self.rate, self.steps = float(rate), int(steps)

    def __call__(self, step):
        if not self.steps:
            return tf.constant(self.rate, tf.float32)
        fraction = tf.minimum(tf.cast(step + 1, tf.float32) / self.steps, 1.0)
        return self.rate * fraction

    def get_config(self):
        return {"rate": self.rate, "steps": self.steps}


@keras.saving.register_keras_serializable(package="aigc_zoo")
class CodeTransformer(keras.layers.Layer):
    """A conditioning prefix and codes [batch, n] to the logits [batch, n + 1, K] of each next
    code, in one causal sequence.

    The prefix is a class token (`num_classes`: vqgpt; the label's embedding, the label
    `num_classes` being the null class) or a caption's tokens (`vocabulary_size` and
    `prefix_length`: dalle; ids from `aigc_zoo.text.Tokenizer`, padding included, each with
    its own learned position). Positions 0 .. P - 1 hold the prefix, position P - 1 + i code i;
    the logits of position P - 1 + i predict code i, so only code positions are scored.
    """

    def __init__(self, *, codebook_size: int, length: int, width: int, layers: int,
                 heads: int, mlp_ratio: int, num_classes: int = 0, vocabulary_size: int = 0,
                 prefix_length: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        if bool(num_classes) == bool(vocabulary_size):
            raise ValueError("the prefix is either a class token (num_classes) or text "
                             "(vocabulary_size)")
        self.codebook_size, self.length, self.width = codebook_size, length, width
        self.prefix_length = prefix_length if vocabulary_size else 1
        self.code_embedding = keras.layers.Embedding(codebook_size, width, name="codes")
        # Attribute names are the checkpoints' paths: vqgpt's stay what they were.
        if vocabulary_size:
            self.token_embedding = keras.layers.Embedding(vocabulary_size, width, name="tokens")
        else:
            self.class_embedding = keras.layers.Embedding(num_classes + 1, width,
                                                          name="classes")
        self.blocks = [networks.TransformerBlock(width, heads, mlp_ratio=mlp_ratio,
                                                 name=f"block_{i}") for i in range(layers)]
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")
        self.head = keras.layers.Dense(codebook_size, name="head")

    @property
    def text(self) -> bool:
        return hasattr(self, "token_embedding")

    def build(self, input_shape=None):
        self.positions = self.add_weight(
            shape=(self.prefix_length + self.length - 1, self.width), name="positions",
            initializer=keras.initializers.RandomNormal(stddev=0.02))
        self.code_embedding.build((None, None))
        if self.text:
            self.token_embedding.build((None, self.prefix_length))
        else:
            self.class_embedding.build((None,))
        for layer in (*self.blocks, self.norm, self.head):
            layer.build((None, None, self.width))
        self.built = True

    def prefix(self, condition: tf.Tensor) -> tf.Tensor:
        """The prefix's embeddings [batch, P, width] of labels [batch] or tokens [batch, P]."""
        if self.text:
            return self.token_embedding(condition)
        return self.class_embedding(condition)[:, None]

    def _logits(self, h: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.head(self.norm(h)), tf.float32)

    def call(self, condition: tf.Tensor, codes: tf.Tensor) -> tf.Tensor:
        h = tf.concat([self.prefix(condition), self.code_embedding(codes)], 1)
        h = h + tf.cast(self.positions[:tf.shape(h)[1]], h.dtype)[None]
        for block in self.blocks:
            h = block(h)
        return self._logits(h[:, self.prefix_length - 1:])

    def sample_loop(self, condition: tf.Tensor, pick: Any, *, cache: bool) -> tf.Tensor:
        """Codes [batch', length] drawn position by position; `pick(logits, i)` draws code i
        from its logits [batch, K] (batch' = batch, or 2 * batch for guidance: the condition
        then holds the prompts or classes, then the null ones, and pick returns the batch's
        codes, which both halves continue from)."""
        rows = tf.shape(condition)[0]
        drawn = tf.zeros(tf.stack([rows, self.length]), tf.int32)
        positions = tf.range(self.length)
        if not cache:
            def body(i, drawn):
                logits = self.call(condition, drawn[:, :-1])[:, i]
                return i + 1, tf.where(positions[None] == i, pick(logits, i)[:, None], drawn)
            return tf.while_loop(lambda i, _: i < self.length, body, [0, drawn])[1]

        # The prefix in one causal pass fills the caches and gives code 0's logits; then one
        # position per step, each seeing the cached keys and values of all earlier ones.
        total = self.prefix_length + self.length - 1
        h = self.prefix(condition)
        h = h + tf.cast(self.positions[:self.prefix_length], h.dtype)[None]
        caches = []
        for block in self.blocks:
            h, block_cache = block.prefill(h, block.empty_cache(rows, total))
            caches.append(block_cache)
        first = pick(self._logits(h[:, -1]), 0)
        drawn = tf.where(positions[None] == 0, first[:, None], drawn)

        def cached_body(i, drawn, caches):
            position = self.prefix_length - 1 + i
            h = self.code_embedding(tf.gather(drawn, i - 1, axis=1))
            h = (h + tf.cast(tf.gather(self.positions, position), h.dtype))[:, None]
            updated = []
            for block, block_cache in zip(self.blocks, caches):
                h, block_cache = block.step(h, block_cache, position)
                updated.append(block_cache)
            codes = pick(self._logits(h)[:, 0], i)
            return i + 1, tf.where(positions[None] == i, codes[:, None], drawn), updated

        return tf.while_loop(lambda i, *_: i < self.length, cached_body,
                             [1, drawn, caches])[1]


@registry.register_model("vqgpt")
class VQGPT(base.GenerativeModel):
    """Class-conditional GPT prior over a trained VQ-VAE's code grid, decoded by the VQ-VAE.

    Args:
        config: a `VQGPTConfig`.
        **kwargs: `image_shape`, `num_classes`, `seed`, `stages` (the `autoencoder`), as for
            `GenerativeModel`.
    """

    config_class = VQGPTConfig
    loss_names = ("loss", "bits_per_code")
    conditional = True

    def __init__(self, config: VQGPTConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        height, width = self.autoencoder.grid_shape
        self.transformer = CodeTransformer(
            codebook_size=self.autoencoder.config.codebook_size, length=height * width,
            width=config.width, layers=config.layers, heads=config.heads,
            mlp_ratio=config.mlp_ratio, name="transformer", **self.prefix_arguments())
        self.transformer.build()

    def prefix_arguments(self) -> dict[str, int]:
        """`CodeTransformer`'s prefix: here the class token."""
        return {"num_classes": self.num_classes}

    @classmethod
    def knobs(cls, config: VQGPTConfig, image_shape: Sequence[int]) -> base.Knobs:
        # Transformer passes per sample (with the cache each position is computed once, about
        # one pass, counted as 2 for the sequential steps); guidance doubles the batch. The
        # grid is the default VQ-VAE's (a quarter of the image's side): knobs see no stages.
        height, width = image_shape[0] // 4, image_shape[1] // 4
        cost = 2.0 if config.sample_cache else float(height * width)
        # 49 steps of small matmuls: XLA fuses their per-op overhead away (2-3x the images/s of
        # graph mode on a 2-core CPU, docs/autoregressive.md).
        return base.Knobs(sampling_cost=cost * (1 if config.guidance in (0.0, 1.0) else 2),
                          evaluates=True, sampling_xla_on_cpu=True)

    @classmethod
    def check_stages(cls, config: VQGPTConfig, image_shape: Sequence[int],
                     num_classes: int | None, stages: dict[str, dict[str, Any]]) -> None:
        check_autoencoder_shape(image_shape, stages)
        if not num_classes:
            raise UserError("vqgpt is class-conditional and this dataset has no labels")

    @classmethod
    def tiny_config(cls) -> VQGPTConfig:
        return VQGPTConfig(batch_size=16, epochs=1, steps_per_epoch=3, width=16, layers=1,
                           heads=2, mlp_ratio=2, warmup_steps=2, eval_examples=32)

    def update_groups(self) -> list[base.UpdateGroup]:
        schedule = _WarmUp(self.config.learning_rate, self.config.warmup_steps)
        optimizer = optimizers.AdamW(schedule, weight_decay=self.config.weight_decay,
                                           beta_2=0.95)
        # Only the transformer trains: the autoencoder is frozen.
        return [base.UpdateGroup("vqgpt", self.transformer.trainable_variables, optimizer,
                                 loss="loss", clip_norm=self.config.clip_norm)]

    # -- objective -----------------------------------------------------------------------------

    def codes(self, images: tf.Tensor) -> tf.Tensor:
        """The autoencoder's codes of images in [-1, 1], flattened in raster order [batch, n]."""
        codes = self.autoencoder.encode(images)
        return tf.reshape(codes, [tf.shape(codes)[0], -1])

    def log_likelihood(self, codes: tf.Tensor, condition: tf.Tensor) -> tf.Tensor:
        """log p(codes | condition) per sequence, in nats: the codes' positions only (the
        null condition: unconditional)."""
        logits = self.transformer(condition, codes[:, :-1])
        return -tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(codes, logits), 1)

    def null_condition(self, condition: tf.Tensor) -> tf.Tensor:
        """The unconditional branch's condition for each row of `condition`: the null class."""
        return tf.fill(tf.shape(condition), self.num_classes)

    def batch_condition(self, batch: dict[str, tf.Tensor]) -> tf.Tensor:
        """The condition a training or evaluation batch gives: its labels."""
        return tf.cast(batch["label"], tf.int32)

    def compute_losses(self, batch: dict[str, tf.Tensor], *, training: bool,
                       group: str | None = None) -> dict[str, tf.Tensor]:
        codes = self.codes(batch["image"])
        condition = self.batch_condition(batch)
        if training and self.config.label_dropout > 0:
            seed = self.random_seed()
            uniform = self.replica_share(lambda n: tf.random.stateless_uniform([n], seed),
                                         tf.shape(condition)[0])
            dropped = tf.reshape(uniform < self.config.label_dropout,
                                 [-1] + [1] * (condition.shape.rank - 1))
            condition = tf.where(dropped, self.null_condition(condition), condition)
        nll = -tf.reduce_mean(self.log_likelihood(codes, condition)) / self.transformer.length
        return {"loss": nll, "bits_per_code": nll / math.log(2.0)}

    # -- sampling ------------------------------------------------------------------------------

    def sample_tensors(self, num_samples: tf.Tensor, seed: tf.Tensor,
                       conditioning: dict[str, tf.Tensor], *, guidance: tf.Tensor,
                       temperature: tf.Tensor, top_k: tf.Tensor, cache: bool = True
                       ) -> tf.Tensor:
        """Codes drawn position by position in one compiled loop, decoded by the autoencoder."""
        (condition,) = conditioning.values()  # the one conditioning input: labels or tokens
        seed_pair = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        size = self.transformer.codebook_size

        def draw(logits, i):
            # Noise of position i from the seed alone, so both loops draw the same codes.
            uniform = tf.random.stateless_uniform(
                tf.stack([num_samples, size]),
                tf.random.experimental.stateless_fold_in(seed_pair, i), 1e-7, 1.0 - 1e-7)
            gumbel = -tf.math.log(-tf.math.log(uniform))
            filtered = filter_logits(logits, temperature, top_k)
            return tf.argmax(filtered + gumbel, axis=-1, output_type=tf.int32)

        def guided_pick(logits, i):
            conditional, unconditional = tf.split(logits, 2)
            codes = draw(samplers.classifier_free_guidance(unconditional, conditional,
                                                           guidance), i)
            return tf.concat([codes, codes], 0)

        null = self.null_condition(condition)

        def single():  # guidance 0 or 1: one pass, with the null condition or the given one
            chosen = tf.where(tf.equal(guidance, 0.0), null, condition)
            return self.transformer.sample_loop(chosen, draw, cache=cache)

        def guided():
            both = tf.concat([condition, null], 0)
            return self.transformer.sample_loop(both, guided_pick, cache=cache)[:num_samples]

        codes = tf.cond(tf.logical_or(tf.equal(guidance, 0.0), tf.equal(guidance, 1.0)),
                        single, guided)
        height, width = self.autoencoder.grid_shape
        return self.autoencoder.decode(tf.reshape(codes, [-1, height, width]))

    def sampling_options(self) -> dict[str, base.SamplingOption]:
        config = self.config
        return {
            "guidance": base.SamplingOption(
                config.guidance, tf.float32, "classifier-free guidance scale on the logits (0: "
                "unconditional, 1: conditional, above: guided)"),
            "temperature": base.SamplingOption(config.temperature, tf.float32,
                                               "divides the logits (below 1: sharper)"),
            "top_k": base.SamplingOption(config.top_k, tf.int32,
                                         "sample from the k most likely codes (0: all)"),
            "cache": base.SamplingOption(
                config.sample_cache, doc="key/value cache (True) or the whole sequence per "
                "position (False); the same codes either way in float32"),
        }

    def resolve_sampling_options(self, options: dict[str, Any]) -> dict[str, Any]:
        _check_sampling(float(options["guidance"]), float(options["temperature"]),
                        int(options["top_k"]))
        return options

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate_model(self, dataset: tf.data.Dataset, *, seed: int = 0) -> dict[str, Any]:
        """Test NLL of the autoencoder's codes in bits per code: given the label, without it
        (the null class), and under the codes' training frequencies alone (the VQ-VAE's own
        `generate`: the no-prior baseline)."""
        limit = self.config.eval_examples or None
        frequencies = tf.math.log(self.autoencoder.code_frequencies() + 1e-12)

        @tf.function
        def evaluate_batch(images, labels):
            codes = self.codes(images)
            condition = tf.cast(labels, tf.int32)
            return (self.log_likelihood(codes, condition),
                    self.log_likelihood(codes, self.null_condition(condition)),
                    tf.reduce_sum(tf.gather(frequencies, codes), 1))

        totals, count = [0.0, 0.0, 0.0], 0
        for _, images, labels in self.evaluation_batches(dataset, limit):
            for index, value in enumerate(evaluate_batch(images, labels)):
                totals[index] += float(tf.reduce_sum(value))
            count += int(images.shape[0])
        bits = [-total / count / self.transformer.length / math.log(2.0) for total in totals]
        return {"nll_bits_per_code": bits[0], "nll_bits_per_code_unconditional": bits[1],
                "baseline_bits_per_code": bits[2], "codes_per_image": self.transformer.length,
                "num_examples": count}
