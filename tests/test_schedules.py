"""Tests for aigc_zoo.schedules against the published formulas and by Monte Carlo."""

import math

import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo import schedules


def test_linear_betas_are_ho_et_al_values_and_scale_with_t():
    betas = schedules.linear_betas(1000)
    assert betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999, rtol=1e-9)
    short = schedules.linear_betas(250)  # x4 per step, the same range of noise levels
    assert short[0] == pytest.approx(4e-4) and short[-1] == pytest.approx(0.08)


def test_linear_alphas_cumprod_matches_the_product_and_ends_near_zero():
    alpha_bar = schedules.make_alphas_cumprod("linear", 1000)
    betas = schedules.linear_betas(1000)
    assert alpha_bar[0] == pytest.approx(1 - 1e-4)
    assert alpha_bar[499] == pytest.approx(np.prod(1 - betas[:500]), rel=1e-12)
    # Ho et al.'s schedule leaves alpha_bar_T ~ 4e-5 (signal rate ~ 6e-3): nearly pure noise.
    assert 1e-5 < alpha_bar[-1] < 1e-4
    assert np.all(np.diff(alpha_bar) < 0)


def test_cosine_schedule_is_nichol_dhariwal_formula():
    steps = 1000
    alpha_bar = schedules.make_alphas_cumprod("cosine", steps)
    t = np.arange(1, steps + 1) / steps
    f = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
    expected = f / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    # Equal wherever beta is not clipped at 0.999 (only the very last steps are).
    np.testing.assert_allclose(alpha_bar[:-2], expected[:-2], rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(alpha_bar) < 0)
    assert alpha_bar[0] > 0.9999  # beta_1 is tiny thanks to the offset s
    assert alpha_bar[-1] < 1e-6
    betas = schedules.cosine_betas(steps)
    assert betas.max() == pytest.approx(0.999)
    # Halfway, the cosine schedule keeps much more signal than the linear one (its point).
    assert alpha_bar[499] > 4 * schedules.make_alphas_cumprod("linear", steps)[499]


def test_continuous_cosine_endpoints_numpy_and_tensor_agree():
    t = np.linspace(0.0, 1.0, 11)
    values = schedules.cosine_alpha_bar(t)
    assert values[0] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(values) < 0)
    # At t = 0.5 - s / 2 the cosine's argument is pi / 4, so f(t) = 1/2.
    assert schedules.cosine_alpha_bar(0.496) == pytest.approx(
        0.5 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2, rel=1e-12)
    tensor = schedules.cosine_alpha_bar(tf.constant(t, tf.float32)).numpy()
    np.testing.assert_allclose(tensor, values, atol=1e-6)


def test_rates_and_snr():
    alpha_bar = np.array([0.99, 0.5, 0.01])
    np.testing.assert_allclose(schedules.signal_rates(alpha_bar) ** 2
                               + schedules.noise_rates(alpha_bar) ** 2, 1.0)
    np.testing.assert_allclose(schedules.snr(alpha_bar), [99.0, 1.0, 0.01 / 0.99])


def test_unknown_schedule_is_an_error():
    with pytest.raises(ValueError, match="cosine"):
        schedules.make_alphas_cumprod("sigmoid", 10)


def test_q_sample_marginal_mean_and_variance_by_monte_carlo():
    x_start = tf.constant([[0.8, -0.5, 0.0]])
    alpha_bar = np.float32(0.3)
    count = 20000
    noise = tf.random.stateless_normal([count, 3], seed=[1, 2])
    x_t = schedules.q_sample(tf.tile(x_start, [count, 1]), tf.fill([count], alpha_bar),
                             noise).numpy()
    # Standard error of the mean is sqrt(0.7 / 20000) ~ 0.006; of the variance ~ 0.007.
    np.testing.assert_allclose(x_t.mean(0), math.sqrt(0.3) * x_start.numpy()[0], atol=0.025)
    np.testing.assert_allclose(x_t.var(0), 0.7, atol=0.03)


@pytest.mark.parametrize("prediction", schedules.PREDICTIONS)
def test_conversions_recover_start_and_noise(prediction):
    rng = np.random.default_rng(0)
    x_start = tf.constant(rng.uniform(-1, 1, (4, 5, 5, 1)), tf.float32)
    noise = tf.constant(rng.normal(size=(4, 5, 5, 1)), tf.float32)
    alpha_bar = tf.constant([0.999, 0.7, 0.2, 0.01], tf.float32)
    x_t = schedules.q_sample(x_start, alpha_bar, noise)
    output = noise if prediction == "epsilon" else schedules.v_target(x_start, noise, alpha_bar)
    got_start, got_noise = schedules.predict_start_and_noise(x_t, output, alpha_bar,
                                                             prediction=prediction)
    np.testing.assert_allclose(got_start.numpy(), x_start.numpy(), atol=2e-4)
    np.testing.assert_allclose(got_noise.numpy(), noise.numpy(), atol=2e-4)
    np.testing.assert_allclose(schedules.noise_from_start(x_t, x_start, alpha_bar).numpy(),
                               noise.numpy(), atol=1e-4)


def test_v_and_epsilon_conversions_are_mutual_inverses():
    rng = np.random.default_rng(1)
    x_t = tf.constant(rng.normal(size=(3, 4, 4, 2)), tf.float32)
    eps = tf.constant(rng.normal(size=(3, 4, 4, 2)), tf.float32)
    alpha_bar = tf.constant([0.9, 0.5, 0.05], tf.float32)
    # epsilon -> (x_0, eps) -> v -> (x_0, eps) again.
    x_start, same_eps = schedules.predict_start_and_noise(x_t, eps, alpha_bar,
                                                          prediction="epsilon")
    v = schedules.v_target(x_start, same_eps, alpha_bar)
    back_start, back_eps = schedules.predict_start_and_noise(x_t, v, alpha_bar, prediction="v")
    np.testing.assert_allclose(back_eps.numpy(), eps.numpy(), atol=1e-4)
    np.testing.assert_allclose(back_start.numpy(), x_start.numpy(), atol=1e-4)
    # And v -> (x_0, eps) -> v.
    np.testing.assert_allclose(schedules.v_target(back_start, back_eps, alpha_bar).numpy(),
                               v.numpy(), atol=1e-4)


def test_min_snr_weight():
    alpha_bar = tf.constant([0.99, 5 / 6, 0.5], tf.float32)  # SNR 99, 5, 1
    eps_weight = schedules.min_snr_weight(alpha_bar, gamma=5.0, prediction="epsilon").numpy()
    np.testing.assert_allclose(eps_weight, [5 / 99, 1.0, 1.0], rtol=1e-4)
    v_weight = schedules.min_snr_weight(alpha_bar, gamma=5.0, prediction="v").numpy()
    np.testing.assert_allclose(v_weight, [5 / 100, 5 / 6, 1 / 2], rtol=1e-4)


@pytest.mark.parametrize("num_timesteps", [2, 10, 20, 50])
def test_linear_betas_stay_below_one_for_short_schedules(num_timesteps):
    betas = schedules.linear_betas(num_timesteps)
    assert np.all(betas < 1.0) and np.all(np.cumprod(1 - betas) > 0)
