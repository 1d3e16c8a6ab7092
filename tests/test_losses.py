"""Tests for aigc_zoo.losses against closed forms computed with math / numpy in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo import losses

LOG_2PI = math.log(2.0 * math.pi)
NUM_BINS = 256
HALF_BIN = 1.0 / (NUM_BINS - 1)
LEVELS = -1.0 + 2.0 * np.arange(NUM_BINS) / (NUM_BINS - 1)  # the 256 grey levels in [-1, 1]


def _f32(value) -> tf.Tensor:
    return tf.constant(np.asarray(value, np.float32))


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -np.asarray(x, np.float64))


# --- gaussian_kl ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mean, log_var", [
    ([0.0], [0.0]),
    ([1.0], [0.0]),
    ([0.0], [1.0]),
    ([0.5, -2.0, 3.0], [-1.0, 0.3, 2.0]),
    ([-0.7, 0.1], [-6.0, 4.0]),
])
def test_gaussian_kl_matches_closed_form(mean, log_var):
    m, lv = np.array(mean), np.array(log_var)
    expected = 0.5 * np.sum(np.exp(lv) + m ** 2 - 1.0 - lv)
    got = losses.gaussian_kl(_f32([mean]), _f32([log_var])).numpy()
    assert got.shape == (1,)
    np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-6)


def test_gaussian_kl_hand_values():
    # KL(N(1, 1) || N(0, 1)) = 1/2; KL(N(0, e) || N(0, 1)) = (e - 2) / 2.
    got = losses.gaussian_kl(_f32([[1.0], [0.0]]), _f32([[0.0], [1.0]])).numpy()
    np.testing.assert_allclose(got, [0.5, (math.e - 2.0) / 2.0], rtol=1e-6)


def test_gaussian_kl_zero_for_standard_normal_and_positive_otherwise():
    assert losses.gaussian_kl(tf.zeros([3, 5]), tf.zeros([3, 5])).numpy().tolist() == [0.0] * 3
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(1000, 8)) * 2
    log_var = rng.normal(size=(1000, 8)) * 2
    kl = losses.gaussian_kl(_f32(mean), _f32(log_var)).numpy()
    assert kl.shape == (1000,)
    assert np.all(kl >= 0.0)
    assert np.all(kl > 0.0)  # equality only at mean 0, log_var 0
    expected = 0.5 * np.sum(np.exp(log_var) + mean ** 2 - 1.0 - log_var, axis=-1)
    np.testing.assert_allclose(kl, expected, rtol=1e-4)


# --- log_normal ----------------------------------------------------------------------------------

def test_log_normal_matches_univariate_formula_summed():
    rng = np.random.default_rng(1)
    x, mean = rng.normal(size=(2, 6, 4))
    log_var = rng.normal(size=(6, 4))
    expected = np.sum(-0.5 * (LOG_2PI + log_var) - 0.5 * (x - mean) ** 2 / np.exp(log_var),
                      axis=-1)
    got = losses.log_normal(_f32(x), _f32(mean), _f32(log_var)).numpy()
    assert got.shape == (6,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_log_normal_standard_normal_hand_value():
    # log N(1; 0, 1) = -(log 2pi + 1) / 2, and two dims add.
    got = losses.log_normal(_f32([[1.0, 0.0]]), tf.zeros([1, 2]), tf.zeros([1, 2])).numpy()
    np.testing.assert_allclose(got, [-(LOG_2PI + 1.0) / 2 - LOG_2PI / 2], rtol=1e-6)


def test_log_normal_at_the_mean():
    rng = np.random.default_rng(2)
    mean = rng.normal(size=(5, 3))
    log_var = rng.normal(size=(5, 3)) * 3
    got = losses.log_normal(_f32(mean), _f32(mean), _f32(log_var)).numpy()
    np.testing.assert_allclose(got, -0.5 * np.sum(LOG_2PI + log_var, axis=-1), rtol=1e-5)


# --- bernoulli_log_likelihood --------------------------------------------------------------------

def test_bernoulli_log_likelihood_matches_formula_per_example():
    rng = np.random.default_rng(3)
    x = (rng.uniform(size=(4, 3, 3, 1)) < 0.5).astype(np.float64)
    logits = rng.normal(size=(4, 3, 3, 1)) * 3
    p = _sigmoid(logits)
    expected = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=(1, 2, 3))
    got = losses.bernoulli_log_likelihood(_f32(x), _f32(logits)).numpy()
    assert got.shape == (4,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_bernoulli_log_likelihood_soft_targets():
    x = np.array([[0.25, 0.9]])
    logits = np.array([[0.3, -1.2]])
    expected = np.sum(x * _log_sigmoid(logits) + (1 - x) * _log_sigmoid(-logits), axis=1)
    got = losses.bernoulli_log_likelihood(_f32(x), _f32(logits)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bernoulli_log_likelihood_is_stable_for_large_logits():
    logits = np.array([[200.0, -200.0, 200.0, -200.0, 40.0, -40.0]])
    x = np.array([[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    # log sigmoid(l) = -softplus(-l); log(1 - sigmoid(l)) = -softplus(l).
    expected = np.sum(x * _log_sigmoid(logits) + (1 - x) * _log_sigmoid(-logits), axis=1)
    got = losses.bernoulli_log_likelihood(_f32(x), _f32(logits)).numpy()
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-5)  # about -440
    # Confident and right costs nothing.
    right = losses.bernoulli_log_likelihood(_f32([[1.0, 0.0]]), _f32([[200.0, -200.0]])).numpy()
    np.testing.assert_allclose(right, [0.0], atol=1e-6)


# --- gaussian_log_likelihood ---------------------------------------------------------------------

def test_gaussian_log_likelihood_matches_normal_density():
    rng = np.random.default_rng(4)
    x, mean = rng.uniform(-1, 1, size=(2, 3, 4, 4, 2))
    log_scale = rng.uniform(-1.5, 1, size=(3, 4, 4, 2))  # density stays > 0 in float64
    sigma = np.exp(log_scale)
    density = np.exp(-0.5 * ((x - mean) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    expected = np.sum(np.log(density), axis=(1, 2, 3))
    got = losses.gaussian_log_likelihood(_f32(x), _f32(mean), _f32(log_scale)).numpy()
    assert got.shape == (3,)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_gaussian_log_likelihood_hand_value():
    # N(x=1; 0, 1): -(log 2pi)/2 - 1/2. N(x=0; 0, e^-1): -(log 2pi)/2 + 1.
    got = losses.gaussian_log_likelihood(_f32([[1.0, 0.0]]), tf.zeros([1, 2]),
                                         _f32([[0.0, -1.0]])).numpy()
    np.testing.assert_allclose(got, [-LOG_2PI - 0.5 + 1.0], rtol=1e-6)


# --- discretized_logistic_log_likelihood ---------------------------------------------------------

def _level_log_probs(mean: float, log_scale: float) -> np.ndarray:
    """log P of each of the 256 levels under one pixel's discretised logistic (from the library)."""
    x = _f32(LEVELS[:, None])  # 256 one-pixel examples
    got = losses.discretized_logistic_log_likelihood(
        x, tf.fill([NUM_BINS, 1], float(mean)), tf.fill([NUM_BINS, 1], float(log_scale)))
    assert got.shape == (NUM_BINS,)
    return got.numpy().astype(np.float64)


@pytest.mark.parametrize("mean", [0.0, 0.3, -0.97, 1.0, -1.0, 1.5, -3.0, 0.5 * HALF_BIN])
@pytest.mark.parametrize("log_scale", [-7.0, -5.0, -3.0, -1.0, 0.5])
def test_discretized_logistic_sums_to_one_over_levels(mean, log_scale):
    log_probs = _level_log_probs(mean, log_scale)
    assert np.all(np.isfinite(log_probs))
    assert np.all(log_probs <= 1e-6)
    np.testing.assert_allclose(np.sum(np.exp(log_probs)), 1.0, atol=1e-4)


@pytest.mark.parametrize("mean, log_scale", [(0.1, -2.0), (-0.4, -4.0), (0.8, -0.5)])
def test_discretized_logistic_middle_level_is_cdf_difference(mean, log_scale):
    scale = math.exp(log_scale)
    log_probs = _level_log_probs(mean, log_scale)
    for k in (100, 128, 140, 200, 1, 254):
        x = LEVELS[k]
        expected = _sigmoid((x + HALF_BIN - mean) / scale) - _sigmoid((x - HALF_BIN - mean) / scale)
        if expected > 1e-4:  # exact region of the library; the far tails are checked below
            np.testing.assert_allclose(np.exp(log_probs[k]), expected, rtol=1e-3)


@pytest.mark.parametrize("mean, log_scale", [(0.0, -2.0), (-0.9, -1.0), (0.95, -3.0), (2.0, 0.0)])
def test_discretized_logistic_edge_levels_take_the_tails(mean, log_scale):
    scale = math.exp(log_scale)
    log_probs = _level_log_probs(mean, log_scale)
    # P(x = -1) = F(-1 + half_bin); P(x = 1) = 1 - F(1 - half_bin).
    np.testing.assert_allclose(log_probs[0], _log_sigmoid((-1 + HALF_BIN - mean) / scale),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(log_probs[-1], _log_sigmoid(-(1 - HALF_BIN - mean) / scale),
                               rtol=1e-4, atol=1e-5)


def test_discretized_logistic_far_from_mean_is_finite_and_accurate():
    # Bin masses far below float32 resolution: the library falls back to density * width,
    # which is accurate when the bin is narrow against the scale.
    mean, log_scale = -0.9, math.log(0.1)
    scale = 0.1
    log_probs = _level_log_probs(mean, log_scale)
    for k in (230, 250):  # masses ~1e-8 .. 1e-9, above the mean
        x = LEVELS[k]
        upper, lower = (x + HALF_BIN - mean) / scale, (x - HALF_BIN - mean) / scale
        # log(sigmoid(u) - sigmoid(l)) for u, l >> 0: log(e^-l - e^-u) - log((1+e^-u)(1+e^-l)).
        expected = (-lower + np.log1p(-np.exp(lower - upper))
                    - np.log1p(np.exp(-upper)) - np.log1p(np.exp(-lower)))
        np.testing.assert_allclose(log_probs[k], expected, rtol=2e-3)


def test_discretized_logistic_sums_over_pixels_and_has_finite_gradients():
    rng = np.random.default_rng(5)
    x = LEVELS[rng.integers(0, NUM_BINS, size=(2, 4, 4, 1))]
    mean = tf.Variable(rng.uniform(-3, 3, size=(2, 4, 4, 1)).astype(np.float32))
    log_scale = tf.Variable(rng.uniform(-7, 1, size=(2, 4, 4, 1)).astype(np.float32))
    with tf.GradientTape() as tape:
        per_example = losses.discretized_logistic_log_likelihood(_f32(x), mean, log_scale)
    assert per_example.shape == (2,)
    assert np.all(np.isfinite(per_example.numpy()))
    for gradient in tape.gradient(per_example, [mean, log_scale]):
        assert np.all(np.isfinite(gradient.numpy()))
    # Per-example value is the sum of per-pixel values.
    per_pixel = losses.discretized_logistic_log_likelihood(
        _f32(x.reshape(-1, 1)), tf.reshape(mean, [-1, 1]), tf.reshape(log_scale, [-1, 1]))
    np.testing.assert_allclose(per_example.numpy(),
                               per_pixel.numpy().reshape(2, -1).sum(axis=1), rtol=1e-5, atol=1e-3)


# --- importance_weighted_bound -------------------------------------------------------------------

def test_importance_weighted_bound_k1_is_the_input():
    log_weights = np.array([[-3.0, 0.5, -120.0]])
    got = losses.importance_weighted_bound(_f32(log_weights)).numpy()
    np.testing.assert_allclose(got, log_weights[0], rtol=1e-6)


def test_importance_weighted_bound_is_log_mean_exp():
    rng = np.random.default_rng(6)
    log_weights = rng.normal(size=(7, 5)) * 4 - 300.0  # exp underflows: needs logsumexp
    shift = log_weights.max(axis=0)
    expected = shift + np.log(np.mean(np.exp(log_weights - shift), axis=0))
    got = losses.importance_weighted_bound(_f32(log_weights)).numpy()
    assert got.shape == (5,)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Equal weights: the bound is that weight.
    equal = losses.importance_weighted_bound(tf.fill([10, 2], -2.5)).numpy()
    np.testing.assert_allclose(equal, [-2.5, -2.5], rtol=1e-6)
    # Hand value: log((e^0 + e^log3) / 2) = log 2.
    hand = losses.importance_weighted_bound(_f32([[0.0], [math.log(3.0)]])).numpy()
    np.testing.assert_allclose(hand, [math.log(2.0)], rtol=1e-6)


def test_importance_weighted_bound_at_least_mean_log_weight():
    rng = np.random.default_rng(7)
    log_weights = rng.normal(size=(16, 200)) * 3
    got = losses.importance_weighted_bound(_f32(log_weights)).numpy()
    mean = log_weights.mean(axis=0)
    assert np.all(got >= mean - 1e-5)
    assert np.all(got <= log_weights.max(axis=0) + 1e-5)  # and at most the largest weight


# --- bits_per_dim --------------------------------------------------------------------------------

def test_bits_per_dim():
    assert losses.bits_per_dim(784 * math.log(2.0), 784) == pytest.approx(1.0)
    assert losses.bits_per_dim(100.0, 28 * 28) == pytest.approx(100.0 / (784 * math.log(2.0)))
    tensor = losses.bits_per_dim(tf.constant([0.0, 3072 * math.log(2.0) * 3.5]), 3072)
    np.testing.assert_allclose(tensor.numpy(), [0.0, 3.5], rtol=1e-6)
