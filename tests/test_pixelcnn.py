"""Tests for aigc_zoo.models.pixelcnn: causality and the receptive field of the two stacks, the
likelihoods against closed forms, and the cached sampler against the whole network (the shared
harness does the rest)."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo import losses
from aigc_zoo.errors import UserError
from aigc_zoo.models import pixelcnn


def _model(shape=(8, 8, 1), conditional=False, **fields):
    values = dict(filters=8, layers=2, first_kernel_size=3, kernel_size=3, head_filters=8)
    values.update(fields)
    config = pixelcnn.PixelCNNConfig(**values)
    cls = pixelcnn.CPixelCNN if conditional else pixelcnn.PixelCNN
    return cls(config, image_shape=shape, num_classes=10 if conditional else None)


def _receptive_field(row, column, radius, shape):
    """The earlier pixels the output at (row, column) should see: the R = sum of the layers'
    radii rows above it, R columns either side, and R + 1 pixels to its left."""
    height, width = shape
    field = np.zeros(shape, bool)
    field[max(row - 1 - radius, 0):row, max(column - radius, 0):column + radius + 1] = True
    field[row, max(column - radius - 1, 0):column] = True
    return field


@pytest.mark.parametrize("first_kernel_size,layers", [(3, 2), (5, 3)])
def test_each_output_sees_exactly_the_earlier_pixels_of_its_receptive_field(first_kernel_size,
                                                                            layers):
    height, width = 9, 9
    model = _model((height, width, 1), first_kernel_size=first_kernel_size, layers=layers)
    radius = first_kernel_size // 2 + (layers - 1)
    images = tf.Variable(tf.random.stateless_uniform([1, height, width, 1], [3, 4], -1, 1))
    with tf.GradientTape() as tape:
        outputs = tf.reshape(model.network(images), [height * width])
    jacobian = tape.jacobian(outputs, images)  # [H*W, 1, H, W, 1]
    depends = np.abs(jacobian.numpy().reshape(height, width, height, width)) > 0
    for row, column in itertools.product(range(height), range(width)):
        expected = _receptive_field(row, column, radius, (height, width))
        # Nothing at or after the pixel in raster order (its own value included), and
        # everything before it within the field: no blind spot.
        np.testing.assert_array_equal(depends[row, column], expected,
                                      err_msg=f"pixel ({row}, {column})")


def test_an_rgb_pixel_depends_on_no_channel_of_itself():
    model = _model((5, 5, 3), likelihood="logistic_mixture", mixture_components=2)
    images = tf.Variable(tf.random.stateless_uniform([1, 5, 5, 3], [1, 2], -1, 1))
    with tf.GradientTape() as tape:
        outputs = tf.reduce_sum(model.network(images)[0, 2, 2])
    gradient = tape.gradient(outputs, images).numpy()[0]
    assert not gradient[2, 2].any() and not gradient[2, 3:].any() and not gradient[3:].any()
    assert gradient[2, 1].all() and gradient[1, 2].all()


def _constant_output(model, bias):
    """Every weight zero but the output bias: each pixel's parameters are `bias`."""
    for variable in model.network.weights:
        variable.assign(tf.zeros_like(variable))
    model.network.head[1].bias.assign(bias)


def test_bernoulli_nll_of_hand_set_weights_is_the_closed_form():
    model = _model((4, 4, 1))
    _constant_output(model, [0.7])
    bits = np.random.default_rng(0).integers(0, 2, (3, 4, 4, 1)).astype(np.float32)
    log_likelihood = model.log_likelihood(tf.constant(2 * bits - 1)).numpy()
    p = 1 / (1 + np.exp(-0.7))
    expected = (bits * np.log(p) + (1 - bits) * np.log(1 - p)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(log_likelihood, expected, rtol=1e-5)


def _logistic_cdf(x):
    return 1 / (1 + np.exp(-x))


def test_logistic_mixture_nll_of_hand_set_weights_is_the_closed_form():
    model = _model((3, 3, 1), likelihood="logistic_mixture", mixture_components=2)
    # Parameters per component: logit, then mean and log-scale (one channel, no coefficients).
    logits, means, log_scales = np.array([0.3, -0.5]), np.array([-0.4, 0.5]), np.array([-1.0,
                                                                                      -2.0])
    _constant_output(model, np.concatenate([logits, np.stack([means, log_scales], 1).ravel()]))
    levels = np.random.default_rng(1).integers(0, 256, (2, 3, 3, 1))
    levels[0, 0, 0, 0], levels[0, 0, 1, 0] = 0, 255  # the edge bins take the tails
    x = levels / 127.5 - 1
    weights = np.exp(logits) / np.exp(logits).sum()
    probability = np.zeros(x.shape)
    for weight, mean, log_scale in zip(weights, means, log_scales):
        scale = np.exp(log_scale)
        upper = np.where(levels == 255, 1.0, _logistic_cdf((x + 1 / 255 - mean) / scale))
        lower = np.where(levels == 0, 0.0, _logistic_cdf((x - 1 / 255 - mean) / scale))
        probability += weight * (upper - lower)
    expected = np.log(probability).sum(axis=(1, 2, 3))
    log_likelihood = model.log_likelihood(tf.constant(x, tf.float32)).numpy()
    np.testing.assert_allclose(log_likelihood, expected, rtol=1e-5)


def test_a_two_channel_mixture_sums_to_one_over_every_pixel_value():
    rng = np.random.default_rng(2)
    params = rng.normal(0, 1, losses.logistic_mixture_size(3, 2)).astype(np.float32)
    levels = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), -1)
    x = tf.constant(levels.reshape(-1, 1, 1, 2) / 127.5 - 1, tf.float32)
    log_p = losses.discretized_logistic_mixture_log_likelihood(
        x, tf.broadcast_to(params, [256 * 256, 1, 1, params.size]), components=3)
    assert float(tf.reduce_sum(tf.exp(log_p))) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("likelihood,shape,conditional", [
    ("bernoulli", (6, 5, 1), False),
    ("logistic_mixture", (5, 6, 3), True),
])
def test_the_cache_computes_what_the_whole_network_computes(likelihood, shape, conditional):
    model = _model(shape, conditional, likelihood=likelihood, mixture_components=3, layers=3,
                   first_kernel_size=5)
    if conditional:  # the label maps start at zero; random ones test their per-row use
        model.network.label_maps.assign(tf.random.stateless_normal(
            model.network.label_maps.shape, [7, 8]))
    images = tf.round(tf.random.stateless_uniform([4, *shape], [5, 6], 0, 255)) / 127.5 - 1
    outputs = []
    for labels in ([tf.constant([0, 3, 7, 9]), tf.constant([5, 5, 1, 2])] if conditional
                   else [None]):
        expected = model.network(images, labels).numpy()
        replayed, params = model.network.cached_loop(tf.constant(4), labels,
                                                     lambda _, i, j: images[:, i, j])
        np.testing.assert_array_equal(replayed.numpy(), images.numpy())
        # The sampler's parameters are the likelihood's for the same labels, at every pixel.
        np.testing.assert_allclose(params.numpy(), expected, atol=1e-5)
        outputs.append(expected)
    if conditional:  # and the label changes them at every pixel, the first one included
        assert (np.abs(outputs[0] - outputs[1]).max(axis=-1) > 1e-4).all()


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic_mixture"])
def test_cached_and_uncached_sampling_give_the_same_pixels(likelihood):
    model = _model((6, 6, 1), True, likelihood=likelihood, mixture_components=3)
    cached = model.generate(5, seed=11, labels=[1, 2, 3, 4, 5], cache=True).numpy()
    uncached = model.generate(5, seed=11, labels=[1, 2, 3, 4, 5], cache=False).numpy()
    np.testing.assert_array_equal(cached, uncached)
    values = np.unique(cached)
    # Binary samples are declared, so sample quality binarises the real images they meet.
    assert model.knobs(model.config, model.image_shape).binary_samples \
        == (likelihood == "bernoulli")
    if likelihood == "bernoulli":
        assert set(values) <= {-1.0, 1.0}
    else:  # on the 256 levels
        np.testing.assert_allclose((values + 1) * 127.5, np.round((values + 1) * 127.5),
                                   atol=1e-4)
    other = model.generate(5, seed=12, labels=[1, 2, 3, 4, 5]).numpy()
    assert not np.array_equal(cached, other)


def test_a_trained_constant_model_samples_at_its_probability():
    model = _model((8, 8, 1))
    _constant_output(model, [np.log(0.2 / 0.8)])  # every pixel on with probability 0.2
    samples = model.generate(200, seed=0).numpy()
    assert np.mean(samples > 0) == pytest.approx(0.2, abs=0.01)


def _level(x):
    return np.round((np.clip(x, -1, 1) + 1) * 127.5) / 127.5 - 1


def test_the_sampler_couples_rgb_channels_in_the_likelihood_s_order():
    model = _model((2, 2, 3), likelihood="logistic_mixture", mixture_components=1)
    couplings = np.array([0.5, -0.3, 0.8])  # for the pairs (1, 0), (2, 0), (2, 1)
    red, green, blue = np.array([153, 140, 100]) / 127.5 - 1  # three of the 256 levels
    # Means that put the coupled means on those levels, and the smallest scale: a channel is
    # mostly its level, and the median of its samples is.
    means = [red, green - couplings[0] * red, blue - couplings[1] * red - couplings[2] * green]
    _constant_output(model, np.concatenate([[0.0], means, [-7.0] * 3, np.arctanh(couplings)]))
    samples = model.generate(100, seed=0).numpy().reshape(-1, 3)
    np.testing.assert_allclose(np.median(samples, axis=0), [red, green, blue], atol=1e-4)
    swapped = means[2] + couplings[2] * red + couplings[1] * green
    assert abs(swapped - blue) > 0.05  # the pair order matters for these numbers


# float16's loss scaling is shared (tests/test_gan.py checks it in `make test`).
@pytest.mark.parametrize("policy", ["mixed_bfloat16",
                                    pytest.param("mixed_float16", marks=pytest.mark.slow)])
def test_mixed_precision_keeps_float32_losses_and_samples_on_the_levels(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = _model((5, 5, 1), True, likelihood="logistic_mixture", mixture_components=2)
        model.compile()
        images = tf.round(tf.random.stateless_uniform([8, 5, 5, 1], [1, 1], 0, 255)) / 127.5 - 1
        batch = {"image": images, "label": tf.range(8) % 10}
        losses_ = model.compute_losses(batch, training=True)
        assert all(value.dtype == tf.float32 for value in losses_.values())
        history = model.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=1,
                            steps_per_epoch=2, verbose=0).history
        assert np.isfinite(history["loss"]).all()
        # The two samplers' half-precision roundings differ, so their pixels may too; both
        # must be float32 pixels on the 256 levels.
        for cache in (True, False):
            samples = model.generate(3, seed=4, cache=cache)
            assert samples.dtype == tf.float32
            levels = (samples.numpy() + 1) * 127.5
            np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("field,value", [("first_kernel_size", 4), ("kernel_size", 0),
                                         ("likelihood", "gaussian"), ("filters", 0),
                                         ("label_map_channels", -1)])
def test_bad_config_values_are_user_errors(field, value):
    with pytest.raises(UserError, match=field):
        pixelcnn.PixelCNNConfig(**{field: value}).validate()
