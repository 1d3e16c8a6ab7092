"""vqgpt: the transformer block's causal mask, cache and prefill, top-k and temperature, label
dropout, classifier-free guidance, cached against uncached sampling, and a run on a trained
vqvae."""

import json

import numpy as np
import pytest
import tensorflow as tf

import aigc_zoo
from conftest import SMALL_SPLIT, run_in_process, tiny_model, user_error
from aigc_zoo import trained
from aigc_zoo.models import networks, vqgpt
from aigc_zoo.workdir import Workdir

WIDTH, LENGTH = 8, 6


def _jacobian_support(block, key_mask=None):
    """support[i, j]: does the output at position i depend on the input at position j?"""
    x = tf.random.stateless_normal([1, LENGTH, WIDTH], [0, 1])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = block(x, key_mask=key_mask)
    jacobian = tape.jacobian(y, x)[0, :, :, 0]  # [i, feature, j, feature']
    return np.abs(jacobian.numpy()).sum(axis=(1, 3)) > 0


def test_a_causal_block_sees_exactly_the_earlier_positions():
    support = _jacobian_support(networks.TransformerBlock(WIDTH, 2))
    np.testing.assert_array_equal(support, np.tril(np.ones([LENGTH, LENGTH], bool)))


def test_an_encoder_block_sees_every_kept_position():
    block = networks.TransformerBlock(WIDTH, 2, causal=False)
    assert _jacobian_support(block).all()
    keep = tf.constant([[1, 1, 0, 1, 0, 1]])
    support = _jacobian_support(block, key_mask=keep)
    expected = np.ones([LENGTH, LENGTH], bool)
    expected[:, [2, 4]] = False
    np.fill_diagonal(expected, True)  # a position's own input reaches it through the residual
    np.testing.assert_array_equal(support, expected)


def test_stepping_with_the_cache_gives_the_whole_sequences_outputs():
    block = networks.TransformerBlock(WIDTH, 2)
    x = tf.random.stateless_normal([3, LENGTH, WIDTH], [2, 3])
    whole = block(x).numpy()
    cache = block.empty_cache(tf.constant(3), LENGTH)
    for i in range(LENGTH):
        out, cache = block.step(x[:, i:i + 1], cache, tf.constant(i))
        np.testing.assert_allclose(out.numpy()[:, 0], whole[:, i], atol=1e-5, rtol=1e-5)


def test_a_prefilled_prefix_then_steps_give_the_whole_sequences_outputs():
    block = networks.TransformerBlock(WIDTH, 2)
    x = tf.random.stateless_normal([3, LENGTH, WIDTH], [2, 4])
    whole = block(x).numpy()
    out, cache = block.prefill(x[:, :2], block.empty_cache(tf.constant(3), LENGTH))
    np.testing.assert_allclose(out.numpy(), whole[:, :2], atol=1e-5, rtol=1e-5)
    for i in range(2, LENGTH):
        out, cache = block.step(x[:, i:i + 1], cache, tf.constant(i))
        np.testing.assert_allclose(out.numpy()[:, 0], whole[:, i], atol=1e-5, rtol=1e-5)


def test_filter_logits_keeps_the_top_k_over_the_temperature():
    logits = tf.constant([[1.0, 4.0, 2.0, 3.0], [0.0, 0.0, 5.0, -1.0]])
    kept = vqgpt.filter_logits(logits, tf.constant(2.0), tf.constant(2)).numpy()
    np.testing.assert_array_equal(kept[0], [-np.inf, 2.0, -np.inf, 1.5])
    np.testing.assert_array_equal(kept[1], [0.0, 0.0, 2.5, -np.inf])  # a tie stays in
    for k in (0, 4, 9):
        np.testing.assert_array_equal(
            vqgpt.filter_logits(logits, tf.constant(1.0), tf.constant(k)), logits)
    # The same in one XLA cluster, as the sampler runs it (k a runtime input; the sort in a
    # branch taken only when k cuts).
    compiled = tf.function(vqgpt.filter_logits, jit_compile=True)
    np.testing.assert_array_equal(compiled(logits, tf.constant(2.0), tf.constant(2)), kept)
    np.testing.assert_array_equal(compiled(logits, tf.constant(1.0), tf.constant(0)), logits)


@pytest.fixture(scope="module")
def model():
    return tiny_model("vqgpt")


def test_label_dropout_trains_the_unconditional_model_on_its_share(model):
    images = tf.random.stateless_uniform([8, 28, 28, 1], [4, 5], -1.0, 1.0)
    labels = tf.range(8) % 10
    codes = model.codes(images)
    null = tf.fill([8], 10)
    per_code = model.transformer.length
    for dropout, given in ((0.0, labels), (1.0, null)):
        model.config.label_dropout = dropout
        loss = model.compute_losses({"image": images, "label": labels}, training=True)["loss"]
        expected = -tf.reduce_mean(model.log_likelihood(codes, given)) / per_code
        np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-6)
    model.config.label_dropout = 0.1


@pytest.mark.parametrize("options", [{}, {"guidance": 0.0}, {"guidance": 3.0},
                                     {"top_k": 3, "temperature": 0.7}])
def test_cached_and_uncached_sampling_draw_the_same_images(model, options):
    labels = [0, 3, 3, 9]
    cached = model.generate(4, seed=11, labels=labels, cache=True, **options).numpy()
    uncached = model.generate(4, seed=11, labels=labels, cache=False, **options).numpy()
    np.testing.assert_array_equal(cached, uncached)


def test_guidance_zero_ignores_the_labels_and_one_follows_them(model):
    def sample(labels, guidance):
        return model.generate(4, seed=2, labels=labels, guidance=guidance).numpy()
    np.testing.assert_array_equal(sample([0] * 4, 0.0), sample([7] * 4, 0.0))
    assert not np.array_equal(sample([0] * 4, 1.0), sample([7] * 4, 1.0))


def test_top_1_is_greedy_whatever_the_seed(model):
    greedy = model.generate(3, seed=1, top_k=1).numpy()
    np.testing.assert_array_equal(greedy, model.generate(3, seed=2, top_k=1).numpy())
    assert not np.array_equal(model.generate(3, seed=1).numpy(),
                              model.generate(3, seed=2).numpy())


def test_bad_sampling_values_are_value_errors(model):
    for options in ({"guidance": -1.0}, {"temperature": 0.0}, {"top_k": -2},
                    {"temperature": float("nan")}):
        with pytest.raises(ValueError, match="bad value"):
            model.generate(2, **options)


@pytest.fixture(scope="module")
def vqvae_workdir(tmp_path_factory, digits_data_dir):
    workdir = tmp_path_factory.mktemp("first") / "vqvae"
    aigc_zoo.train("vqvae", workdir=str(workdir), data_dir=digits_data_dir, config="tiny",
                   steps_per_epoch=3, sample_every_epochs=0, train_split=SMALL_SPLIT)
    return workdir


def test_a_missing_wrong_kind_or_mismatched_autoencoder_is_one_line(
        vqvae_workdir, tmp_path, digits_data_dir):
    flags = ("--model=vqgpt", "--config=tiny", f"--data_dir={digits_data_dir}",
             f"--workdir={tmp_path / 'w'}")
    assert "needs autoencoder=<the workdir of a trained vqvae run>" in user_error(*flags)
    assert "no such workdir" in user_error(*flags, "--set", f"autoencoder={tmp_path / 'no'}")
    vae = tmp_path / "vae"
    aigc_zoo.train("vae", workdir=str(vae), data_dir=digits_data_dir, config="tiny",
                   steps_per_epoch=1, sample_every_epochs=0, train_split=SMALL_SPLIT)
    assert "it holds a 'vae' run; autoencoder must be a trained vqvae run" in user_error(
        *flags, "--set", f"autoencoder={vae}")
    assert "trained on images of shape (28, 28, 1), this run's are (32, 32, 1)" in user_error(
        *flags, "--image_size=32", "--set", f"autoencoder={vqvae_workdir}")
    assert not (tmp_path / "w").exists()


def test_trains_on_the_frozen_codes_and_evaluates_bits_per_code(
        vqvae_workdir, tmp_path, digits_data_dir):
    workdir = tmp_path / "prior"
    model = aigc_zoo.train("vqgpt", workdir=str(workdir), data_dir=digits_data_dir,
                           config="tiny", autoencoder=str(vqvae_workdir), sample_every_epochs=0,
                           train_split=SMALL_SPLIT)
    first = trained.restore(str(vqvae_workdir))[1]
    for frozen, original in zip(model.autoencoder.variables, first.variables, strict=True):
        np.testing.assert_array_equal(frozen.numpy(), original.numpy())
    run_in_process(f"--workdir={workdir}", f"--data_dir={digits_data_dir}", "--mode=eval",
                   "--eval_samples=0")
    with open(Workdir(str(workdir)).metrics_path) as handle:
        own = json.load(handle)["metrics"]
    assert own["num_examples"] == 32 and own["codes_per_image"] == 49
    for key in ("nll_bits_per_code", "nll_bits_per_code_unconditional",
                "baseline_bits_per_code"):
        assert 0 < own[key] < 20, own
