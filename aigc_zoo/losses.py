"""Losses and log-likelihoods as pure functions of tensors.

Conventions: images are in [-1, 1]; log-likelihoods are summed over every axis but the first
(one value per example, in nats); callers take the batch mean. GAN losses take discriminator
logits (or critic scores) and return batch means.
"""

from __future__ import annotations

import math
from typing import Callable

import tensorflow as tf

LOG_2PI = math.log(2.0 * math.pi)


def _sum_per_example(values: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def gaussian_kl(mean: tf.Tensor, log_var: tf.Tensor) -> tf.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) per example, summed over the last axis."""
    return 0.5 * tf.reduce_sum(tf.exp(log_var) + tf.square(mean) - 1.0 - log_var, axis=-1)


def log_normal(x: tf.Tensor, mean: tf.Tensor, log_var: tf.Tensor) -> tf.Tensor:
    """log N(x; mean, diag(exp(log_var))), summed over the last axis."""
    return -0.5 * tf.reduce_sum(LOG_2PI + log_var + tf.square(x - mean) * tf.exp(-log_var),
                                axis=-1)


def bernoulli_log_likelihood(x: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """log p(x) of pixels x in {0, 1} (or soft targets in [0, 1]), Bernoulli(sigmoid(logits))."""
    return -_sum_per_example(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits))


def gaussian_log_likelihood(x: tf.Tensor, mean: tf.Tensor, log_scale: tf.Tensor) -> tf.Tensor:
    """Continuous log density of x under N(mean, exp(log_scale)^2), per example."""
    z = (x - mean) * tf.exp(-log_scale)
    return _sum_per_example(-0.5 * LOG_2PI - log_scale - 0.5 * tf.square(z))


def discretized_logistic_log_likelihood(x: tf.Tensor, mean: tf.Tensor, log_scale: tf.Tensor,
                                        *, num_bins: int = 256) -> tf.Tensor:
    """log P(x) of images quantised to `num_bins` levels in [-1, 1] under a discretised logistic,
    per example (`discretized_logistic_log_probs` summed)."""
    return _sum_per_example(discretized_logistic_log_probs(x, mean, log_scale,
                                                           num_bins=num_bins))


def discretized_logistic_log_probs(x: tf.Tensor, mean: tf.Tensor, log_scale: tf.Tensor,
                                   *, num_bins: int = 256) -> tf.Tensor:
    """log P(x) of each value of `x`, quantised to `num_bins` levels in [-1, 1], under a
    discretised logistic (broadcast shapes; not summed).

    Each value's probability is the logistic mass of its bin; the edge bins take the tails
    (Salimans et al. 2017, PixelCNN++), so the probabilities of all levels sum to one.
    """
    half_bin = 1.0 / (num_bins - 1)
    inv_scale = tf.exp(-log_scale)
    centred = x - mean
    upper = inv_scale * (centred + half_bin)
    lower = inv_scale * (centred - half_bin)
    log_cdf_upper = upper - tf.nn.softplus(upper)  # log sigmoid(upper)
    log_survival_lower = -tf.nn.softplus(lower)  # log (1 - sigmoid(lower))
    # The mass of a bin is a difference of CDFs; above the mean it is taken as a difference of
    # survival functions instead, so both terms are small there and float32 does not cancel.
    bin_mass = tf.where(centred > 0, tf.sigmoid(-lower) - tf.sigmoid(-upper),
                        tf.sigmoid(upper) - tf.sigmoid(lower))
    # Only where even that underflows, fall back to density at the bin centre times its width,
    # which keeps the value and its gradient finite.
    middle = inv_scale * centred
    log_density_mid = middle - log_scale - 2.0 * tf.nn.softplus(middle)
    log_mass = tf.where(bin_mass > 1e-30, tf.math.log(tf.maximum(bin_mass, 1e-30)),
                        log_density_mid + math.log(2.0 * half_bin))
    return tf.where(x < -1.0 + half_bin, log_cdf_upper,
                    tf.where(x > 1.0 - half_bin, log_survival_lower, log_mass))


def coupled_channel_means(means: tf.Tensor, coefficients: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """PixelCNN++'s within-pixel channel dependence: channel c's mean plus a linear function of
    the earlier channels' values (Salimans et al. 2017, eq. 3).

    Args:
        means: [..., components, C].
        coefficients: [..., components, C * (C - 1) / 2], for the pairs (1, 0), (2, 0),
            (2, 1), ... in that order.
        x: the pixel's values [..., C] (the observed ones, or those sampled so far).
    Returns:
        [..., components, C].
    """
    channels = means.shape[-1]
    adjusted, pair = [means[..., 0]], 0
    for channel in range(1, channels):
        mean = means[..., channel]
        for earlier in range(channel):
            mean += coefficients[..., pair] * x[..., None, earlier]
            pair += 1
        adjusted.append(mean)
    return tf.stack(adjusted, axis=-1)


def split_logistic_mixture(params: tf.Tensor, components: int, channels: int
                           ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Mixture logits [..., M], means and log-scales [..., M, C] and channel coefficients
    [..., M, C(C-1)/2] (in (-1, 1)) from a network's `params` [..., logistic_mixture_size]."""
    pairs = channels * (channels - 1) // 2
    shape = tf.shape(params)[:-1]
    logits = params[..., :components]
    rest = tf.reshape(params[..., components:],
                      tf.concat([shape, [components, 2 * channels + pairs]], 0))
    return (logits, rest[..., :channels], rest[..., channels:2 * channels],
            tf.tanh(rest[..., 2 * channels:]))


def logistic_mixture_size(components: int, channels: int) -> int:
    """Parameters per pixel of a discretised logistic mixture over `channels` channels."""
    return components * (1 + 2 * channels + channels * (channels - 1) // 2)


def discretized_logistic_mixture_log_likelihood(x: tf.Tensor, params: tf.Tensor, *,
                                                components: int, num_bins: int = 256,
                                                min_log_scale: float = -7.0) -> tf.Tensor:
    """log P(x) per example of images [N, H, W, C] quantised to `num_bins` levels in [-1, 1]
    under a pixel-wise mixture of discretised logistics (PixelCNN++, Salimans et al. 2017):
    each pixel's channels share the mixture component, and a channel's mean depends linearly
    on the earlier channels' values (`coupled_channel_means`).

    Args:
        x: [N, H, W, C].
        params: [N, H, W, logistic_mixture_size(components, C)].
    """
    channels = x.shape[-1]
    logits, means, log_scales, coefficients = split_logistic_mixture(params, components,
                                                                     channels)
    means = coupled_channel_means(means, coefficients, x)
    log_scales = tf.maximum(log_scales, min_log_scale)
    log_probs = tf.reduce_sum(
        discretized_logistic_log_probs(x[..., None, :], means, log_scales, num_bins=num_bins),
        axis=-1)  # [N, H, W, M]
    mixture = tf.reduce_logsumexp(tf.nn.log_softmax(logits) + log_probs, axis=-1)
    return _sum_per_example(mixture)


def importance_weighted_bound(log_weights: tf.Tensor) -> tf.Tensor:
    """log (1/k) sum_k exp(log_weights[k]): the IWAE bound on log p(x) (Burda et al. 2016).

    Args:
        log_weights: [k, batch] values of log p(x, z_k) - log q(z_k | x) for z_k ~ q(z | x).
    Returns:
        [batch] lower bounds on log p(x); k = 1 gives the ELBO, and the bound tightens with k.
    """
    k = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(k)


def bits_per_dim(nats: tf.Tensor | float, num_dims: int) -> tf.Tensor | float:
    """Convert a negative log-likelihood per example in nats to bits per dimension."""
    return nats / (num_dims * math.log(2.0))


# -- GAN losses ----------------------------------------------------------------------------
# Discriminator outputs are logits (or critic values); every loss is a batch mean.

def minimax_discriminator_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    """-log D(x) - log(1 - D(G(z))) (Goodfellow et al. 2014), from logits."""
    return (tf.reduce_mean(tf.nn.softplus(-real_logits))
            + tf.reduce_mean(tf.nn.softplus(fake_logits)))


def minimax_generator_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    """log(1 - D(G(z))), the generator's side of the original minimax game (saturates early)."""
    return -tf.reduce_mean(tf.nn.softplus(fake_logits))


def non_saturating_generator_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    """-log D(G(z)): the same fixed point as minimax with strong gradients early in training."""
    return tf.reduce_mean(tf.nn.softplus(-fake_logits))


def wasserstein_critic_loss(real_scores: tf.Tensor, fake_scores: tf.Tensor) -> tf.Tensor:
    """E[f(G(z))] - E[f(x)] (Arjovsky et al. 2017); pair with a gradient penalty."""
    return tf.reduce_mean(fake_scores) - tf.reduce_mean(real_scores)


def wasserstein_generator_loss(fake_scores: tf.Tensor) -> tf.Tensor:
    """-E[f(G(z))]; also the generator loss of the hinge GAN."""
    return -tf.reduce_mean(fake_scores)


def hinge_discriminator_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    """E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))] (Lim & Ye 2017; Miyato et al. 2018)."""
    return (tf.reduce_mean(tf.nn.relu(1.0 - real_logits))
            + tf.reduce_mean(tf.nn.relu(1.0 + fake_logits)))


hinge_generator_loss = wasserstein_generator_loss


def least_squares_discriminator_loss(real_outputs: tf.Tensor,
                                     fake_outputs: tf.Tensor) -> tf.Tensor:
    """0.5 E[(D(x) - 1)^2] + 0.5 E[D(G(z))^2] (Mao et al. 2017, targets a=0, b=1)."""
    return 0.5 * (tf.reduce_mean(tf.square(real_outputs - 1.0))
                  + tf.reduce_mean(tf.square(fake_outputs)))


def least_squares_generator_loss(fake_outputs: tf.Tensor) -> tf.Tensor:
    """0.5 E[(D(G(z)) - 1)^2] (Mao et al. 2017, target c=1)."""
    return 0.5 * tf.reduce_mean(tf.square(fake_outputs - 1.0))


def _squared_gradient_norms(critic: Callable[[tf.Tensor], tf.Tensor],
                            inputs: tf.Tensor) -> tf.Tensor:
    """||d critic(x) / dx||^2 per example (scores are independent across the batch)."""
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        scores = critic(inputs)
    gradients = tape.gradient(scores, inputs)
    return _sum_per_example(tf.square(gradients))


def gradient_penalty(critic: Callable[[tf.Tensor], tf.Tensor], real: tf.Tensor, fake: tf.Tensor,
                     epsilon: tf.Tensor) -> tf.Tensor:
    """E[(||grad f(x_hat)||_2 - 1)^2] at x_hat = eps x + (1 - eps) G(z) (Gulrajani et al. 2017).

    Call it inside the critic's `GradientTape`: the penalty's own gradient (second order) is
    what keeps the critic near 1-Lipschitz.

    Args:
        critic: maps a batch of images to one score per image.
        real, fake: batches of the same shape.
        epsilon: [batch] interpolation weights, uniform in [0, 1].
    """
    weights = tf.reshape(epsilon, [-1] + [1] * (len(real.shape) - 1))
    interpolates = weights * real + (1.0 - weights) * fake
    # The small constant keeps the square root's gradient finite at a zero gradient.
    norms = tf.sqrt(_squared_gradient_norms(critic, interpolates) + 1e-12)
    return tf.reduce_mean(tf.square(norms - 1.0))


def r1_penalty(critic: Callable[[tf.Tensor], tf.Tensor], real: tf.Tensor) -> tf.Tensor:
    """E[||grad D(x)||^2] on real data (Mescheder et al. 2018); callers weight it by gamma / 2."""
    return tf.reduce_mean(_squared_gradient_norms(critic, real))
