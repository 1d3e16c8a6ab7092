"""The group norm layer computes what Keras' layer does: outputs and gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo.models import normalization


def _tensors(layer, x, upstream, **call_kwargs):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, **call_kwargs)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]


def _outputs_and_gradients(layer, x, upstream, **call_kwargs):
    return [np.asarray(t, np.float32) for t in _tensors(layer, x, upstream, **call_kwargs)]


def _pair(keras_class, ours_class, shape, seed=0, **kwargs):
    """A Keras layer and ours, built for `shape`, with equal random weights."""
    rng = np.random.default_rng(seed)
    reference, ours = keras_class(**kwargs), ours_class(**kwargs)
    reference.build(shape)
    ours.build(shape)
    for weight in reference.trainable_weights:
        weight.assign(rng.normal(1.0, 0.5, weight.shape).astype("float32"))
    ours.set_weights(reference.get_weights())
    return reference, ours


def _assert_same(expected, actual, rtol=2e-5):
    for e, a in zip(expected, actual, strict=True):
        scale = max(float(np.max(np.abs(e))), 1e-6)
        np.testing.assert_allclose(a / scale, e / scale, atol=rtol)


@pytest.mark.parametrize("groups,shape,offset", [
    (4, (6, 7, 7, 16), 0.0),
    (1, (6, 7, 7, 16), 0.0),
    (16, (6, 7, 7, 16), 0.0),
    (2, (5, 9, 4), 0.0),            # a sequence: rank 3
    (4, (6, 7, 7, 16), 1000.0),     # a large mean: the variance must not cancel out
])
def test_group_norm_matches_keras(groups, shape, offset):
    rng = np.random.default_rng(4)
    x = (rng.normal(size=shape) * 3 + offset).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    reference, ours = _pair(keras.layers.GroupNormalization,
                            normalization.GroupNormalization, shape, groups=groups)
    _assert_same(_outputs_and_gradients(reference, x, upstream),
                 _outputs_and_gradients(ours, x, upstream), rtol=1e-4 if offset else 2e-5)


def test_group_norm_gradient_is_the_numerical_gradient():
    # Independent of Keras: central differences of a float64 loss through the float32 layer.
    shape = (2, 3, 3, 4)
    layer = normalization.GroupNormalization(groups=2)
    layer.build(shape)
    layer.gamma.assign([0.5, 1.0, 1.5, 2.0])
    x = np.random.default_rng(5).normal(size=shape).astype("float32")
    weights = np.random.default_rng(6).normal(size=shape)

    def loss(values):
        return float(np.sum(np.asarray(layer(tf.constant(values, tf.float32)), np.float64)
                            * weights))

    x_tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tensor)
        value = tf.reduce_sum(layer(x_tensor) * tf.constant(weights, tf.float32))
    analytic = tape.gradient(value, x_tensor).numpy().ravel()
    step = 1e-2
    for index in np.random.default_rng(7).choice(x.size, 8, replace=False):
        plus, minus = x.copy().ravel(), x.copy().ravel()
        plus[index] += step
        minus[index] -= step
        numeric = (loss(plus.reshape(shape)) - loss(minus.reshape(shape))) / (2 * step)
        assert abs(numeric - analytic[index]) < 2e-2 * max(1.0, abs(numeric))


def test_mixed_precision_outputs_follow_the_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        shape = (8, 5, 5, 8)
        x = np.random.default_rng(8).normal(size=shape).astype("float32")
        reference, ours = _pair(keras.layers.GroupNormalization,
                                normalization.GroupNormalization, shape, groups=2)
        y_ref, y = reference(x), ours(x)
        assert y.dtype == y_ref.dtype == tf.bfloat16
        assert ours.gamma.dtype == "float32"
        np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_ref, np.float32),
                                   atol=0.05)
    finally:
        keras.config.set_dtype_policy(previous)


def test_models_with_the_layers_save_and_load(tmp_path):
    inputs = keras.Input((6, 6, 4))
    outputs = normalization.GroupNormalization(2)(inputs)
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[1]) is normalization.GroupNormalization
    x = np.random.default_rng(9).normal(size=(3, 6, 6, 4)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
