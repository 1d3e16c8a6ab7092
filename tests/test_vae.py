"""Tests for aigc_zoo.models.vae (`vae` and `cvae`) on tiny configs and made-up images."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_model
from aigc_zoo.errors import UserError
from aigc_zoo.models import vae

IMAGE_SHAPE = (28, 28, 1)
NUM_DIMS = 28 * 28
NUM_CLASSES = 10
TRAIN_STEPS = 30
EVAL_KEYS = {"negative_elbo_nats", "negative_elbo_bits_per_dim", "nll_nats", "nll_bits_per_dim",
             "importance_samples", "reconstruction_psnr_db", "reconstruction_ssim", "likelihood",
             "num_examples"}


def _rectangles(num_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey rectangles on a black background, quantised to the 256 levels in [-1, 1]."""
    rng = np.random.default_rng(seed)
    images = np.full((num_images,) + IMAGE_SHAPE, -1.0, np.float32)
    for image in images:
        height, width = rng.integers(6, 18, size=2)
        top, left = rng.integers(0, 28 - height), rng.integers(0, 28 - width)
        image[top:top + height, left:left + width] = rng.uniform(0.2, 1.0)
    images = (np.round((images + 1.0) * 127.5) / 127.5 - 1.0).astype(np.float32)
    labels = (np.arange(num_images) % NUM_CLASSES).astype(np.int32)
    return images, labels


TRAIN_IMAGES, TRAIN_LABELS = _rectangles(64, seed=0)
EVAL_IMAGES, EVAL_LABELS = _rectangles(40, seed=1)


def _dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, *,
             repeat: bool) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    return (dataset.repeat() if repeat else dataset).batch(batch_size)


def _make(name: str = "vae", *, num_classes: int | None = NUM_CLASSES, seed: int = 0,
          **changes) -> vae.VAE:
    return tiny_model(name, image_shape=IMAGE_SHAPE, num_classes=num_classes, seed=seed,
                      **changes)


def _train(model: vae.VAE, steps: int) -> dict[str, list[float]]:
    """Per-step losses: one step per epoch, so each history entry is a single step's value."""
    dataset = _dataset(TRAIN_IMAGES, TRAIN_LABELS, model.config.batch_size, repeat=True)
    return model.fit(dataset, epochs=steps, steps_per_epoch=1, shuffle=False, verbose=0).history


@pytest.fixture(scope="module")
def trained():
    """likelihood -> (VAE trained for TRAIN_STEPS steps on the rectangles, its history)."""
    cache = {}

    def get(likelihood: str):
        if likelihood not in cache:
            model = _make(likelihood=likelihood, learning_rate=3e-3)
            cache[likelihood] = model, _train(model, TRAIN_STEPS)
        return cache[likelihood]

    return get


# --- sampling, encoder and decoder ---------------------------------------------------------------

@pytest.mark.parametrize("likelihood", vae.LIKELIHOODS)
def test_generate_shape_range_and_seeding(likelihood):
    model = _make(likelihood=likelihood)
    samples = model.generate(6, seed=3).numpy()
    assert samples.shape == (6,) + IMAGE_SHAPE
    assert samples.dtype == np.float32
    assert np.all(np.isfinite(samples))
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    np.testing.assert_array_equal(model.generate(6, seed=3).numpy(), samples)
    assert not np.allclose(model.generate(6, seed=4).numpy(), samples)
    assert not np.allclose(samples[0], samples[1])  # different latents within a batch too
    with pytest.raises(TypeError):
        model.generate(2, temperature=0.5)


def test_encode_decode_reconstruct_shapes_and_ranges():
    model = _make(likelihood="logistic")
    latent_dim = model.config.latent_dim
    images = tf.constant(TRAIN_IMAGES[:5])
    mean, log_var = model.encode(images)
    assert mean.shape == (5, latent_dim) and log_var.shape == (5, latent_dim)
    assert np.all(np.isfinite(mean.numpy())) and np.all(np.isfinite(log_var.numpy()))
    assert not np.allclose(mean.numpy()[0], mean.numpy()[1])  # depends on the image
    # Decoding far-out latents still lands in [-1, 1] (the logistic mean is clipped).
    z = tf.constant(np.random.default_rng(0).normal(size=(5, latent_dim)) * 50, tf.float32)
    decoded = model.decode(z).numpy()
    assert decoded.shape == (5,) + IMAGE_SHAPE
    assert decoded.min() >= -1.0 and decoded.max() <= 1.0
    reconstruction = model.reconstruct(images).numpy()
    assert reconstruction.shape == (5,) + IMAGE_SHAPE
    assert reconstruction.min() >= -1.0 and reconstruction.max() <= 1.0
    # reconstruct decodes the posterior mean.
    np.testing.assert_allclose(reconstruction, model.decode(mean).numpy(), atol=1e-6)


# --- objective -----------------------------------------------------------------------------------

def _losses(model: vae.VAE) -> dict[str, float]:
    batch = {"image": tf.constant(TRAIN_IMAGES[:16]), "label": tf.constant(TRAIN_LABELS[:16])}
    values = model.compute_losses(batch, training=True)
    assert set(values) >= {"objective", "loss", "reconstruction", "kl"}
    for name, value in values.items():
        assert value.shape == (), name
        assert np.isfinite(value.numpy()), name
    return {name: float(value) for name, value in values.items()}


def _assert_objective(values: dict[str, float], beta: float) -> None:
    assert values["kl"] > 1e-2  # large enough that a wrong beta shows
    assert values["loss"] == pytest.approx(values["reconstruction"] + values["kl"], abs=1e-3)
    assert values["objective"] - values["reconstruction"] == pytest.approx(
        beta * values["kl"], abs=1e-3)


def test_compute_losses_loss_is_negative_elbo_and_objective_weights_kl():
    # A seed whose untrained encoder gives a clearly non-zero KL.
    model = _make(beta=0.5, likelihood="bernoulli")
    values = _losses(model)
    assert values["reconstruction"] > 0.0  # -log p of binary pixels
    assert values["kl"] >= 0.0
    _assert_objective(values, beta=0.5)
    _assert_objective(_losses(_make(beta=1.0)), beta=1.0)


def test_kl_warmup_ramps_beta_with_global_step():
    model = _make(beta=0.5, kl_warmup_steps=10)
    assert int(model.global_step.numpy()) == 0
    _assert_objective(_losses(model), beta=0.5 * 1 / 10)
    model.global_step.assign(4)
    _assert_objective(_losses(model), beta=0.5 * 5 / 10)
    model.global_step.assign(500)
    _assert_objective(_losses(model), beta=0.5)


# --- training ------------------------------------------------------------------------------------

@pytest.mark.parametrize("likelihood", vae.LIKELIHOODS)
def test_training_decreases_the_loss(trained, likelihood):
    model, history = trained(likelihood)
    assert int(model.global_step.numpy()) == TRAIN_STEPS
    assert int(model.optimizers["vae"].iterations.numpy()) == TRAIN_STEPS
    for name in ("loss", "reconstruction", "kl"):
        assert len(history[name]) == TRAIN_STEPS
        assert np.all(np.isfinite(history[name])), (name, history[name])
    first, last = np.mean(history["loss"][:5]), np.mean(history["loss"][-5:])
    assert last < first - 0.1 * abs(first), history["loss"]


# --- likelihood bounds ---------------------------------------------------------------------------

def _bounds(model: vae.VAE, k: int, seed: int, images: np.ndarray = TRAIN_IMAGES
            ) -> tuple[np.ndarray, np.ndarray]:
    bounds = model.log_likelihood_bounds(tf.constant(images), num_samples=k,
                                         seed=tf.constant([seed, 7], tf.int32))
    elbo, iw_bound = bounds["elbo"].numpy(), bounds["iw_bound"].numpy()
    assert elbo.shape == (len(images),) and iw_bound.shape == (len(images),)
    assert np.all(np.isfinite(elbo)) and np.all(np.isfinite(iw_bound))
    return elbo, iw_bound


def test_log_likelihood_bounds_are_deterministic_for_a_seed(trained):
    model, _ = trained("bernoulli")  # binarisation is random too
    elbo, iw_bound = _bounds(model, 4, seed=0, images=TRAIN_IMAGES[:16])
    again = _bounds(model, 4, seed=0, images=TRAIN_IMAGES[:16])
    np.testing.assert_array_equal(again[0], elbo)
    np.testing.assert_array_equal(again[1], iw_bound)
    other = _bounds(model, 4, seed=1, images=TRAIN_IMAGES[:16])
    assert not np.allclose(other[1], iw_bound)


def test_importance_weighted_bound_tightens_with_k(trained):
    model, _ = trained("bernoulli")
    # k = 1 is a one-sample Monte-Carlo ELBO; the reported ELBO uses the same posterior sample
    # with the KL in closed form, so they differ by log p(z) - log q(z | x) + KL, whose mean is 0.
    one_sample = [_bounds(model, 1, seed) for seed in range(10)]  # 640 pairs
    difference = np.mean([iw - elbo for elbo, iw in one_sample])
    assert abs(difference) < 0.5, difference
    means = {1: float(np.mean([iw for _, iw in one_sample]))}
    elbo = float(np.mean([elbo for elbo, _ in one_sample]))
    for k in (16, 128):
        means[k] = float(np.mean([_bounds(model, k, seed)[1] for seed in range(3)]))
    # In expectation the bound tightens with k (Burda et al. 2016, theorem 1).
    assert means[1] + 1.0 < means[16] < means[128], means
    assert means[128] > elbo + 2.0, (means, elbo)
    # Still a bound: log p(x) <= 0 for discrete pixels.
    assert means[128] < 0.0


# --- evaluation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic"])
def test_evaluate_model(trained, likelihood):
    model, _ = trained(likelihood)
    dataset = _dataset(EVAL_IMAGES, EVAL_LABELS, 16, repeat=False)  # 16 + 16 + 8
    metrics = model.evaluate_model(dataset, seed=0)
    assert set(metrics) == EVAL_KEYS
    assert metrics["num_examples"] == len(EVAL_IMAGES)
    assert metrics["likelihood"] == likelihood
    assert metrics["importance_samples"] == model.config.eval_importance_samples
    for key in ("negative_elbo_nats", "nll_nats", "negative_elbo_bits_per_dim",
                "nll_bits_per_dim", "reconstruction_psnr_db"):
        assert math.isfinite(metrics[key]), key
    assert metrics["nll_nats"] > 0.0  # discrete pixels: -log P >= 0
    assert metrics["nll_nats"] <= metrics["negative_elbo_nats"] + 0.5
    for nats, bits in (("negative_elbo_nats", "negative_elbo_bits_per_dim"),
                       ("nll_nats", "nll_bits_per_dim")):
        assert metrics[bits] == pytest.approx(metrics[nats] / (NUM_DIMS * math.log(2.0)), rel=1e-6)
    assert metrics["reconstruction_psnr_db"] > 0.0
    # SSIM: the mean over images of tf.image.ssim between reconstructions and images in [0, 1].
    reconstructions = (model.reconstruct(tf.constant(EVAL_IMAGES)) + 1.0) / 2.0
    expected_ssim = tf.image.ssim(reconstructions, (EVAL_IMAGES + 1.0) / 2.0, 1.0)
    assert metrics["reconstruction_ssim"] == pytest.approx(float(np.mean(expected_ssim)),
                                                           abs=1e-5)
    assert 0.0 < metrics["reconstruction_ssim"] <= 1.0
    # Deterministic for a seed, and in line with log_likelihood_bounds on the same images.
    assert model.evaluate_model(dataset, seed=0) == metrics
    _, iw_bound = _bounds(model, model.config.eval_importance_samples, seed=5, images=EVAL_IMAGES)
    assert metrics["nll_nats"] == pytest.approx(-np.mean(iw_bound), rel=0.03)


def test_evaluate_model_stops_at_eval_examples_on_a_batch_boundary():
    model = _make(eval_examples=32)
    metrics = model.evaluate_model(_dataset(EVAL_IMAGES, EVAL_LABELS, 16, repeat=False))
    assert metrics["num_examples"] == 32


def test_evaluate_model_uses_exactly_eval_examples():
    model = _make(eval_examples=20)
    metrics = model.evaluate_model(_dataset(EVAL_IMAGES, EVAL_LABELS, 16, repeat=False))
    assert metrics["num_examples"] == 20


# --- cvae ----------------------------------------------------------------------------------------

def test_cvae_needs_labels_in_the_dataset():
    with pytest.raises(UserError, match="labels"):
        _make("cvae", num_classes=None)


def test_cvae_generate_encode_decode_with_labels():
    model = _make("cvae")
    assert model.conditional
    samples = model.generate(12, seed=0).numpy()  # default labels cycle 0..9
    assert samples.shape == (12,) + IMAGE_SHAPE
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    threes = model.generate(4, seed=0, labels=tf.fill([4], 3)).numpy()
    fives = model.generate(4, seed=0, labels=tf.fill([4], 5)).numpy()
    assert threes.shape == (4,) + IMAGE_SHAPE
    assert not np.allclose(threes, fives)  # the label changes the sample for the same z
    np.testing.assert_array_equal(model.generate(4, seed=0, labels=tf.fill([4], 3)).numpy(),
                                  threes)

    images, labels = tf.constant(TRAIN_IMAGES[:5]), tf.constant(TRAIN_LABELS[:5])
    with pytest.raises(ValueError, match="labels"):
        model.encode(images)
    mean, log_var = model.encode(images, labels)
    assert mean.shape == (5, model.config.latent_dim) == log_var.shape
    other_mean, _ = model.encode(images, (labels + 1) % NUM_CLASSES)
    assert not np.allclose(mean.numpy(), other_mean.numpy())
    with pytest.raises(ValueError, match="labels"):
        model.decode(mean)
    decoded = model.decode(mean, labels).numpy()
    assert decoded.shape == (5,) + IMAGE_SHAPE
    reconstruction = model.reconstruct(images, labels).numpy()
    np.testing.assert_allclose(reconstruction, decoded, atol=1e-6)


def test_cvae_trains_and_bounds_take_labels():
    model = _make("cvae", learning_rate=3e-3)
    history = _train(model, 3)
    assert int(model.global_step.numpy()) == 3
    for name in ("loss", "reconstruction", "kl"):
        assert np.all(np.isfinite(history[name])), (name, history[name])
    bounds = model.log_likelihood_bounds(tf.constant(TRAIN_IMAGES[:8]),
                                         tf.constant(TRAIN_LABELS[:8]), num_samples=3,
                                         seed=tf.constant([0, 0]))
    for value in bounds.values():
        assert value.shape == (8,) and np.all(np.isfinite(value.numpy()))
    assert np.mean(bounds["iw_bound"].numpy()) < 0.0
    metrics = model.evaluate_model(_dataset(EVAL_IMAGES[:16], EVAL_LABELS[:16], 8, repeat=False))
    assert metrics["num_examples"] == 16
    assert math.isfinite(metrics["nll_nats"])


def test_train_step_compiles_with_xla():
    # XLA is off by default on CPU (slower there), but GPU/TPU users get it: it must compile.
    model = _make()
    model.compile(jit_compile=True)
    assert model.jit_compile is True
    history = model.fit(_dataset(TRAIN_IMAGES, TRAIN_LABELS, 16, repeat=True), epochs=1,
                        steps_per_epoch=2,
                        verbose=0)
    assert np.isfinite(history.history["loss"][-1])


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_trains_under_mixed_precision_with_float32_losses(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = _make()
        losses_ = model.compute_losses(
            {"image": tf.constant(TRAIN_IMAGES[:16]), "label": tf.constant(TRAIN_LABELS[:16])},
            training=True)
        assert all(value.dtype == tf.float32 for value in losses_.values())
        history = _train(model, 3)
        assert all(np.isfinite(values).all() for values in history.values())
        assert model.generate(2, seed=0).dtype == tf.float32
        scaled = policy == "mixed_float16"
        assert isinstance(model.groups[0].optimizer, keras.optimizers.LossScaleOptimizer) is scaled
    finally:
        keras.mixed_precision.set_global_policy("float32")
