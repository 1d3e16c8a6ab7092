"""Exponential moving average of a network's weights (Polyak averaging), for sampling.

GANs (Yazıcı et al. 2019) and diffusion models (Ho et al. 2020) sample from an average of the
generator's recent weights: it smooths the optimiser's oscillation and gives visibly cleaner
samples. `WeightAverage` keeps a second copy of a functional network whose trainable weights
follow the live ones with

    average <- decay * average + (1 - decay) * live

after every optimizer step of the network's update group (call `update` from `after_update`).
The copy is a non-trainable attribute of the model, so checkpoints carry it and no optimizer
touches it.

Batch norm: the live network's moving statistics describe the live weights' activations, not
the averaged weights', and using them with the average spoils its samples (on `ring8`, see
`experiments/ema_batchnorm.py` and docs/gans.md). `update` copies them as a placeholder; call
`recompute_statistics` before sampling to replace them by the averaged network's own
("standing statistics", Brock et al. 2019).
"""

from __future__ import annotations

import keras
import tensorflow as tf


class _Untracked:
    """Holds references Keras must not track (they belong to another layer)."""

    def __init__(self, **values):
        self.__dict__.update(values)


@keras.saving.register_keras_serializable(package="aigc_zoo")
class WeightAverage(keras.layers.Layer):
    """An averaged copy of `network` (a functional or sequential Keras model).

    Args:
        network: the live network; it must be built.
        decay: weight of the old average per update, in [0, 1); 0 makes the copy follow the
            live weights exactly.
        warmup: when True, the decay used at update `n` is `min(decay, (1 + n) / (10 + n))`,
            so the average forgets the random initialisation within the first few hundred
            steps instead of the first `1 / (1 - decay)`.
    """

    def __init__(self, network: keras.Model, *, decay: float, warmup: bool = True, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{network.name}_average"), **kwargs)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.averaged = keras.models.clone_model(network)
        self.averaged.trainable = False
        self.averaged.set_weights(network.get_weights())
        self.updates = self.add_weight(shape=(), dtype="int64", initializer="zeros",
                                       trainable=False, name="updates",
                                       aggregation="only_first_replica")
        trainable = {id(v) for v in network.trainable_weights}
        self._live = _Untracked(network=network, pairs=[
            (average, live, id(live) in trainable)
            for average, live in zip(self.averaged.weights, network.weights, strict=True)],
            probes=None, statistics_at=-1)
        self.batch_norms = [layer for layer in self.averaged.layers
                            if isinstance(layer, keras.layers.BatchNormalization)]
        self.built = True

    def get_config(self) -> dict:
        # The live network is serialised whole, so `from_config` rebuilds a standalone average
        # (its weights come from the saved file). Inside a model, the model's own constructor
        # makes the average from its live network instead.
        return {**super().get_config(), "network": keras.saving.serialize_keras_object(self.live),
                "decay": self.decay, "warmup": self.warmup}

    @classmethod
    def from_config(cls, config: dict) -> "WeightAverage":
        values = dict(config)
        network = keras.saving.deserialize_keras_object(values.pop("network"))
        return cls(network, **values)

    @property
    def live(self) -> keras.Model:
        """The network being averaged."""
        return self._live.network

    def call(self, *args, **kwargs):
        return self.averaged(*args, **kwargs)

    def current_decay(self) -> tf.Tensor:
        """The decay the next `update` uses."""
        if not self.warmup:
            return tf.constant(self.decay, tf.float32)
        n = tf.cast(self.updates, tf.float32)
        return tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + n) / (10.0 + n))

    def update(self) -> None:
        """Move the average one step towards the live weights."""
        decay = self.current_decay()
        # d and 1 - d once per dtype, not once per variable: fewer ops for the step to trace.
        weights = {}
        for average, live, trainable in self._live.pairs:
            if trainable:
                if average.dtype not in weights:
                    d = tf.cast(decay, average.dtype)
                    weights[average.dtype] = (d, 1.0 - d)
                d, rest = weights[average.dtype]
                average.assign(d * average + rest * tf.cast(live, average.dtype))
            else:
                average.assign(live)
        self.updates.assign_add(1)

    def ensure_statistics(self, make_inputs) -> None:
        """`recompute_statistics(make_inputs())` unless done since the last `update`.

        Cheap to call before every sampling; `make_inputs` is only called when needed.
        """
        updates = int(self.updates.numpy())
        if self.batch_norms and updates != self._live.statistics_at:
            self.recompute_statistics(make_inputs())
            self._live.statistics_at = updates

    def recompute_statistics(self, inputs) -> None:
        """Set the averaged copy's batch-norm statistics to those of its own activations.

        Layer by layer in order, each batch-norm layer's moving mean and variance become the
        moments of its input over `inputs` (a large batch of network inputs, e.g. 1,024
        latents), computed with the layers before it already updated. Nothing to do without
        batch norm.
        """
        if not self.batch_norms:
            return
        if self._live.probes is None:
            self._live.probes = [keras.Model(self.averaged.input, layer.input)
                                 for layer in self.batch_norms]
        for layer, probe in zip(self.batch_norms, self._live.probes):
            activations = tf.cast(probe(inputs, training=False), tf.float32)
            axes = list(range(len(activations.shape) - 1))
            mean, variance = tf.nn.moments(activations, axes)
            layer.moving_mean.assign(tf.cast(mean, layer.moving_mean.dtype))
            layer.moving_variance.assign(tf.cast(variance, layer.moving_variance.dtype))
