"""A DALL-E-style transformer, `dalle` (Ramesh et al. 2021, "Zero-Shot Text-to-Image
Generation", at miniature scale): `vqgpt`'s GPT over a trained VQ-VAE's codes with a caption's
tokens as the prefix instead of a class token.

One causal sequence holds the caption's `text_max_length` token ids (an
`aigc_zoo.text.Tokenizer` encoding: words, then padding) and the image's codes in raster
order: log p(c | text) = sum_i log p(c_i | text, c_<i). Padding positions are tokens like any
other, each with its own learned position, as the paper's per-position padding tokens; the
text has its own embedding table (`CodeTransformer`'s `tokens`), the codes theirs.

Attention is causal over the text too, as in the paper, rather than a prefix with full
attention among the text tokens: the prompt is a handful of words, so what a text token misses
of later words the code positions still see (each sees the whole prompt), and a causal prefix
runs through the same blocks, masks and key/value cache as the codes, in one `prefill` pass.

The loss is on the image codes only: the paper also models the text (weight 1/8) because it
trains on web captions at scale; here the prompt is always given at sampling and never drawn,
so a text loss would only spend capacity. In training a share `label_dropout` of the prompts is
replaced by the null prompt (token 1, then padding: `text_encoder.null_prompts`), so the same
network models the codes unconditionally, and sampling guides on the logits between the
prompt and the null prompt (`guidance` 0: the null prompt, 1: the prompt, above: guided), in
vqgpt's compiled, cached sampling loop (`temperature`, `top_k` and `sample_cache` as there).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import registry
from aigc_zoo.models import base, text_encoder, vqgpt

CONDITIONINGS = ("text",)  # unconditional or class-conditional codes: `vqgpt`


@dataclasses.dataclass
class DALLEConfig(vqgpt.VQGPTConfig):
    """Hyperparameters of the text-to-codes transformer: `VQGPTConfig`'s, with a text prefix.

    Run: `python -m aigc_zoo.run --model=dalle --set autoencoder=<a trained vqvae's workdir>`
    on a captioned dataset.

    Args:
        conditioning: one of `CONDITIONINGS`.
        text_vocabulary_size: the tokenizer's vocabulary size (token ids in [0, size)); 0: not
            known yet (the runner fills it in from the tokenizer it builds).
        text_max_length: the tokenizer's `max_length` (the prefix's positions); 0: the longest
            training caption's, filled in by the runner (a larger value allows longer prompts).
        held_out_combinations: caption phrases (e.g. "slanted seven") whose training examples are
            dropped, as `ldm`'s (compositional generalisation, measured by the prompt-agreement
            evaluation).
        label_dropout: share of training prompts replaced by the null prompt.
        (the rest: see `VQGPTConfig`.)
    """

    conditioning: str = "text"
    text_vocabulary_size: int = 0
    text_max_length: int = 0
    held_out_combinations: tuple[str, ...] = ()

    def validate(self) -> None:
        super().validate()
        config_lib.check_choice("conditioning", self.conditioning, CONDITIONINGS)
        text_encoder.check_text_fields(self)  # 0 sizes: not known yet (a default config)


@registry.register_model("dalle")
class DALLE(vqgpt.VQGPT):
    """Text-conditional GPT prior over a trained VQ-VAE's code grid, decoded by the VQ-VAE.

    Args:
        config: a `DALLEConfig`.
        **kwargs: `image_shape`, `num_classes` (unused), `seed`, `stages` (the
            `autoencoder`), as for `GenerativeModel`.
    """

    config_class = DALLEConfig
    conditional = False  # no labels: the prompts' tokens condition it

    def __init__(self, config: DALLEConfig, **kwargs: Any):
        text_encoder.check_sizes_known(config, type(self).takes_text(config))
        super().__init__(config, **kwargs)

    def prefix_arguments(self) -> dict[str, int]:
        return {"vocabulary_size": self.config.text_vocabulary_size,
                "prefix_length": self.config.text_max_length}

    @classmethod
    def check_stages(cls, config: DALLEConfig, image_shape: Sequence[int],
                     num_classes: int | None, stages: dict[str, dict[str, Any]]) -> None:
        vqgpt.check_autoencoder_shape(image_shape, stages)  # labels are not needed

    @classmethod
    def default_config(cls, dataset: str | None = None) -> DALLEConfig:
        config = cls.config_class()
        if dataset == "shapes":
            # Its 20,000 images give 2 epochs of about 600 steps: two-object captions then
            # matched in 8.2% of samples, after 8 epochs in 77.6% (vqvae and dalle in 11 min
            # on the Xeon VM; docs/text_to_image.md).
            config = dataclasses.replace(config, epochs=8)
        return config

    @classmethod
    def tiny_config(cls) -> DALLEConfig:
        # vqgpt's tiny transformer; a 5-word vocabulary of 3-token prompts (the harness feeds
        # made-up ones).
        return DALLEConfig(batch_size=16, epochs=1, steps_per_epoch=3, width=16, layers=1,
                           heads=2, mlp_ratio=2, warmup_steps=2, eval_examples=32,
                           text_vocabulary_size=7, text_max_length=3)

    # -- the prompts ---------------------------------------------------------------------------

    def null_condition(self, condition: tf.Tensor) -> tf.Tensor:
        return text_encoder.null_prompts(tf.shape(condition)[0], self.config.text_max_length)

    def batch_condition(self, batch: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.cast(batch["tokens"], tf.int32)

    def conditioning_specs(self) -> dict[str, tf.TensorSpec]:
        return {"tokens": tf.TensorSpec([None, self.config.text_max_length], tf.int32,
                                        name="tokens")}

    def check_conditioning(self, conditioning: dict[str, Any], num_samples: Any
                           ) -> dict[str, tf.Tensor]:
        return {"tokens": text_encoder.check_tokens(conditioning["tokens"], num_samples,
                                                    self.config.text_vocabulary_size)}

    def sampling_options(self) -> dict[str, base.SamplingOption]:
        options = super().sampling_options()
        options["guidance"] = base.SamplingOption(
            self.config.guidance, tf.float32, "classifier-free guidance scale on the logits "
            "(0: the null prompt, 1: the prompt, above: guided)")
        return options

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate_model(self, dataset: tf.data.Dataset, *, seed: int = 0) -> dict[str, Any]:
        """vqgpt's test NLL in bits per code given the null prompt and under the codes'
        frequencies, and given each image's caption when the batches hold its `tokens`."""
        captioned = "tokens" in dataset.element_spec

        def condition(batch):  # vqgpt's evaluation reads each batch's condition from "label"
            tokens = batch["tokens"] if captioned else self.null_condition(batch["image"])
            return {**batch, "label": tokens}

        results = super().evaluate_model(dataset.map(condition), seed=seed)
        if not captioned:  # it would be the null prompt's again
            del results["nll_bits_per_code"]
        return results
