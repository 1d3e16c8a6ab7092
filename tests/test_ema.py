"""WeightAverage: the averaging rule, copied batch-norm statistics, tracking and checkpoints."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo.models.ema import WeightAverage


def _network():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4)(inputs)
    outputs = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, outputs, name="net")


class _Holder(keras.Model):
    def __init__(self, decay, warmup):
        super().__init__()
        self.net = _network()
        self.average = WeightAverage(self.net, decay=decay, warmup=warmup)


def test_average_follows_the_rule_and_copies_moving_statistics():
    holder = _Holder(decay=0.75, warmup=False)
    kernel = holder.net.trainable_weights[0]
    start = kernel.numpy()
    kernel.assign(start + 4.0)
    holder.net.non_trainable_weights[0].assign(tf.fill([4], 7.0))  # moving_mean
    update = tf.function(holder.average.update)
    update()
    averaged = holder.average.averaged
    np.testing.assert_allclose(averaged.weights[0].numpy(), start + 0.25 * 4.0,
                               rtol=1e-6)
    np.testing.assert_array_equal(averaged.weights[4].numpy(), np.full(4, 7.0))
    update()
    np.testing.assert_allclose(averaged.weights[0].numpy(),
                               start + (1 - 0.75 ** 2) * 4.0, rtol=1e-6)
    assert int(holder.average.updates.numpy()) == 2


def test_warmup_starts_with_a_small_decay():
    holder = _Holder(decay=0.999, warmup=True)
    assert holder.average.current_decay().numpy() == pytest.approx(0.1)
    holder.average.updates.assign(990)
    assert holder.average.current_decay().numpy() == pytest.approx(991 / 1000)
    holder.average.updates.assign(100_000)
    assert holder.average.current_decay().numpy() == pytest.approx(0.999)


def test_average_is_tracked_once_non_trainable_and_starts_equal():
    holder = _Holder(decay=0.9, warmup=True)
    ids = [id(v) for v in holder.variables]
    assert len(ids) == len(set(ids)) == 2 * len(holder.net.weights) + 1
    assert {id(v) for v in holder.trainable_variables} == \
        {id(v) for v in holder.net.trainable_weights}
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(holder.average(x).numpy(), holder.net(x).numpy())


def test_rejects_a_decay_outside_zero_one():
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(_network(), decay=1.0)


def test_recomputed_statistics_are_the_moments_of_each_layers_own_input():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    x = keras.layers.Dense(5)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dense(4)(keras.layers.ReLU()(x))
    outputs = keras.layers.BatchNormalization()(x)
    network = keras.Model(inputs, outputs)
    average = WeightAverage(network, decay=0.9)
    for weight in average.averaged.weights:
        if "kernel" in weight.path:
            weight.assign(weight + 0.5)  # averaged weights that differ from the live ones
    batch = np.random.default_rng(0).normal(size=(256, 3)).astype(np.float32)
    average.recompute_statistics(batch)
    first, second = average.batch_norms
    hidden = average.averaged.layers[1](batch)  # the first Dense
    np.testing.assert_allclose(first.moving_mean.numpy(), hidden.numpy().mean(0), atol=1e-5)
    np.testing.assert_allclose(first.moving_variance.numpy(), hidden.numpy().var(0), rtol=1e-4)
    # The second layer's input passes through the first with its new statistics.
    second_input = keras.Model(average.averaged.input, second.input)(batch, training=False)
    np.testing.assert_allclose(second.moving_mean.numpy(), second_input.numpy().mean(0),
                               atol=1e-5)
    np.testing.assert_allclose(second.moving_variance.numpy(), second_input.numpy().var(0),
                               rtol=1e-4)
    # With those statistics the averaged network normalises the batch: mean 0, and variance
    # var / (var + epsilon), which is near 1 only for features whose variance dwarfs epsilon
    # (a feature with little variance is possible for some initial weights).
    normalised = average.averaged(batch, training=False).numpy()
    variance = second_input.numpy().var(0)
    np.testing.assert_allclose(normalised.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(normalised.var(0), variance / (variance + second.epsilon),
                               rtol=1e-3)
