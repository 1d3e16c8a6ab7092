"""The fast normalisation layers compute what Keras' layers do: outputs, gradients, statistics."""

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
    """A Keras layer and ours, built for `shape`, with equal random gamma and beta."""
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


@pytest.mark.parametrize("shape,kwargs", [
    ((16, 5, 5, 12), {}),
    ((16, 5, 5, 12), {"momentum": 0.8, "center": False}),
    ((16, 5, 5, 12), {"scale": False, "epsilon": 1e-5}),
    ((32, 10), {}),
])
def test_batch_norm_training_matches_keras(shape, kwargs):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=shape) * 3 + 2).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    reference, ours = _pair(keras.layers.BatchNormalization,
                            normalization.BatchNormalization, shape, **kwargs)
    for _ in range(2):  # the second step starts from updated moving statistics
        expected = _outputs_and_gradients(reference, x, upstream, training=True)
        actual = _outputs_and_gradients(ours, x, upstream, training=True)
        _assert_same(expected, actual)
        _assert_same([reference.moving_mean, reference.moving_variance],
                     [np.asarray(ours.moving_mean), np.asarray(ours.moving_variance)])
    # Inference reads the moving statistics the same way.
    _assert_same(_outputs_and_gradients(reference, x, upstream, training=False),
                 _outputs_and_gradients(ours, x, upstream, training=False))


def test_batch_norm_training_matches_keras_inside_a_graph():
    shape = (8, 4, 4, 6)
    rng = np.random.default_rng(2)
    x = rng.normal(size=shape).astype("float32")
    upstream = tf.constant(rng.normal(size=shape).astype("float32"))
    reference, ours = _pair(keras.layers.BatchNormalization,
                            normalization.BatchNormalization, shape)
    graph = tf.function(_tensors)
    _assert_same([np.asarray(t) for t in graph(reference, x, upstream, training=True)],
                 [np.asarray(t) for t in graph(ours, x, upstream, training=True)])


def test_batch_norm_falls_back_to_keras_where_the_fused_kernel_does_not_apply():
    layer = normalization.BatchNormalization(synchronized=True)
    assert not layer._fused(tf.zeros([4, 3, 3, 2]), None)
    assert not normalization.BatchNormalization()._fused(tf.zeros([4, 3, 2]), None)
    assert not normalization.BatchNormalization(axis=1)._fused(tf.zeros([4, 3, 3, 2]), None)
    assert normalization.BatchNormalization()._fused(tf.zeros([4, 3, 3, 2]), None)
    # The fallback still trains: a rank-3 input goes through Keras' code.
    shape = (6, 5, 4)
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    reference, ours = _pair(keras.layers.BatchNormalization,
                            normalization.BatchNormalization, shape)
    _assert_same(_outputs_and_gradients(reference, x, upstream, training=True),
                 _outputs_and_gradients(ours, x, upstream, training=True))


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
        for keras_class, ours_class, kwargs in [
                (keras.layers.BatchNormalization, normalization.BatchNormalization, {}),
                (keras.layers.GroupNormalization, normalization.GroupNormalization,
                 {"groups": 2})]:
            reference, ours = _pair(keras_class, ours_class, shape, **kwargs)
            call = {"training": True} if "Batch" in ours_class.__name__ else {}
            y_ref, y = reference(x, **call), ours(x, **call)
            assert y.dtype == y_ref.dtype == tf.bfloat16
            assert ours.gamma.dtype == "float32"
            np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_ref, np.float32),
                                       atol=0.05)
    finally:
        keras.config.set_dtype_policy(previous)


def test_models_with_the_layers_save_and_load(tmp_path):
    inputs = keras.Input((6, 6, 4))
    h = normalization.GroupNormalization(2)(inputs)
    outputs = normalization.BatchNormalization()(h)
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [type(layer) for layer in loaded.layers[1:]] == [normalization.GroupNormalization,
                                                          normalization.BatchNormalization]
    x = np.random.default_rng(9).normal(size=(3, 6, 6, 4)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
