"""dalle: the prompt reaches the samples, the null prompt is the unconditional branch, the loss
scores the codes only, causality over prompt and codes, cached against uncached sampling, bad
prompts refused. The shared harness (tests/test_every_model.py) covers training, sampling,
checkpoints, the `.keras` file and the export on a tiny untrained vqvae."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_model
from aigc_zoo.errors import UserError
from aigc_zoo.models import dalle

# The tiny config's 3-token prompts over ids [0, 7): 0 pads, 1 is the null prompt.
PROMPT_A, PROMPT_B, NULL = [2, 3, 0], [4, 5, 6], [1, 0, 0]


def _tokens(prompt, count=2):
    return np.array([prompt] * count, np.int32)


@pytest.fixture(scope="module")
def model():
    """One tiny untrained model (random weights already make every input matter), sampling in
    graph mode: XLA's compile costs 6 CPU-seconds more, and the harness samples with it."""
    built = tiny_model("dalle")
    built.sampling_jit_compile = False
    return built


def _images(count=4):
    return tf.random.stateless_uniform([count, 28, 28, 1], [4, 5], -1.0, 1.0)


def test_the_prompt_reaches_the_samples_and_the_null_prompt_is_the_unconditional_branch(model):
    def sample(prompt, guidance):
        return model.generate(2, seed=3, tokens=_tokens(prompt), guidance=guidance).numpy()

    conditional = sample(PROMPT_A, 1.0)
    assert conditional.shape == (2, 28, 28, 1) and np.all(np.abs(conditional) <= 1)
    assert not np.array_equal(conditional, sample(PROMPT_B, 1.0))
    unconditional = sample(NULL, 1.0)
    np.testing.assert_array_equal(sample(PROMPT_A, 0.0), unconditional)
    np.testing.assert_array_equal(sample(PROMPT_B, 0.0), unconditional)
    assert not np.array_equal(sample(PROMPT_A, 3.0), conditional)


def test_cached_and_uncached_sampling_draw_the_same_codes(model):
    # The loops eagerly with a greedy pick: no second compiled sampler (vqgpt's tests compare
    # the two through `generate`, guidance included); the prompt's prefill is what is new here.
    tokens = tf.constant([PROMPT_A, PROMPT_B, NULL], tf.int32)

    def greedy(logits, i):
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    cached = model.transformer.sample_loop(tokens, greedy, cache=True)
    uncached = model.transformer.sample_loop(tokens, greedy, cache=False)
    assert cached.shape == (3, model.transformer.length)
    np.testing.assert_array_equal(cached.numpy(), uncached.numpy())
    assert not np.array_equal(cached[0].numpy(), cached[1].numpy())


def test_the_loss_scores_the_codes_only_and_drops_prompts_to_the_null_one(model):
    images = _images()
    codes = model.codes(images)
    tokens = _tokens(PROMPT_A, 4)
    length = model.transformer.length
    # One logit row per code (the prefix's last position predicts code 0), none for the text.
    assert model.transformer(tokens, codes[:, :-1]).shape == (4, length, 16)
    for dropout, given in ((0.0, tokens), (1.0, _tokens(NULL, 4))):
        model.config.label_dropout = dropout
        loss = model.compute_losses({"image": images, "tokens": tokens}, training=True)["loss"]
        expected = -tf.reduce_mean(model.log_likelihood(codes, given)) / length
        np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-6)
    model.config.label_dropout = 0.1


def test_a_codes_logits_see_the_whole_prompt_and_only_the_earlier_codes(model):
    codes = model.codes(_images(1))
    logits = model.transformer(_tokens(PROMPT_A, 1), codes[:, :-1]).numpy()[0]
    # The logits of code i depend on codes < i only: changing code 20 changes those of 21 on.
    changed = codes.numpy().copy()
    changed[0, 20] = (changed[0, 20] + 1) % model.transformer.codebook_size
    after = model.transformer(_tokens(PROMPT_A, 1), changed[:, :-1]).numpy()[0]
    np.testing.assert_array_equal(after[:21], logits[:21])
    assert np.abs(after[21:] - logits[21:]).max(axis=-1).min() > 0
    # Every code's logits depend on the prompt, its last word included.
    other = model.transformer(_tokens([2, 3, 4], 1), codes[:, :-1]).numpy()[0]
    assert np.abs(other - logits).max(axis=-1).min() > 0


def test_evaluates_bits_per_code_with_and_without_the_prompt(model):
    batch = {"image": _images(4), "tokens": _tokens(PROMPT_A, 4)}
    scores = model.evaluate_model(tf.data.Dataset.from_tensors(batch))
    assert scores["num_examples"] == 4 and scores["codes_per_image"] == 49
    assert np.isfinite(scores["nll_bits_per_code"])
    assert scores["nll_bits_per_code"] != scores["nll_bits_per_code_unconditional"]
    # Without captions (tokens) only the null prompt's and the frequencies' remain.
    uncaptioned = model.evaluate_model(tf.data.Dataset.from_tensors({"image": _images(4)}))
    assert "nll_bits_per_code" not in uncaptioned
    assert uncaptioned["nll_bits_per_code_unconditional"] == pytest.approx(
        scores["nll_bits_per_code_unconditional"], rel=1e-5)


def test_bad_prompts_and_configs_are_refused(model):
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 7\)"):
        model.generate(2, tokens=_tokens([7, 0, 0]))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 7\)"):
        model.generate(2, tokens=_tokens([-1, 0, 0]))
    with pytest.raises(ValueError, match="need one prompt per sample"):
        model.generate(3, tokens=_tokens(PROMPT_A))
    with pytest.raises(ValueError, match="needs tokens"):
        model.generate(2)
    with pytest.raises(ValueError, match="takes tokens, not labels"):
        model.generate(2, labels=[0, 1], tokens=_tokens(PROMPT_A))
    with pytest.raises(ValueError, match="bad value guidance"):
        model.generate(2, tokens=_tokens(PROMPT_A), guidance=-1.0)
    tiny = dalle.DALLE.tiny_config()
    for changes, message in (({"conditioning": "label"}, "conditioning"),
                             ({"text_vocabulary_size": 2}, "text_vocabulary_size"),
                             ({"text_max_length": -1}, "text_max_length")):
        with pytest.raises(UserError, match=message):
            dataclasses.replace(tiny, **changes).validate()
    with pytest.raises(ValueError, match="needs text_vocabulary_size and text_max_length"):
        tiny_model("dalle", text_vocabulary_size=0, text_max_length=0)


def test_shapes_trains_longer_by_default():
    # Measured: 2 epochs of shapes left two-object captions at 8.2% agreement, 8 at 77.6%.
    assert dalle.DALLE.default_config("shapes").epochs == 8
    assert dalle.DALLE.default_config("digits") == dalle.DALLE.default_config() == (
        dalle.DALLEConfig())
