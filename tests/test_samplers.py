"""Tests for aigc_zoo.samplers with oracle denoisers that know x_0."""

import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo import samplers, schedules

T = 100
ALPHA_BAR = schedules.make_alphas_cumprod("cosine", T)
ALPHA_BAR_32 = tf.constant(ALPHA_BAR, tf.float32)
X_START = tf.constant(np.random.default_rng(0).uniform(-0.9, 0.9, (6, 4, 4, 1)), tf.float32)


def _oracle(x_start: tf.Tensor, prediction: str = "epsilon"):
    """The denoiser that knows x_0: the exact epsilon (or v) of any x_t."""

    def denoise(x_t, t):
        alpha_bar = tf.gather(ALPHA_BAR_32, t)
        noise = schedules.noise_from_start(x_t, x_start, alpha_bar)
        if prediction == "epsilon":
            return noise
        return schedules.v_target(x_start, noise, alpha_bar)

    return denoise


def _noise(shape=X_START.shape, seed=(3, 4)):
    return tf.random.stateless_normal(shape, seed=seed)


@pytest.mark.parametrize("spacing", samplers.SPACINGS)
def test_timesteps_are_distinct_descending_and_in_range(spacing):
    for steps in (1, 10, 20 if spacing == "quadratic" else 50):  # quadratic repeats at 50
        values = samplers.timesteps(1000, steps, spacing)
        assert len(values) == steps
        assert np.all(np.diff(values) < 0)
        assert values.min() >= 0 and values.max() <= 999
    assert samplers.timesteps(1000, 1000, "trailing").tolist() == list(range(999, -1, -1))


def test_timesteps_spacings_match_their_definitions():
    assert samplers.timesteps(1000, 4, "trailing").tolist() == [999, 749, 499, 249]
    assert samplers.timesteps(1000, 4, "leading").tolist() == [750, 500, 250, 0]
    assert samplers.timesteps(1000, 4, "linspace").tolist() == [999, 666, 333, 0]
    with pytest.raises(ValueError, match="steps"):
        samplers.timesteps(10, 11)
    with pytest.raises(ValueError, match="spacing"):
        samplers.timesteps(10, 5, "cubic")


@pytest.mark.parametrize("prediction", schedules.PREDICTIONS)
@pytest.mark.parametrize("steps", [1, 7, T])
def test_ddim_with_eta_zero_and_an_oracle_returns_x_start(prediction, steps):
    sample = samplers.ddim_sample(_oracle(X_START, prediction), _noise(), ALPHA_BAR,
                                  steps=steps, eta=0.0, prediction=prediction)
    # One epsilon step predicts x_0 at alpha_bar ~ 2e-7, dividing float32 rounding by its
    # signal rate 5e-4; with more steps the last prediction is made at a nearly clean x_t.
    tolerance = 5e-4 if (steps, prediction) == (1, "epsilon") else 1e-5
    np.testing.assert_allclose(sample.numpy(), X_START.numpy(), atol=tolerance)


def test_a_numeric_clip_bounds_each_x_start_prediction_at_that_value():
    wide = X_START * 3.0  # in [-2.7, 2.7]: latents, not pixels

    def sample(clip):
        return samplers.ddim_sample(_oracle(wide), _noise(), ALPHA_BAR, steps=7, eta=0.0,
                                    clip_denoised=clip).numpy()

    for clip in (False, 0.0, 3.0):  # none, or a bound the x_0 never reaches
        np.testing.assert_allclose(sample(clip), wide.numpy(), atol=1e-5)
    for clip, bound in ((2.0, 2.0), (True, 1.0)):  # True: the pixels' [-1, 1]
        clipped = sample(clip)
        assert bound - 1e-3 < np.abs(clipped).max() <= bound + 1e-5, clip


def test_ddim_trajectory_follows_the_forward_marginals_with_an_oracle():
    # With eta = 0 and the true x_0 the update keeps the same epsilon, so every x_t on the way
    # is sqrt(a_t) x_0 + sqrt(1 - a_t) * epsilon_T, exactly the forward process.
    noise = _noise()
    _, trajectory = samplers.ddim_sample(_oracle(X_START), noise, ALPHA_BAR, steps=5,
                                         return_trajectory=True)
    assert trajectory.shape == (6,) + tuple(X_START.shape)
    visited = samplers.timesteps(T, 5)
    eps = schedules.noise_from_start(noise, X_START, tf.fill([6], ALPHA_BAR_32[T - 1]))
    for index, t in enumerate(visited[1:], start=1):
        expected = schedules.q_sample(X_START, tf.fill([6], ALPHA_BAR_32[t]), eps)
        np.testing.assert_allclose(trajectory[index].numpy(), expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(trajectory[-1].numpy(), X_START.numpy(), atol=1e-5)


def test_ddpm_with_an_oracle_ends_at_x_start_and_has_the_forward_marginals():
    count = 3000
    x_start = tf.constant(np.tile([[-0.5, 0.25, 0.75]], (count, 1)), tf.float32)
    final, trajectory = samplers.ddpm_sample(_oracle(x_start), _noise([count, 3], (5, 6)),
                                             ALPHA_BAR, steps=20, seed=(7, 8),
                                             return_trajectory=True)
    np.testing.assert_allclose(final.numpy(), x_start.numpy(), atol=1e-5)
    # Ancestral steps from q(x_t' | x_t, x_0) keep x_t' ~ q(x_t' | x_0): check mean and variance.
    visited = samplers.timesteps(T, 20)
    for index in (5, 12, 19):
        alpha_bar = ALPHA_BAR[visited[index]]
        values = trajectory[index].numpy()
        np.testing.assert_allclose(values.mean(0), np.sqrt(alpha_bar) * x_start.numpy()[0],
                                   atol=0.06)
        np.testing.assert_allclose(values.var(0), 1 - alpha_bar, rtol=0.1, atol=2e-3)


def test_ddpm_with_beta_variance_ends_near_x_start():
    final = samplers.ddpm_sample(_oracle(X_START), _noise(), ALPHA_BAR, variance="beta",
                                 seed=(1, 1))
    # The oracle's x_0 is exact at any x_t, and the last step adds no noise.
    np.testing.assert_allclose(final.numpy(), X_START.numpy(), atol=1e-5)


def _linear_denoiser(x_t, t):
    """Not an oracle: any fixed function of (x_t, t), to compare two samplers' arithmetic."""
    return 0.5 * x_t + 0.001 * tf.cast(t, tf.float32)[:, None, None, None]


def test_ddim_with_eta_one_is_ddpm_ancestral_on_the_same_chain():
    noise = _noise()
    ddim = samplers.ddim_sample(_linear_denoiser, noise, ALPHA_BAR, steps=10, eta=1.0,
                                seed=(9, 9), clip_denoised=False)
    ddpm = samplers.ddpm_sample(_linear_denoiser, noise, ALPHA_BAR, steps=10, seed=(9, 9),
                                clip_denoised=False)
    np.testing.assert_allclose(ddim.numpy(), ddpm.numpy(), atol=1e-4)
    other_seed = samplers.ddpm_sample(_linear_denoiser, noise, ALPHA_BAR, steps=10,
                                      seed=(9, 10), clip_denoised=False)
    assert not np.allclose(other_seed.numpy(), ddpm.numpy(), atol=1e-2)
    deterministic = samplers.ddim_sample(_linear_denoiser, noise, ALPHA_BAR, steps=10)
    assert not np.allclose(deterministic.numpy(), ddim.numpy(), atol=1e-2)


def test_samplers_run_inside_tf_function():
    @tf.function
    def sample(noise):
        return samplers.ddim_sample(_oracle(X_START), noise, ALPHA_BAR, steps=4)

    np.testing.assert_allclose(sample(_noise()).numpy(), X_START.numpy(), atol=1e-5)


def test_classifier_free_guidance_scales():
    unconditional = tf.constant([1.0, -2.0])
    conditional = tf.constant([3.0, 0.5])
    np.testing.assert_allclose(
        samplers.classifier_free_guidance(unconditional, conditional, 0.0), unconditional)
    np.testing.assert_allclose(
        samplers.classifier_free_guidance(unconditional, conditional, 1.0), conditional)
    np.testing.assert_allclose(
        samplers.classifier_free_guidance(unconditional, conditional, 3.0), [7.0, 5.5])


@pytest.mark.parametrize("num_timesteps", [100, 1000])
def test_trailing_spacing_gives_exactly_the_steps_asked_for_every_count(num_timesteps):
    for steps in range(1, num_timesteps + 1):
        values = samplers.timesteps(num_timesteps, steps, "trailing")
        assert len(values) == steps and values[0] == num_timesteps - 1 and values.min() >= 0
        assert np.all(np.diff(values) < 0)


# -- DPM-Solver++(2M) ---------------------------------------------------------------------------

MEAN, STD = 0.3, 0.5  # data x_0 ~ N(MEAN, STD^2): the probability-flow ODE has a closed form


def _gaussian_denoiser(x_t, t):
    """The exact epsilon prediction E[eps | x_t] for Gaussian data (float64)."""
    alpha_bar = tf.gather(tf.constant(ALPHA_BAR, tf.float64), t)
    alpha_bar = tf.reshape(alpha_bar, [-1] + [1] * (len(x_t.shape) - 1))
    x_t = tf.cast(x_t, tf.float64)
    sigma = tf.sqrt(1 - alpha_bar)
    return sigma * (x_t - tf.sqrt(alpha_bar) * MEAN) / (alpha_bar * STD**2 + sigma**2)


def _ode_error(sample_fn, steps):
    """Largest gap to the exact ODE solution from x_T, which keeps each value's standard score."""
    noise = tf.cast(_noise(), tf.float64)
    top = ALPHA_BAR[-1]
    exact = MEAN + STD * (noise - np.sqrt(top) * MEAN) / np.sqrt(top * STD**2 + 1 - top)
    sample = sample_fn(_gaussian_denoiser, noise, ALPHA_BAR, steps=steps, spacing="linspace",
                       clip_denoised=False)
    return float(tf.reduce_max(tf.abs(sample - exact)))


def test_dpmpp_2m_converges_at_second_order_where_ddim_converges_at_first():
    # The cosine schedule's first steps are long in lambda: from 20 steps on both are in
    # their asymptotic regime (measured: 0.061, 0.014, 0.0026 against 0.099, 0.051, 0.028).
    dpm = [_ode_error(samplers.dpmpp_2m_sample, steps) for steps in (20, 40, 80)]
    ddim = [_ode_error(samplers.ddim_sample, steps) for steps in (20, 40, 80)]
    assert dpm[1] < ddim[1] / 3 and dpm[2] < ddim[2] / 8
    # Doubling the steps divides the error by 4 or more (second order) against about 2.
    assert all(3.5 < a / b < 6.5 for a, b in zip(dpm, dpm[1:])), dpm
    assert all(1.5 < a / b < 2.5 for a, b in zip(ddim, ddim[1:])), ddim


@pytest.mark.parametrize("prediction", schedules.PREDICTIONS)
def test_dpmpp_2m_is_ddim_up_to_two_steps_and_returns_x_start_with_an_oracle(prediction):
    denoise = _oracle(X_START, prediction)
    for steps in (1, 2):
        np.testing.assert_allclose(
            samplers.dpmpp_2m_sample(denoise, _noise(), ALPHA_BAR, steps=steps,
                                     prediction=prediction).numpy(),
            samplers.ddim_sample(denoise, _noise(), ALPHA_BAR, steps=steps,
                                 prediction=prediction).numpy(), atol=1e-6)
    sample, trajectory = samplers.dpmpp_2m_sample(denoise, _noise(), ALPHA_BAR, steps=7,
                                                  prediction=prediction,
                                                  return_trajectory=True)
    np.testing.assert_allclose(sample.numpy(), X_START.numpy(), atol=1e-5)
    assert trajectory.shape == (8, *X_START.shape)
    np.testing.assert_array_equal(trajectory[-1].numpy(), sample.numpy())
