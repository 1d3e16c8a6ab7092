"""Gated PixelCNN, `pixelcnn` and class-conditional `cpixelcnn` (van den Oord et al. 2016b,
"Conditional Image Generation with PixelCNN Decoders").

An autoregressive model: log p(x) = sum_i log p(x_i | x_<i) over the pixels in raster order, so
the likelihood is exact and training maximises it directly. Each layer has two stacks of
convolutions: a vertical stack whose kernel covers the rows above (shifted down one row before
the horizontal stack reads it) and a horizontal stack whose kernel covers the pixels to the
left in the same row. Together they see every earlier pixel within the receptive field, unlike
the original PixelCNN's masked 3x3 kernels, which leave a blind spot. Each stack is gated,
tanh(a) * sigmoid(b), and the horizontal stack is residual. `cpixelcnn` adds the label to
every gate of both stacks (the paper's conditional PixelCNN): a learned embedding, the same at
every pixel, plus a learned per-label map of the image's positions through a 1x1 convolution
(the paper's location-dependent s = m(h), `label_map_channels`). The receptive field is about
8 pixels, so over the blank rows above a digit the network cannot tell one column from the next,
and a label that is the same at every pixel can say which digit but not where its strokes go;
with the map the samples follow their labels far more often (docs/autoregressive.md, measured).

Likelihoods (`likelihood`):
- `bernoulli`: pixels binarised (a fresh draw each time a batch is seen in training, a fixed
  draw in evaluation: the same images the VAE's evaluation binarises for the same seed), the
  convention of the binarised-MNIST results, NLL in nats per image;
- `logistic_mixture`: 8-bit pixels under a mixture of discretised logistics (Salimans et al.
  2017, PixelCNN++), bits per dimension; a pixel's channels share the mixture component and a
  channel's mean is linear in the earlier channels' values, so colour images need no channel
  masks. Under `bernoulli` the channels of one pixel are independent given the earlier pixels.

Sampling is one compiled loop over the pixels for the whole batch. With `sample_cache` (the
default) it follows Ramachandran et al. 2017 ("Fast generation for convolutional autoregressive
models"): each layer keeps the few rows (vertical stack) and columns (horizontal stack) its
kernel still needs, so a new pixel costs one position per layer and a finished row one row per
layer, instead of a forward pass over the whole image per pixel. `sample_cache=False` runs the
whole network per pixel, for comparison; in float32 both give the same pixels for a seed
(under mixed precision their half-precision roundings differ, and so may their pixels).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import keras
import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import losses
from aigc_zoo import optimizers
from aigc_zoo import registry
from aigc_zoo.errors import UserError
from aigc_zoo.models import base

LIKELIHOODS = ("bernoulli", "logistic_mixture")
_MIN_LOG_SCALE = -7.0
_LEVELS = 256


@dataclasses.dataclass
class PixelCNNConfig(config_lib.TrainConfig):
    """Hyperparameters of the Gated PixelCNN.

    Run: `python -m aigc_zoo.run --model=pixelcnn`

    Args:
        filters: channels of each stack (p; the gates see 2p).
        layers: gated layers.
        first_kernel_size: the first layer's kernel (odd), which sees the image itself.
        kernel_size: the other layers' kernel (odd).
        head_filters: channels of the 1x1 output layers after the last gated layer.
        label_map_channels: channels of each label's learned map of the positions (`cpixelcnn`;
            0: the position-independent label embedding only).
        likelihood: one of `LIKELIHOODS`.
        mixture_components: logistics per pixel of `logistic_mixture`.
        learning_rate: Adam's step size.
        sample_cache: sample with the per-layer caches (see the module's doc).
        eval_examples: test examples used by `--mode=eval` (0: the whole split).
    """

    batch_size: int = 64
    epochs: int = 1
    filters: int = 32
    layers: int = 6
    first_kernel_size: int = 7
    kernel_size: int = 3
    head_filters: int = 64
    # Runs saved before the maps existed had none (and restore so).
    label_map_channels: int = config_lib.added_field(8, before=0)
    likelihood: str = "bernoulli"
    mixture_components: int = 5
    learning_rate: float = 1e-3
    sample_cache: bool = config_lib.sampling_field(True)
    eval_examples: int = config_lib.sampling_field(0)

    def validate(self) -> None:
        super().validate()
        config_lib.check_positive("filters", self.filters)
        config_lib.check_positive("layers", self.layers)
        for name in ("first_kernel_size", "kernel_size"):
            value = getattr(self, name)
            if value < 1 or value % 2 == 0:
                raise UserError(f"bad value {name}={value!r}: expected an odd integer >= 1")
        config_lib.check_positive("head_filters", self.head_filters)
        config_lib.check_range("label_map_channels", self.label_map_channels, 0, float("inf"))
        config_lib.check_choice("likelihood", self.likelihood, LIKELIHOODS)
        config_lib.check_positive("mixture_components", self.mixture_components)
        config_lib.check_positive("learning_rate", self.learning_rate)
        config_lib.check_range("eval_examples", self.eval_examples, 0, float("inf"))


def _column(bias: Any, j: tf.Tensor) -> Any:
    """Column j [N, 1, 1, D] of a row's label bias [N, 1, W, D]; a bias that is the same at
    every column (or none, 0.0) as it is."""
    if isinstance(bias, float) or bias.shape[2] == 1:
        return bias
    return bias[:, :, j][:, :, None]


def gate(pre: tf.Tensor) -> tf.Tensor:
    """tanh(a) * sigmoid(b) of the two halves of the last axis."""
    a, b = tf.split(pre, 2, axis=-1)
    return tf.tanh(a) * tf.sigmoid(b)


class GatedPixelCNN(keras.layers.Layer):
    """The two-stack network: images [N, H, W, C] in [-1, 1] (and labels) to per-pixel
    parameters [N, H, W, output_channels], where pixel i's depend only on pixels before i.

    The layers are applied either to the whole image (`call`) or, by the sampler's caches, to a
    few rows or columns at a time: every convolution is 'valid' on explicitly padded inputs, so
    both ways compute the same function.
    """

    def __init__(self, image_shape: Sequence[int], *, filters: int, layers: int,
                 first_kernel_size: int, kernel_size: int, head_filters: int,
                 output_channels: int, num_classes: int | None = None,
                 label_map_channels: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self.image_shape = tuple(image_shape)
        self.filters = filters
        # Each layer's kernel radius r: the vertical kernel is (r + 1) x (2r + 1) (rows i - r..i),
        # the horizontal one 1 x (r + 1) (columns j - r..j; j - r - 1..j - 1 in the first layer,
        # which must not see the pixel it predicts).
        self.radii = [first_kernel_size // 2] + [kernel_size // 2] * (layers - 1)
        conv = keras.layers.Conv2D
        self.vertical = [conv(2 * filters, (r + 1, 2 * r + 1), name=f"vertical_{index}")
                         for index, r in enumerate(self.radii)]
        self.vertical_to_horizontal = [conv(2 * filters, 1, name=f"vertical_to_horizontal_{index}")
                                       for index in range(layers)]
        self.horizontal = [conv(2 * filters, (1, r + 1), name=f"horizontal_{index}")
                           for index, r in enumerate(self.radii)]
        self.residual = [conv(filters, 1, name=f"residual_{index}") for index in range(layers)]
        self.label_embeddings = ([keras.layers.Embedding(num_classes, 4 * filters,
                                                         name=f"label_{index}")
                                  for index in range(layers)] if num_classes else [])
        # Each label's map of the positions, projected to every layer's gates; zeros at first,
        # so an untrained model's gates see only the embedding.
        self.num_classes = num_classes
        self.label_map_channels = label_map_channels if num_classes else 0
        self.label_projections = [conv(4 * filters, 1, use_bias=False,
                                       name=f"label_map_{index}")
                                  for index in range(layers)] if self.label_map_channels else []
        self.head = [conv(head_filters, 1, name="head_hidden"),
                     conv(output_channels, 1, name="head_output")]

    def build(self, input_shape: Any = None) -> None:
        height, width, channels = self.image_shape
        p = self.filters
        for index, r in enumerate(self.radii):
            inputs = channels if index == 0 else p
            self.vertical[index].build((None, r + 1, width + 2 * r, inputs))
            self.vertical_to_horizontal[index].build((None, 1, width, 2 * p))
            self.horizontal[index].build((None, 1, r + 1, inputs))
            self.residual[index].build((None, 1, width, p))
        for embedding in self.label_embeddings:
            embedding.build((None,))
        if self.label_map_channels:
            self.label_maps = self.add_weight(
                shape=(self.num_classes, height, width, self.label_map_channels),
                initializer="zeros", name="label_maps")
            for projection in self.label_projections:
                projection.build((None, 1, width, self.label_map_channels))
        self.head[0].build((None, 1, width, p))
        self.head[1].build((None, 1, width, self.head[0].filters))
        self.built = True

    def label_maps_of(self, labels: tf.Tensor | None) -> tf.Tensor | None:
        """The labels' maps [N, H, W, label_map_channels] (None without them)."""
        if labels is None or not self.label_map_channels:
            return None
        return tf.cast(tf.gather(self.label_maps, labels), self.compute_dtype)

    def label_biases(self, labels: tf.Tensor | None, maps: tf.Tensor | None = None
                     ) -> list[tuple[Any, Any]]:
        """Per layer, the label's additions to the vertical and horizontal gates (zeros
        without labels): [N, 1, 1, 2p] each from the embedding, plus [N, h, W, 2p] from `maps`
        (the rows of `label_maps_of` these biases are for: all of them, or one in the cached
        sampler)."""
        if not self.label_embeddings:
            return [(0.0, 0.0)] * len(self.radii)
        biases = []
        for index, embedding in enumerate(self.label_embeddings):
            bias = embedding(labels)[:, None, None, :]
            if maps is not None:
                bias = bias + self.label_projections[index](maps)
            biases.append(tuple(tf.split(bias, 2, axis=-1)))
        return biases

    def output_params(self, h: tf.Tensor) -> tf.Tensor:
        """The per-pixel parameters from the last horizontal features, in float32."""
        hidden = self.head[0](tf.nn.relu(h))
        return tf.cast(self.head[1](tf.nn.relu(hidden)), tf.float32)

    def call(self, images: tf.Tensor, labels: tf.Tensor | None = None) -> tf.Tensor:
        width = self.image_shape[1]
        v = h = tf.cast(images, self.compute_dtype)
        biases = self.label_biases(labels, self.label_maps_of(labels))
        for index, (r, (label_v, label_h)) in enumerate(zip(self.radii, biases)):
            v_pre = self.vertical[index](tf.pad(v, [[0, 0], [r, 0], [r, r], [0, 0]])) + label_v
            # Shifted down a row: the horizontal stack at row i sees the rows above i only.
            shifted = tf.pad(v_pre, [[0, 0], [1, 0], [0, 0], [0, 0]])[:, :-1]
            if index == 0:
                h_pre = self.horizontal[0](tf.pad(h, [[0, 0], [0, 0], [r + 1, 0], [0, 0]]))
                h_pre = h_pre[:, :, :width]
            else:
                h_pre = self.horizontal[index](tf.pad(h, [[0, 0], [0, 0], [r, 0], [0, 0]]))
            h_pre += self.vertical_to_horizontal[index](shifted) + label_h
            out = self.residual[index](gate(h_pre))
            h = out if index == 0 else h + out
            v = gate(v_pre)
        return self.output_params(h)

    def _cached_column(self, h_windows: list[tf.Tensor], from_vertical: list[tf.Tensor],
                       biases: list[tuple[Any, Any]], j: tf.Tensor
                       ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """One pixel's horizontal stack from the layers' column windows: its parameters
        [N, P] and the windows with this column pushed in (all but the first layer's, whose
        input is the pixel itself, pushed once it is drawn)."""
        h = None
        pushed = [h_windows[0]]
        for index, (_, label_h) in enumerate(biases):
            if index == 0:
                window = h_windows[0]  # the image's columns j - r - 1 .. j - 1
            else:  # this layer's input at columns j - r .. j
                window = tf.concat([h_windows[index][:, :, 1:], h], axis=2)
                pushed.append(window)
            pre = (self.horizontal[index](window) + _column(label_h, j)
                   + from_vertical[index][:, :, j][:, :, None])
            out = self.residual[index](gate(pre))
            h = out if index == 0 else h + out
        return self.output_params(h)[:, 0, 0], pushed

    def _cached_row(self, row: tf.Tensor, v_windows: list[tf.Tensor],
                    biases: list[tuple[Any, Any]]) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        """A finished row [N, W, C] pushed into each layer's vertical window and one new row of
        every layer computed (`biases`: that row's): the new windows, and the next row's
        vertical inputs to the horizontal stack."""
        v_in = tf.cast(row, self.compute_dtype)[:, None]
        windows, from_vertical = [], []
        for index, (r, (label_v, _)) in enumerate(zip(self.radii, biases)):
            padded = tf.pad(v_in, [[0, 0], [0, 0], [r, r], [0, 0]])
            window = tf.concat([v_windows[index][:, 1:], padded], axis=1)
            v_pre = self.vertical[index](window) + label_v
            windows.append(window)
            from_vertical.append(self.vertical_to_horizontal[index](v_pre))
            v_in = gate(v_pre)
        return windows, from_vertical

    def cached_loop(self, count: tf.Tensor, labels: tf.Tensor | None,
                    pick: Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]
                    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Images pixel by pixel with per-layer caches (Ramachandran et al. 2017).

        The vertical stack of layer l keeps the last r_l + 1 rows of its input (a finished row
        is pushed in and one new row of every layer computed); within a row, the horizontal
        stack of layer l keeps the last r_l + 1 columns of its input, so a pixel costs one
        position per layer.

        Args:
            count: images, N.
            labels: [N] or None.
            pick: (params [N, P], row, column) -> the pixel's values [N, C] in [-1, 1].
        Returns:
            The images [N, H, W, C] and every pixel's parameters [N, H, W, P].
        """
        height, width, channels = self.image_shape
        p, dtype = self.filters, self.compute_dtype
        maps = self.label_maps_of(labels)
        inputs = [channels] + [p] * (len(self.radii) - 1)
        column_mask = tf.one_hot(tf.range(width), width)  # [W, W]

        def zeros(*shape):
            return tf.zeros(tf.stack([count, *shape]), dtype)

        def row_step(i, images, params, v_windows, from_vertical):
            # This row's label biases: the position-dependent part is computed a row at a time.
            biases = self.label_biases(labels, None if maps is None else maps[:, i][:, None])

            def pixel_step(j, row, row_params, h_windows):
                pixel_params, pushed = self._cached_column(h_windows, from_vertical, biases, j)
                # The pixels stay float32 (the 256 levels are not all exact in float16 or
                # bfloat16); only the network's copy takes its compute dtype.
                value = pick(pixel_params, i, j)
                pushed[0] = tf.concat([h_windows[0][:, :, 1:],
                                       tf.cast(value, dtype)[:, None, None, :]], axis=2)
                row += column_mask[j][None, :, None] * value[:, None, :]
                return j + 1, row, row_params.write(j, pixel_params), pushed

            h_windows = [zeros(1, r + 1, inputs[index]) for index, r in enumerate(self.radii)]
            _, row, row_params, _ = tf.while_loop(
                lambda j, *_: j < width, pixel_step,
                (tf.constant(0), tf.zeros(tf.stack([count, width, channels])),
                 tf.TensorArray(tf.float32, size=width), h_windows))
            v_windows, from_vertical = self._cached_row(row, v_windows, biases)
            return (i + 1, images.write(i, row),
                    params.write(i, tf.transpose(row_params.stack(), [1, 0, 2])),
                    v_windows, from_vertical)

        v_windows = [zeros(r + 1, width + 2 * r, inputs[index])
                     for index, r in enumerate(self.radii)]
        # Row 0's vertical input is the zero row above the image, as in `call`.
        from_vertical = [layer(zeros(1, width, 2 * p)) for layer in self.vertical_to_horizontal]
        _, images, params, _, _ = tf.while_loop(
            lambda i, *_: i < height, row_step,
            (tf.constant(0), tf.TensorArray(tf.float32, size=height),
             tf.TensorArray(tf.float32, size=height), v_windows, from_vertical))
        return (tf.transpose(images.stack(), [1, 0, 2, 3]),
                tf.transpose(params.stack(), [1, 0, 2, 3]))

    def uncached_loop(self, count: tf.Tensor, labels: tf.Tensor | None,
                      pick: Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]
                      ) -> tf.Tensor:
        """Images pixel by pixel, the whole network run once per pixel (784 passes for 28x28)."""
        height, width, channels = self.image_shape
        pixels = height * width

        def step(t, images):
            i, j = t // width, t % width
            value = pick(self(images, labels)[:, i, j], i, j)
            mask = tf.one_hot(i, height)[:, None, None] * tf.one_hot(j, width)[None, :, None]
            return t + 1, images + mask[None] * value[:, None, None, :]

        _, images = tf.while_loop(lambda t, _: t < pixels, step,
                                  (tf.constant(0), tf.zeros(tf.stack([count, height, width,
                                                                      channels]))))
        return images


@registry.register_model("pixelcnn")
class PixelCNN(base.GenerativeModel):
    """Gated PixelCNN with a Bernoulli or discretised-logistic-mixture likelihood.

    Args:
        config: a `PixelCNNConfig`.
        **kwargs: `image_shape`, `num_classes`, `seed`, as for `GenerativeModel`.
    """

    config_class = PixelCNNConfig
    loss_names = ("loss", "bits_per_dim")

    def __init__(self, config: PixelCNNConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        channels = self.image_shape[2]
        output_channels = (channels if config.likelihood == "bernoulli"
                           else losses.logistic_mixture_size(config.mixture_components,
                                                             channels))
        self.network = GatedPixelCNN(
            self.image_shape, filters=config.filters, layers=config.layers,
            first_kernel_size=config.first_kernel_size, kernel_size=config.kernel_size,
            head_filters=config.head_filters, output_channels=output_channels,
            num_classes=self.num_classes if self.conditional else None,
            label_map_channels=config.label_map_channels, name="network")
        self.network.build()

    @classmethod
    def knobs(cls, config: PixelCNNConfig, image_shape: Sequence[int]) -> base.Knobs:
        height, width = image_shape[:2]
        # Network evaluations per sample: with the caches every position of each stack is
        # computed once, about one whole pass of work (counted as 2 for the H * W sequential
        # steps' overhead: 1,000 samples take about two training steps' forward passes of
        # 1,000 images); without them, one whole pass per pixel.
        cost = 2.0 if config.sample_cache else height * width
        # The cached loop is H * W steps of tiny convolutions: XLA fuses their per-op overhead
        # away (5.5x the images/s of graph mode on a 2-core CPU, docs/autoregressive.md).
        return base.Knobs(sampling_cost=float(cost), evaluates=True,
                          sampling_xla_on_cpu=config.sample_cache,
                          binary_samples=config.likelihood == "bernoulli")

    @classmethod
    def tiny_config(cls) -> PixelCNNConfig:
        return PixelCNNConfig(batch_size=16, epochs=1, steps_per_epoch=3, filters=8, layers=2,
                              first_kernel_size=3, head_filters=8, eval_examples=32)

    def update_groups(self) -> list[base.UpdateGroup]:
        optimizer = optimizers.Adam(self.config.learning_rate)
        return [base.UpdateGroup("pixelcnn", self.trainable_variables, optimizer, loss="loss")]

    # -- likelihood ----------------------------------------------------------------------------

    def observation(self, images: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        """What the likelihood models, in [-1, 1]: binarised pixels in {-1, 1} (`bernoulli`;
        a fresh draw in training, the draw of `seed` otherwise) or the 8-bit image."""
        if self.config.likelihood != "bernoulli":
            return tf.cast(images, tf.float32)
        return 2.0 * self.binarize(images, seed) - 1.0

    def log_likelihood(self, observation: tf.Tensor, labels: tf.Tensor | None = None
                       ) -> tf.Tensor:
        """Exact log p(observation) per image, in nats (`observation` from `observation`)."""
        params = self.network(observation, labels)
        if self.config.likelihood == "bernoulli":
            return losses.bernoulli_log_likelihood((observation + 1.0) / 2.0, params)
        return losses.discretized_logistic_mixture_log_likelihood(
            observation, params, components=self.config.mixture_components,
            min_log_scale=_MIN_LOG_SCALE)

    def compute_losses(self, batch: dict[str, tf.Tensor], *, training: bool,
                       group: str | None = None) -> dict[str, tf.Tensor]:
        observation = self.observation(batch["image"])
        labels = batch["label"] if self.conditional else None
        nll = -tf.reduce_mean(self.log_likelihood(observation, labels))
        return {"loss": nll, "bits_per_dim": losses.bits_per_dim(nll, math.prod(self.image_shape))}

    # -- sampling ------------------------------------------------------------------------------

    def _picker(self, count: tf.Tensor, seed: tf.Tensor
                ) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]:
        """pick(params, row, column): a pixel from its parameters, with noise drawn up front
        for every pixel, so the cached and uncached loops make the same draws."""
        height, width, channels = self.image_shape
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)]), 2)
        tiny = 1e-5
        uniform = tf.random.stateless_uniform(tf.stack([count, height, width, channels]),
                                              seeds[0], tiny, 1.0 - tiny)
        if self.config.likelihood == "bernoulli":
            def pick(params, i, j):
                return tf.where(uniform[:, i, j] < tf.sigmoid(params), 1.0, -1.0)
            return pick

        components = self.config.mixture_components
        gumbel = -tf.math.log(-tf.math.log(tf.random.stateless_uniform(
            tf.stack([count, height, width, components]), seeds[1], tiny, 1.0 - tiny)))

        def pick(params, i, j):
            logits, means, log_scales, coefficients = losses.split_logistic_mixture(
                params, components, channels)
            chosen = tf.one_hot(tf.argmax(logits + gumbel[:, i, j], axis=-1), components)

            def select(values):
                return tf.reduce_sum(chosen[..., None] * values, axis=1)

            means, log_scales = select(means), tf.maximum(select(log_scales), _MIN_LOG_SCALE)
            coefficients = select(coefficients)
            u = uniform[:, i, j]
            values = []
            for channel in range(channels):
                # The earlier channels' sampled values (zeros for this one and the later ones,
                # which its mean does not read), through the likelihood's own coupling.
                known = tf.stack(values + [tf.zeros_like(u[:, 0])] * (channels - channel), -1)
                mean = losses.coupled_channel_means(means[:, None], coefficients[:, None],
                                                    known)[:, 0, channel]
                x = mean + tf.exp(log_scales[:, channel]) * (tf.math.log(u[:, channel])
                                                            - tf.math.log1p(-u[:, channel]))
                # The nearest of the 256 levels; the edge levels take the tails.
                level = tf.round((tf.clip_by_value(x, -1.0, 1.0) + 1.0) / 2.0 * (_LEVELS - 1))
                values.append(level / (_LEVELS - 1) * 2.0 - 1.0)
            return tf.stack(values, axis=-1)
        return pick

    def sample_tensors(self, num_samples: tf.Tensor, seed: tf.Tensor,
                       conditioning: dict[str, tf.Tensor], *, cache: bool = True) -> tf.Tensor:
        """Samples pixel by pixel in one compiled loop (`cache`: see the module's doc)."""
        labels = conditioning.get("labels")
        pick = self._picker(num_samples, seed)
        if cache:
            images, _ = self.network.cached_loop(num_samples, labels, pick)
            return images
        return self.network.uncached_loop(num_samples, labels, pick)

    def sampling_options(self) -> dict[str, base.SamplingOption]:
        return {"cache": base.SamplingOption(
            self.config.sample_cache, doc="per-layer caches (True) or a whole forward pass "
            "per pixel (False); the same pixels either way in float32")}

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate_model(self, dataset: tf.data.Dataset, *, seed: int = 0) -> dict[str, Any]:
        """Exact test NLL in nats per image and bits per dimension.

        Under `bernoulli` each batch is binarised by the draw the VAE's evaluation makes for the
        same seed and batch (so the two NLLs are of the same binary images).

        Args:
            dataset: batches of `{"image", "label"}` from the evaluation split, not repeated.
            seed: seeds the binarisation.
        """
        limit = self.config.eval_examples or None

        @tf.function
        def evaluate_batch(images, labels, batch_seed):
            binarization_seed = tf.random.experimental.stateless_split(batch_seed, 2)[0]
            observation = self.observation(images, binarization_seed)
            return self.log_likelihood(observation, labels if self.conditional else None)

        total, count = 0.0, 0
        for index, images, labels in self.evaluation_batches(dataset, limit):
            log_likelihood = evaluate_batch(images, labels, tf.constant([seed, index], tf.int64))
            total += float(tf.reduce_sum(log_likelihood))
            count += int(log_likelihood.shape[0])
        nll = -total / count
        return {
            "nll_nats": nll,
            "nll_bits_per_dim": losses.bits_per_dim(nll, math.prod(self.image_shape)),
            "likelihood": self.config.likelihood,
            "num_examples": count,
        }


@registry.register_model("cpixelcnn")
class CPixelCNN(PixelCNN):
    """Class-conditional Gated PixelCNN: the label added to every gate of both stacks, as a
    learned embedding and a learned map of the positions (`label_map_channels`).

    Run: `python -m aigc_zoo.run --model=cpixelcnn`
    """

    conditional = True
