"""The fused Adam and AdamW (aigc_zoo/optimizers.py): Keras's update, one kernel per variable."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo import optimizers


def _train(optimizer, steps=5, sparse=False):
    """`steps` updates of two variables from fixed gradients; their values and the optimizer's
    variables afterwards."""
    rng = np.random.default_rng(0)
    weights = [keras.Variable(rng.normal(size=(6, 3)).astype(np.float32)),
               keras.Variable(rng.normal(size=(4,)).astype(np.float32))]
    for step in range(steps):
        grads = [tf.constant(rng.normal(size=w.shape).astype(np.float32) * (step + 1))
                 for w in weights]
        if sparse:  # an embedding's gradient: rows 1 and 4 only
            grads[0] = tf.IndexedSlices(tf.gather(grads[0], [1, 4]), tf.constant([1, 4]),
                                        tf.constant([6, 3]))
        optimizer.apply(grads, weights)
    return [w.numpy() for w in weights], [v.numpy() for v in optimizer.variables]


@pytest.mark.parametrize("make_pair", [
    lambda cls: cls(1e-2, beta_1=0.5, beta_2=0.95),
    lambda cls: cls(keras.optimizers.schedules.ExponentialDecay(1e-2, 2, 0.5), clipnorm=1.0),
], ids=["constants", "schedule and clipping"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "indexed slices"])
def test_adam_matches_keras_to_rounding(make_pair, sparse):
    fused, reference = (_train(make_pair(cls), sparse=sparse)
                        for cls in (optimizers.Adam, keras.optimizers.Adam))
    for a, b in zip(fused[0] + fused[1], reference[0] + reference[1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(fused[0][0], _train(make_pair(optimizers.Adam), steps=0)[0][0])


def test_adamw_matches_keras_with_its_weight_decay():
    fused, reference = (_train(cls(1e-2, weight_decay=0.1, beta_2=0.95))
                        for cls in (optimizers.AdamW, keras.optimizers.AdamW))
    for a, b in zip(fused[0], reference[0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_amsgrad_keeps_keras_update():
    fused, reference = (_train(cls(1e-2, amsgrad=True))
                        for cls in (optimizers.Adam, keras.optimizers.Adam))
    for a, b in zip(fused[0], reference[0], strict=True):
        np.testing.assert_array_equal(a, b)


def test_one_kernel_per_variable_in_a_traced_step():
    weights = [keras.Variable(np.ones((3, 3), np.float32)) for _ in range(4)]
    optimizer = optimizers.Adam(1e-3)
    optimizer.build(weights)

    @tf.function
    def step():
        optimizer.apply([tf.ones_like(w) for w in weights], weights)

    ops = [op.type for op in step.get_concrete_function().graph.get_operations()]
    assert ops.count("ResourceApplyAdam") == 4
    # Keras's own update subtracts from each variable separately (AssignSubVariableOp).
    assert "AssignSubVariableOp" not in ops


def test_the_step_scalars_are_made_once_an_apply_and_each_apply_sees_its_own_step():
    """Four variables, two applies in one graph (a GAN's discriminator steps): one pair of
    bias-correction powers per apply, and the same values as two eager applies."""
    def make():
        weights = [keras.Variable(np.full((3, 3), float(i), np.float32)) for i in range(4)]
        optimizer = optimizers.Adam(1e-2, beta_1=0.5)
        optimizer.build(weights)
        return weights, optimizer

    def two_applies(weights, optimizer):
        for scale in (1.0, -3.0):
            optimizer.apply([tf.fill(w.shape, scale) * (1 + w) for w in weights], weights)

    traced_weights, traced_optimizer = make()
    step = tf.function(lambda: two_applies(traced_weights, traced_optimizer))
    ops = [op.type for op in step.get_concrete_function().graph.get_operations()]
    assert ops.count("ResourceApplyAdam") == 8 and ops.count("Pow") == 2 * 2
    step()
    eager_weights, eager_optimizer = make()
    two_applies(eager_weights, eager_optimizer)
    for traced, eager in zip(traced_weights, eager_weights, strict=True):
        np.testing.assert_array_equal(traced.numpy(), eager.numpy())


def test_config_round_trip():
    optimizer = optimizers.AdamW(3e-4, weight_decay=0.05, beta_2=0.95)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is optimizers.AdamW
    assert restored.get_config() == optimizer.get_config()
