"""Noise schedules of Gaussian diffusion, and the conversions between what a denoiser predicts.

The forward process of a diffusion model (Sohl-Dickstein et al. 2015; Ho et al. 2020) noises an
image x_0 to

    x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * epsilon,    epsilon ~ N(0, I),

so a schedule is the decreasing sequence alpha_bar_t (`alphas_cumprod`). The signal rate is
sqrt(alpha_bar_t), the noise rate sqrt(1 - alpha_bar_t), and the signal-to-noise ratio
SNR(t) = alpha_bar_t / (1 - alpha_bar_t).

Discrete timesteps are 0-based here: index t in [0, T) is Ho et al.'s step t + 1, so
`alphas_cumprod[0]` is the first, barely noisy, step and `alphas_cumprod[T - 1]` is nearly pure
noise; "t = -1" (alpha_bar = 1) is the clean image.

The schedule builders are numpy functions in float64 (computed once per model); the
conversions take tensors or arrays.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("epsilon", "v")


def linear_betas(num_timesteps: int, *, beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. (2020): betas rising linearly from `beta_start` to `beta_end`.

    The published values (1e-4 to 0.02) are for T = 1000; for another T they are scaled by
    1000 / T, as in Nichol & Dhariwal (2021), so the schedule spans the same noise levels.

    Args:
        num_timesteps: T.
        beta_start: beta of the first step at T = 1000.
        beta_end: beta of the last step at T = 1000.
    Returns:
        betas, float64 [T].
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    scale = 1000.0 / num_timesteps
    betas = np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)
    # For T <= 20 the scaled betas reach 1 (alpha_bar 0 or negative); clip as the cosine
    # schedule does, so every step keeps some signal.
    return np.clip(betas, 0.0, 0.999)


def cosine_alpha_bar(t: np.ndarray | tf.Tensor, *, s: float = 0.008) -> np.ndarray | tf.Tensor:
    """Continuous-time cosine schedule: alpha_bar(t) = f(t) / f(0) for t in [0, 1].

    f(t) = cos(((t + s) / (1 + s)) * pi / 2) ** 2 (Nichol & Dhariwal 2021, eq. 17). Works on
    numpy arrays and on tensors (float32 in, float32 out).

    Args:
        t: times in [0, 1]; 0 is the clean image, 1 pure noise (alpha_bar(1) = 0).
        s: the offset that keeps the first steps' noise from being too small.
    """
    if isinstance(t, tf.Tensor):
        f = tf.cos((t + s) / (1.0 + s) * (math.pi / 2)) ** 2
        return f / (math.cos(s / (1.0 + s) * math.pi / 2) ** 2)
    t = np.asarray(t, dtype=np.float64)
    f = np.cos((t + s) / (1.0 + s) * (np.pi / 2)) ** 2
    return f / np.cos(s / (1.0 + s) * np.pi / 2) ** 2


def cosine_betas(num_timesteps: int, *, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal (2021): betas of the cosine schedule at T discrete steps.

    beta_t = 1 - alpha_bar(t / T) / alpha_bar((t - 1) / T) for Ho's t = 1..T, clipped at
    `max_beta` so the last steps (where alpha_bar reaches 0) stay finite.

    Args:
        num_timesteps: T.
        s: the offset of `cosine_alpha_bar`.
        max_beta: the largest beta allowed.
    Returns:
        betas, float64 [T].
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    grid = cosine_alpha_bar(np.arange(num_timesteps + 1) / num_timesteps, s=s)
    return np.minimum(1.0 - grid[1:] / grid[:-1], max_beta)


def alphas_cumprod(betas: np.ndarray) -> np.ndarray:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s), float64 [T]."""
    return np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))


def make_alphas_cumprod(name: str, num_timesteps: int) -> np.ndarray:
    """alpha_bar of the schedule `name` (one of `SCHEDULES`) with T = `num_timesteps`."""
    if name == "linear":
        return alphas_cumprod(linear_betas(num_timesteps))
    if name == "cosine":
        return alphas_cumprod(cosine_betas(num_timesteps))
    raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")


def signal_rates(alpha_bar):
    """sqrt(alpha_bar): how much of x_0 is left in x_t."""
    return alpha_bar ** 0.5


def noise_rates(alpha_bar):
    """sqrt(1 - alpha_bar): the standard deviation of the noise in x_t."""
    return (1.0 - alpha_bar) ** 0.5


def snr(alpha_bar):
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) (Kingma et al. 2021)."""
    return alpha_bar / (1.0 - alpha_bar)


def _broadcast(alpha_bar: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """[batch] -> [batch, 1, 1, ...] so it scales each example of `like`."""
    alpha_bar = tf.cast(alpha_bar, like.dtype)
    return tf.reshape(alpha_bar, tf.concat([tf.shape(alpha_bar), tf.ones(tf.rank(like) - 1,
                                                                          tf.int32)], 0))


def q_sample(x_start: tf.Tensor, alpha_bar: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
    """A draw of x_t ~ q(x_t | x_0) given the noise: sqrt(a) x_0 + sqrt(1 - a) epsilon.

    Args:
        x_start: x_0, [batch, ...].
        alpha_bar: alpha_bar_t per example, [batch].
        noise: epsilon, shaped like `x_start`.
    """
    a = _broadcast(alpha_bar, x_start)
    return signal_rates(a) * x_start + noise_rates(a) * noise


def v_target(x_start: tf.Tensor, noise: tf.Tensor, alpha_bar: tf.Tensor) -> tf.Tensor:
    """Salimans & Ho (2022): v = sqrt(a) epsilon - sqrt(1 - a) x_0."""
    a = _broadcast(alpha_bar, x_start)
    return signal_rates(a) * noise - noise_rates(a) * x_start


def predict_start_and_noise(x_t: tf.Tensor, output: tf.Tensor, alpha_bar: tf.Tensor, *,
                            prediction: str) -> tuple[tf.Tensor, tf.Tensor]:
    """x_0 and epsilon implied by a denoiser's `output` at x_t.

    Args:
        x_t: the noisy input, [batch, ...].
        output: the network's prediction: epsilon or v (see `prediction`).
        alpha_bar: alpha_bar_t per example, [batch].
        prediction: "epsilon" or "v".
    Returns:
        (x_0 estimate, epsilon estimate).
    """
    a = _broadcast(alpha_bar, x_t)
    signal, noise = signal_rates(a), noise_rates(a)
    if prediction == "epsilon":
        return (x_t - noise * output) / signal, output
    if prediction == "v":
        # x_t = s x_0 + n eps and v = s eps - n x_0, with s^2 + n^2 = 1, invert as a rotation.
        return signal * x_t - noise * output, noise * x_t + signal * output
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def noise_from_start(x_t: tf.Tensor, x_start: tf.Tensor, alpha_bar: tf.Tensor) -> tf.Tensor:
    """The epsilon that takes `x_start` to `x_t`: (x_t - sqrt(a) x_0) / sqrt(1 - a)."""
    a = _broadcast(alpha_bar, x_t)
    return (x_t - signal_rates(a) * x_start) / noise_rates(a)


def min_snr_weight(alpha_bar: tf.Tensor, *, gamma: float, prediction: str) -> tf.Tensor:
    """Hang et al. (2023) min-SNR-gamma loss weight per example, for the MSE on `prediction`.

    The x_0-MSE weighted by min(SNR, gamma) equals the epsilon-MSE weighted by
    min(SNR, gamma) / SNR, or the v-MSE weighted by min(SNR, gamma) / (SNR + 1).
    """
    ratio = snr(alpha_bar)
    clipped = tf.minimum(ratio, gamma)
    if prediction == "epsilon":
        return clipped / ratio
    if prediction == "v":
        return clipped / (ratio + 1.0)
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
