"""Losses and log-likelihoods as pure functions of tensors.

Conventions: images are in [-1, 1]; log-likelihoods are summed over every axis but the first
(one value per example, in nats); callers take the batch mean.
"""

from __future__ import annotations

import math

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
    """log P(x) of images quantised to `num_bins` levels in [-1, 1] under a discretised logistic.

    Each pixel's probability is the logistic mass of its bin; the edge bins take the tails
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
    log_prob = tf.where(x < -1.0 + half_bin, log_cdf_upper,
                        tf.where(x > 1.0 - half_bin, log_survival_lower, log_mass))
    return _sum_per_example(log_prob)


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
