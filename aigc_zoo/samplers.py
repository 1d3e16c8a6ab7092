"""Samplers of discrete-time diffusion models: DDPM ancestral sampling and DDIM.

Both take a *denoise function* `denoise_fn(x_t, t) -> output`, where `t` is an int32 [batch] of
0-based timesteps (see `schedules`) and `output` is the network's epsilon or v prediction, so
they know nothing about networks or models. They build a `tf.while_loop`; call them inside a
`tf.function` (the diffusion models do) so that the whole loop is one graph call.

- `ddpm_sample`: Ho et al. (2020), ancestral sampling from q(x_{t-1} | x_t, x_0) with x_0
  predicted, over all T steps or a respaced subsequence (Nichol & Dhariwal 2021).
- `ddim_sample`: Song et al. (2021), x_{t'} = sqrt(a') x_0 + sqrt(1 - a' - sigma^2) eps
  + sigma z with sigma = eta * sqrt((1 - a') / (1 - a)) * sqrt(1 - a / a'); eta = 0 is
  deterministic and eta = 1 is ancestral sampling on the respaced chain.
- `classifier_free_guidance`: Ho & Salimans (2022), combines an unconditional and a
  conditional prediction.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from aigc_zoo import schedules

SPACINGS = ("trailing", "linspace", "leading", "quadratic")
VARIANCES = ("posterior", "beta")

DenoiseFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def timesteps(num_timesteps: int, steps: int, spacing: str = "trailing") -> np.ndarray:
    """The `steps` timesteps a sampler visits, in descending order, all distinct, in [0, T).

    Args:
        num_timesteps: T of the trained model.
        steps: how many network evaluations, 1 <= steps <= T.
        spacing: "trailing" (T-1 down in equal strides; Lin et al. 2024: starts at the noisiest
            step, which matters with few steps), "linspace" (T-1 to 0 evenly), "leading"
            (0, T//steps, ...: DDIM's "uniform", which never visits T-1) or "quadratic"
            (DDIM's quadratic spacing up to 0.8 T, dense near t = 0).
    """
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be in [1, {num_timesteps}], got {steps}")
    if spacing == "trailing":
        # Integer step indices: a float stride in np.arange can yield one value too many.
        values = np.round(num_timesteps - np.arange(steps) * (num_timesteps / steps)) - 1
    elif spacing == "linspace":
        values = np.round(np.linspace(num_timesteps - 1, 0, steps))
    elif spacing == "leading":
        values = np.arange(steps)[::-1] * (num_timesteps // steps)
    elif spacing == "quadratic":
        values = np.floor(np.linspace(0, np.sqrt(num_timesteps * 0.8), steps) ** 2)[::-1]
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    values = values.astype(np.int64)
    if len(np.unique(values)) != steps:
        raise ValueError(f"spacing {spacing!r} repeats timesteps with steps={steps} of "
                         f"{num_timesteps}; use fewer steps or another spacing")
    return values


def classifier_free_guidance(unconditional: tf.Tensor, conditional: tf.Tensor,
                             scale: float | tf.Tensor) -> tf.Tensor:
    """Ho & Salimans (2022): unconditional + scale * (conditional - unconditional).

    Scale 0 is the unconditional prediction, 1 the conditional one, above 1 guided (their
    w is scale - 1).
    """
    return unconditional + scale * (conditional - unconditional)


def _chain(alphas_cumprod: np.ndarray, steps: int, spacing: str
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Timesteps and alpha_bar at each step and at the step after it (1 after the last)."""
    alphas_cumprod = np.asarray(alphas_cumprod, np.float64)
    visited = timesteps(len(alphas_cumprod), steps, spacing)
    alpha_bar = alphas_cumprod[visited]
    alpha_bar_next = np.concatenate([alphas_cumprod[visited[1:]], [1.0]])
    return visited, alpha_bar, alpha_bar_next


def _denoised(denoise_fn: DenoiseFn, x: tf.Tensor, t: tf.Tensor, alpha_bar: tf.Tensor, *,
              prediction: str, clip_denoised: bool) -> tuple[tf.Tensor, tf.Tensor]:
    batch_alpha_bar = tf.fill([tf.shape(x)[0]], alpha_bar)
    output = tf.cast(denoise_fn(x, tf.fill([tf.shape(x)[0]], t)), x.dtype)
    x_start, noise = schedules.predict_start_and_noise(x, output, batch_alpha_bar,
                                                       prediction=prediction)
    if clip_denoised:
        # Images live in [-1, 1]; the epsilon is re-derived so the update stays consistent.
        x_start = tf.clip_by_value(x_start, -1.0, 1.0)
        noise = schedules.noise_from_start(x, x_start, batch_alpha_bar)
    return x_start, noise


def _loop(step: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], x_end: tf.Tensor, num_steps: int,
          return_trajectory: bool) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
    trajectory = tf.TensorArray(x_end.dtype, size=num_steps + 1, element_shape=x_end.shape)
    trajectory = trajectory.write(0, x_end)

    def body(i, x, trajectory):
        x = step(i, x)
        return i + 1, x, trajectory.write(i + 1, x) if return_trajectory else trajectory

    _, x, trajectory = tf.while_loop(lambda i, *_: i < num_steps, body,
                                     (tf.constant(0), x_end, trajectory))
    return (x, trajectory.stack()) if return_trajectory else x


def _step_noise(x: tf.Tensor, seed: tf.Tensor, i: tf.Tensor) -> tf.Tensor:
    step_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), i)
    return tf.random.stateless_normal(tf.shape(x), step_seed, dtype=x.dtype)


def ddim_sample(denoise_fn: DenoiseFn, noise: tf.Tensor, alphas_cumprod: np.ndarray, *,
                steps: int, eta: float = 0.0, spacing: str = "trailing",
                prediction: str = "epsilon", seed: tf.Tensor | tuple[int, int] = (0, 0),
                clip_denoised: bool = True, return_trajectory: bool = False
                ) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
    """DDIM sampling (Song et al. 2021) from x_T = `noise` down to x_0.

    Args:
        denoise_fn: (x_t, t) -> epsilon or v prediction, as `prediction` says.
        noise: x_T, float32 [batch, ...].
        alphas_cumprod: the model's alpha_bar, [T].
        steps: network evaluations.
        eta: 0 (deterministic) to 1 (ancestral); the noise is fresh at every step.
        spacing: which timesteps are visited (see `timesteps`).
        prediction: "epsilon" or "v".
        seed: stateless seed [2] of the per-step noise (unused when eta = 0).
        clip_denoised: clip each x_0 prediction to [-1, 1].
        return_trajectory: also return x at every step, [steps + 1, batch, ...], x_T first.
    Returns:
        x_0 (and the trajectory).
    """
    visited, alpha_bar, alpha_bar_next = _chain(alphas_cumprod, steps, spacing)
    sigma = eta * np.sqrt((1 - alpha_bar_next) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_next))
    direction = np.sqrt(np.maximum(1 - alpha_bar_next - sigma ** 2, 0.0))
    constants = {name: tf.constant(value, noise.dtype) for name, value in (
        ("alpha_bar", alpha_bar), ("signal_next", np.sqrt(alpha_bar_next)),
        ("direction", direction), ("sigma", sigma))}
    visited = tf.constant(visited, tf.int32)
    stochastic = eta != 0.0

    def step(i, x):
        x_start, eps = _denoised(denoise_fn, x, visited[i], constants["alpha_bar"][i],
                                 prediction=prediction, clip_denoised=clip_denoised)
        x = constants["signal_next"][i] * x_start + constants["direction"][i] * eps
        if stochastic:
            x += constants["sigma"][i] * _step_noise(x, seed, i)
        return x

    return _loop(step, noise, steps, return_trajectory)


def ddpm_sample(denoise_fn: DenoiseFn, noise: tf.Tensor, alphas_cumprod: np.ndarray, *,
                steps: int | None = None, spacing: str = "trailing", variance: str = "posterior",
                prediction: str = "epsilon", seed: tf.Tensor | tuple[int, int] = (0, 0),
                clip_denoised: bool = True, return_trajectory: bool = False
                ) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
    """Ancestral sampling (Ho et al. 2020): x_{t-1} ~ q(x_{t-1} | x_t, x_0 = predicted x_0).

    The mean is the posterior's, (sqrt(a') beta / (1 - a)) x_0 + (sqrt(alpha) (1 - a') /
    (1 - a)) x_t with beta = 1 - a / a' of the (respaced) step.

    Args:
        denoise_fn: (x_t, t) -> epsilon or v prediction, as `prediction` says.
        noise: x_T, float32 [batch, ...].
        alphas_cumprod: the model's alpha_bar, [T].
        steps: network evaluations; None visits all T steps (respaced otherwise).
        spacing: which timesteps are visited when respaced (see `timesteps`).
        variance: "posterior" (beta~ = beta (1 - a') / (1 - a), exact for the chain) or
            "beta" (Ho et al.'s sigma^2 = beta), with no noise at the last step either way.
        prediction: "epsilon" or "v".
        seed: stateless seed [2] of the per-step noise.
        clip_denoised: clip each x_0 prediction to [-1, 1].
        return_trajectory: also return x at every step, [steps + 1, batch, ...], x_T first.
    Returns:
        x_0 (and the trajectory).
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {VARIANCES}")
    steps = len(alphas_cumprod) if steps is None else steps
    visited, alpha_bar, alpha_bar_next = _chain(alphas_cumprod, steps, spacing)
    alpha = alpha_bar / alpha_bar_next
    beta = 1.0 - alpha
    start_coef = np.sqrt(alpha_bar_next) * beta / (1.0 - alpha_bar)
    x_coef = np.sqrt(alpha) * (1.0 - alpha_bar_next) / (1.0 - alpha_bar)
    posterior = beta * (1.0 - alpha_bar_next) / (1.0 - alpha_bar)
    std = np.sqrt(posterior if variance == "posterior" else beta)
    std[-1] = 0.0  # the last step returns the mean (Ho et al.: z = 0 at t = 1)
    constants = {name: tf.constant(value, noise.dtype) for name, value in (
        ("alpha_bar", alpha_bar), ("start_coef", start_coef), ("x_coef", x_coef), ("std", std))}
    visited = tf.constant(visited, tf.int32)

    def step(i, x):
        x_start, _ = _denoised(denoise_fn, x, visited[i], constants["alpha_bar"][i],
                               prediction=prediction, clip_denoised=clip_denoised)
        mean = constants["start_coef"][i] * x_start + constants["x_coef"][i] * x
        return mean + constants["std"][i] * _step_noise(x, seed, i)

    return _loop(step, noise, steps, return_trajectory)
