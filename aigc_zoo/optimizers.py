"""Adam and AdamW whose per-variable update is TensorFlow's fused Adam kernel.

Keras 3 writes Adam's update with backend-neutral ops: about seventeen graph ops per variable
(the step's powers, casts and the moment updates, each traced again for every variable). The
zoo runs on TensorFlow only, so its Adam hands each variable to `ResourceApplyAdam`, TensorFlow's
own kernel of the same update (tf.keras 2 used it; XLA compiles it), one op per variable: a
train step traces faster and runs fewer ops (docs/performance.md has the measurement). The
optimizer's variables, its config and everything Keras does around the update (clipping,
weight decay, loss scaling, replicas) are Keras's own, so checkpoints are unchanged.

The update is the same formula; only the rounding of the constants differs (the kernel forms
`1 - beta_1` in float32, Keras in float64), so a run's numbers change in the last bits against
Keras's Adam, not in behaviour.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class _FusedUpdate:
    """`update_step` through `ResourceApplyAdam` (AMSGrad keeps Keras's update).

    The kernel's scalar inputs (the bias-correction powers of the step, the cast constants and
    learning rate) are the same for every variable of one `apply`, so they are made once per
    `apply` and dtype, not once per variable: about ten fewer graph ops a variable, which a
    train step's trace and first run pay for (docs/performance.md). A GAN's discriminator
    steps call `apply` several times in one graph, each after the last moved `iterations`, so
    the scalars never outlive their `apply`.
    """

    def apply(self, grads, trainable_variables=None):
        # Under MirroredStrategy every replica thread enters `apply` and the updates run once,
        # in a merge call that waits for all of them: each thread's reset happens before it,
        # and no thread leaves (clearing) during it.
        self._step_scalars = {}
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._step_scalars = {}

    def _scalars(self, dtype, learning_rate) -> dict:
        cache = getattr(self, "_step_scalars", None)
        if cache is not None and dtype in cache:
            return cache[dtype]
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        scalars = {"beta1_power": tf.pow(beta_1, step), "beta2_power": tf.pow(beta_2, step),
                   "lr": tf.cast(learning_rate, dtype), "beta1": beta_1, "beta2": beta_2,
                   "epsilon": tf.cast(self.epsilon, dtype)}
        if cache is not None:  # None: called outside `apply`, nothing to share with
            cache[dtype] = scalars
        return scalars

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        # `.handle` of a replica's component inside `Strategy.extended.update`, as Keras's own
        # `assign_add` reaches it.
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle,
            v=self._velocities[index].handle, **self._scalars(dtype, learning_rate),
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype))


@keras.saving.register_keras_serializable(package="aigc_zoo")
class Adam(_FusedUpdate, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with the fused update (same arguments)."""


@keras.saving.register_keras_serializable(package="aigc_zoo")
class AdamW(_FusedUpdate, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with the fused update (same arguments; the decoupled weight
    decay is Keras's, applied before the update)."""
