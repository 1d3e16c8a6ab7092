"""Samplers of discrete-time diffusion models: DDPM ancestral sampling, DDIM, DPM-Solver++.

Both take a *denoise function* `denoise_fn(x_t, t) -> output`, where `t` is an int32 [batch] of
0-based timesteps (see `schedules`) and `output` is the network's epsilon or v prediction, so
they know nothing about networks or models. They build a `tf.while_loop`; call them inside a
`tf.function` (the diffusion models do) so that the whole loop is one graph call.

- `ddpm_sample`: Ho et al. (2020), ancestral sampling from q(x_{t-1} | x_t, x_0) with x_0
  predicted, over all T steps or a respaced subsequence (Nichol & Dhariwal 2021).
- `ddim_sample`: Song et al. (2021), x_{t'} = sqrt(a') x_0 + sqrt(1 - a' - sigma^2) eps
  + sigma z with sigma = eta * sqrt((1 - a') / (1 - a)) * sqrt(1 - a / a'); eta = 0 is
  deterministic and eta = 1 is ancestral sampling on the respaced chain.
- `dpmpp_2m_sample`: Lu et al. (2022), DPM-Solver++(2M), a multistep second-order solver of
  the same ODE as deterministic DDIM in the x_0 prediction: fewer steps for the same quality.
- `sample`: one of the three by name (`SAMPLERS`), what a model's `sampler` option or
  `sample_sampler` field chooses.
- `classifier_free_guidance`: Ho & Salimans (2022), combines an unconditional and a
  conditional prediction.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import tensorflow as tf

from aigc_zoo import schedules

SAMPLERS = ("ddim", "ddpm", "dpmpp_2m")
SPACINGS = ("trailing", "linspace", "leading", "quadratic")
VARIANCES = ("posterior", "beta")

DenoiseFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def timesteps(num_timesteps: int, steps: int, spacing: str = "trailing") -> np.ndarray:
    """The `steps` timesteps a sampler visits, in descending order, all distinct, in [0, T).

    The values come from `timesteps_tensor`, the in-graph computation the samplers (and the
    exported SavedModels, whose `steps` is a runtime input) use, so both always agree.

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
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    values = timesteps_tensor(num_timesteps, tf.constant(steps, tf.int32), spacing,
                              check=False).numpy().astype(np.int64)
    if len(np.unique(values)) != steps:
        raise ValueError(f"spacing {spacing!r} repeats timesteps with steps={steps} of "
                         f"{num_timesteps}; use fewer steps or another spacing")
    return values


def _linspace(start: tf.Tensor, stop: tf.Tensor, num: tf.Tensor) -> tf.Tensor:
    """float64 `np.linspace(start, stop, num)`, operation for operation (so bit for bit)."""
    divisions = tf.cast(tf.maximum(num - 1, 1), tf.float64)
    values = tf.range(num, dtype=tf.float64) * ((stop - start) / divisions) + start
    # numpy sets the last value to `stop` exactly (a single value is `start`).
    return tf.where((tf.range(num) == num - 1) & (num > 1), stop, values)


def timesteps_tensor(num_timesteps: int, steps: tf.Tensor, spacing: str = "trailing", *,
                     check: bool = True) -> tf.Tensor:
    """`timesteps` as int32 [steps] for a runtime `steps` (an int32 scalar tensor).

    `spacing` is a Python string: each spacing is a different graph. With `check`, a `steps`
    outside [1, T] or one that repeats a timestep fails with `InvalidArgumentError` when run.
    """
    steps = tf.cast(steps, tf.int32)
    if check:  # as a dependency, so a bad `steps` fails here and not in `tf.range` below
        with tf.control_dependencies([
                tf.debugging.assert_greater_equal(steps, 1, message="steps must be >= 1"),
                tf.debugging.assert_less_equal(steps, num_timesteps,
                                               message=f"steps must be <= {num_timesteps}")]):
            steps = tf.identity(steps)
    total = tf.constant(num_timesteps, tf.float64)
    index = tf.range(steps, dtype=tf.float64)
    if spacing == "trailing":
        values = tf.round(total - index * (total / tf.cast(steps, tf.float64))) - 1
    elif spacing == "linspace":
        values = tf.round(_linspace(total - 1, tf.constant(0.0, tf.float64), steps))
    elif spacing == "leading":
        values = tf.reverse(index, [0]) * tf.cast(num_timesteps // steps, tf.float64)
    elif spacing == "quadratic":
        top = tf.sqrt(total * 0.8)
        values = tf.reverse(tf.floor(tf.square(_linspace(tf.constant(0.0, tf.float64), top,
                                                         steps))), [0])
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    values = tf.cast(values, tf.int32)
    if check:
        with tf.control_dependencies([tf.debugging.assert_equal(
                tf.size(tf.unique(values).y), steps,
                message=f"spacing {spacing!r} repeats timesteps with these steps; "
                        "use fewer steps")]):
            values = tf.identity(values)
    return values


def classifier_free_guidance(unconditional: tf.Tensor, conditional: tf.Tensor,
                             scale: float | tf.Tensor) -> tf.Tensor:
    """Ho & Salimans (2022): unconditional + scale * (conditional - unconditional).

    Scale 0 is the unconditional prediction, 1 the conditional one, above 1 guided (their
    w is scale - 1).
    """
    return unconditional + scale * (conditional - unconditional)


def _chain(alphas_cumprod: np.ndarray, steps: int | tf.Tensor, spacing: str
           ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Timesteps and float64 alpha_bar at each step and at the step after it (1 after the last).

    In-graph, so `steps` may be a runtime tensor; the coefficients derived from these are
    computed in float64 and cast to float32 once.
    """
    alphas_cumprod = np.asarray(alphas_cumprod, np.float64)
    visited = timesteps_tensor(len(alphas_cumprod), steps, spacing)
    alphas_cumprod = tf.constant(alphas_cumprod, tf.float64)
    alpha_bar = tf.gather(alphas_cumprod, visited)
    alpha_bar_next = tf.concat([tf.gather(alphas_cumprod, visited[1:]),
                                tf.ones([1], tf.float64)], 0)
    return visited, alpha_bar, alpha_bar_next


def _denoised(denoise_fn: DenoiseFn, x: tf.Tensor, t: tf.Tensor, alpha_bar: tf.Tensor, *,
              prediction: str, clip_denoised: bool | float) -> tuple[tf.Tensor, tf.Tensor]:
    batch_alpha_bar = tf.fill([tf.shape(x)[0]], alpha_bar)
    output = tf.cast(denoise_fn(x, tf.fill([tf.shape(x)[0]], t)), x.dtype)
    x_start, noise = schedules.predict_start_and_noise(x, output, batch_alpha_bar,
                                                       prediction=prediction)
    if clip_denoised:
        # Images live in [-1, 1] (True); latents in the range their model gives (a number).
        # The epsilon is re-derived so the update stays consistent.
        bound = 1.0 if clip_denoised is True else float(clip_denoised)
        x_start = tf.clip_by_value(x_start, -bound, bound)
        noise = schedules.noise_from_start(x, x_start, batch_alpha_bar)
    return x_start, noise


def _loop(step: Callable[..., tuple[tf.Tensor, tuple]], x_end: tf.Tensor, num_steps: int,
          return_trajectory: bool, state: tuple = ()
          ) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
    """x_T = `x_end` through `num_steps` calls `x, state = step(i, x, state)` in one
    `tf.while_loop`; `state` is what a multistep sampler carries between steps."""
    trajectory = tf.TensorArray(x_end.dtype, size=num_steps + 1, element_shape=x_end.shape)
    trajectory = trajectory.write(0, x_end)

    def body(i, x, state, trajectory):
        x, state = step(i, x, state)
        return i + 1, x, state, trajectory.write(i + 1, x) if return_trajectory else trajectory

    _, x, _, trajectory = tf.while_loop(lambda i, *_: i < num_steps, body,
                                        (tf.constant(0), x_end, state, trajectory))
    return (x, trajectory.stack()) if return_trajectory else x


def _step_noise(x: tf.Tensor, seed: tf.Tensor, i: tf.Tensor) -> tf.Tensor:
    step_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), i)
    return tf.random.stateless_normal(tf.shape(x), step_seed, dtype=x.dtype)


def ddim_sample(denoise_fn: DenoiseFn, noise: tf.Tensor, alphas_cumprod: np.ndarray, *,
                steps: int | tf.Tensor, eta: float = 0.0, spacing: str = "trailing",
                prediction: str = "epsilon", seed: tf.Tensor | tuple[int, int] = (0, 0),
                clip_denoised: bool | float = True, return_trajectory: bool = False
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
        clip_denoised: clip each x_0 prediction to [-1, 1] (True), to [-c, c] (a number c),
            or not (False or 0).
        return_trajectory: also return x at every step, [steps + 1, batch, ...], x_T first.
    Returns:
        x_0 (and the trajectory).
    """
    visited, alpha_bar, alpha_bar_next = _chain(alphas_cumprod, steps, spacing)
    sigma = eta * tf.sqrt((1 - alpha_bar_next) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_next))
    direction = tf.sqrt(tf.maximum(1 - alpha_bar_next - tf.square(sigma), 0.0))
    constants = {name: tf.cast(value, noise.dtype) for name, value in (
        ("alpha_bar", alpha_bar), ("signal_next", tf.sqrt(alpha_bar_next)),
        ("direction", direction), ("sigma", sigma))}
    stochastic = eta != 0.0

    def step(i, x, state):
        x_start, eps = _denoised(denoise_fn, x, visited[i], constants["alpha_bar"][i],
                                 prediction=prediction, clip_denoised=clip_denoised)
        x = constants["signal_next"][i] * x_start + constants["direction"][i] * eps
        if stochastic:
            x += constants["sigma"][i] * _step_noise(x, seed, i)
        return x, state

    return _loop(step, noise, steps, return_trajectory)


def ddpm_sample(denoise_fn: DenoiseFn, noise: tf.Tensor, alphas_cumprod: np.ndarray, *,
                steps: int | tf.Tensor | None = None, spacing: str = "trailing",
                variance: str = "posterior",
                prediction: str = "epsilon", seed: tf.Tensor | tuple[int, int] = (0, 0),
                clip_denoised: bool | float = True, return_trajectory: bool = False
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
        clip_denoised: clip each x_0 prediction to [-1, 1] (True), to [-c, c] (a number c),
            or not (False or 0).
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
    start_coef = tf.sqrt(alpha_bar_next) * beta / (1.0 - alpha_bar)
    x_coef = tf.sqrt(alpha) * (1.0 - alpha_bar_next) / (1.0 - alpha_bar)
    posterior = beta * (1.0 - alpha_bar_next) / (1.0 - alpha_bar)
    std = tf.sqrt(posterior if variance == "posterior" else beta)
    # The last step returns the mean (Ho et al.: z = 0 at t = 1).
    std = tf.concat([std[:-1], tf.zeros([1], tf.float64)], 0)
    constants = {name: tf.cast(value, noise.dtype) for name, value in (
        ("alpha_bar", alpha_bar), ("start_coef", start_coef), ("x_coef", x_coef), ("std", std))}

    def step(i, x, state):
        x_start, _ = _denoised(denoise_fn, x, visited[i], constants["alpha_bar"][i],
                               prediction=prediction, clip_denoised=clip_denoised)
        mean = constants["start_coef"][i] * x_start + constants["x_coef"][i] * x
        return mean + constants["std"][i] * _step_noise(x, seed, i), state

    return _loop(step, noise, steps, return_trajectory)


def dpmpp_2m_sample(denoise_fn: DenoiseFn, noise: tf.Tensor, alphas_cumprod: np.ndarray, *,
                    steps: int | tf.Tensor, spacing: str = "trailing",
                    prediction: str = "epsilon", clip_denoised: bool | float = True,
                    return_trajectory: bool = False
                    ) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2) from x_T = `noise` to x_0.

    A multistep second-order solver of the probability-flow ODE in the data prediction D (the
    x_0 prediction, clipped as in DDIM), in lambda = log(alpha / sigma) with alpha =
    sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar). A step from lambda to lambda' = lambda + h:

        x' = (sigma' / sigma) x + alpha' (1 - e^-h) D~,
        D~ = (1 + 1 / 2r) D_i - (1 / 2r) D_{i-1},  r = h_{i-1} / h_i,

    with D~ = D_i (first order: DDIM's step) at the first step and at the last, which goes to
    alpha_bar = 1 as every sampler here ends (so the result is the last x_0 prediction,
    as in DDIM; the paper's "lower order final" steps). Deterministic; one network evaluation
    a step, the previous step's D carried over. With `steps` <= 2 it is DDIM (eta 0).

    Args: as `ddim_sample` (without `eta` and `seed`: no noise is drawn).
    """
    visited, alpha_bar, alpha_bar_next = _chain(alphas_cumprod, steps, spacing)
    last = tf.range(tf.size(visited)) == tf.size(visited) - 1
    # At the last step alpha_bar' = 1: sigma' = 0 and lambda' = infinity, so h is infinite and
    # (sigma' / sigma, 1 - e^-h) = (0, 1) exactly; set so, not computed through infinities.
    safe_next = tf.where(last, alpha_bar, alpha_bar_next)
    lambdas = 0.5 * (tf.math.log(alpha_bar) - tf.math.log1p(-alpha_bar))
    lambdas_next = 0.5 * (tf.math.log(safe_next) - tf.math.log1p(-safe_next))
    h = lambdas_next - lambdas
    ratio = tf.where(last, tf.zeros_like(h), tf.sqrt((1 - alpha_bar_next) / (1 - alpha_bar)))
    gain = tf.sqrt(alpha_bar_next) * tf.where(last, tf.ones_like(h), -tf.math.expm1(-h))
    # The second-order weights: r_i = h_{i-1} / h_i, used where i > 0 and i is not the last.
    second = tf.logical_and(tf.range(tf.size(visited)) > 0, tf.logical_not(last))
    h_previous = tf.concat([h[:1], h[:-1]], 0)
    half_over_r = tf.where(second, 0.5 * h / tf.where(second, h_previous, tf.ones_like(h)),
                           tf.zeros_like(h))
    constants = {name: tf.cast(value, noise.dtype) for name, value in (
        ("alpha_bar", alpha_bar), ("ratio", ratio), ("gain", gain),
        ("half_over_r", half_over_r))}

    def step(i, x, state):
        (previous,) = state
        x_start, _ = _denoised(denoise_fn, x, visited[i], constants["alpha_bar"][i],
                               prediction=prediction, clip_denoised=clip_denoised)
        corrected = x_start + constants["half_over_r"][i] * (x_start - previous)
        return constants["ratio"][i] * x + constants["gain"][i] * corrected, (x_start,)

    return _loop(step, noise, steps, return_trajectory, state=(tf.zeros_like(noise),))


def sample(sampler: str, denoise_fn: DenoiseFn, noise: tf.Tensor, alphas_cumprod: np.ndarray, *,
           steps: int | tf.Tensor, eta: float = 0.0, seed: tf.Tensor | tuple[int, int] = (0, 0),
           **options: Any) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
    """`ddim_sample`, `ddpm_sample` or `dpmpp_2m_sample`, as `sampler` (one of `SAMPLERS`) says.

    `eta` is DDIM's alone and `seed` (the per-step noise) is unused by the deterministic
    DPM-Solver++; `options` (`spacing`, `prediction`, `clip_denoised`, `return_trajectory`)
    go to whichever runs.
    """
    if sampler == "ddim":
        return ddim_sample(denoise_fn, noise, alphas_cumprod, steps=steps, eta=eta, seed=seed,
                           **options)
    if sampler == "dpmpp_2m":  # deterministic: draws no noise after x_T
        return dpmpp_2m_sample(denoise_fn, noise, alphas_cumprod, steps=steps, **options)
    if sampler == "ddpm":
        return ddpm_sample(denoise_fn, noise, alphas_cumprod, steps=steps, seed=seed, **options)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
