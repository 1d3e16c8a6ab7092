"""Inception-v3 features (pool3, 2048-D) and ImageNet class probabilities, as FID and IS use.

The network is `keras.applications.InceptionV3` (Szegedy et al. 2016). Its weights come from a
local file (`--inception_weights=PATH`: Keras' `inception_v3_weights_tf_dim_ordering_tf_kernels.h5`
gives features and probabilities, the `_notop.h5` file features only) or are downloaded once
by Keras into `~/.keras/models` (`weights="imagenet"`). With no network and no cached file,
`load` raises a `UserError` naming the flag within `network_timeout` seconds, instead of Keras
retrying its download.

Preprocessing, applied to images in [-1, 1] (NHWC):
  - greyscale is tiled to 3 channels;
  - bilinear resize to 299x299 (`tf.image.resize`, no antialiasing: it only matters when
    shrinking, and images here are upsampled);
  - values stay in [-1, 1], the range `keras.applications.inception_v3.preprocess_input`
    produces from [0, 255].
FID numbers computed this way are internally comparable; they are not the numbers of the
reference TF 1 FID code or of pytorch-fid / clean-fid, whose weights and resizing differ.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aigc_zoo import network
from aigc_zoo.errors import UserError

INPUT_SIZE = 299
FEATURE_DIM = 2048
WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"
DOWNLOAD_HOST = ("storage.googleapis.com", 443)  # where keras.applications downloads from
_BATCH = 50


def preprocess(images: tf.Tensor) -> tf.Tensor:
    """Images in [-1, 1], [N, H, W, 1 or 3] -> [N, 299, 299, 3] in [-1, 1], bilinear."""
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape[-1] == 1:
        images = tf.tile(images, [1, 1, 1, 3])
    resized = tf.image.resize(images, [INPUT_SIZE, INPUT_SIZE], method="bilinear")
    return tf.clip_by_value(resized, -1.0, 1.0)


def _cached_download() -> str | None:
    """The ImageNet weights file if Keras has already downloaded it, else None."""
    for home in (os.environ.get("KERAS_HOME"), os.path.join(os.path.expanduser("~"), ".keras"),
                 os.path.join("/tmp", ".keras")):
        if home and os.path.exists(os.path.join(home, "models", WEIGHTS_FILE)):
            return os.path.join(home, "models", WEIGHTS_FILE)
    return None


class InceptionFeatures:
    """Inception-v3 as a feature extractor: `extractor(images) -> (features, probabilities)`.

    Args:
        weights: a path to a Keras weights file, "imagenet" (downloaded once), or None
            (random weights: tests only, the numbers mean nothing).
        network_timeout: seconds to wait for the download host before giving up.
    """

    name = "inception"
    feature_dim = FEATURE_DIM

    def __init__(self, weights: str | None = "imagenet", *, network_timeout: float = 5.0):
        self.weights = weights
        if weights not in (None, "imagenet"):
            weights = os.path.expanduser(weights)
            if not os.path.isfile(weights):
                raise UserError(f"--inception_weights={self.weights}: no such file")
        elif weights == "imagenet" and _cached_download() is None:
            host, port = DOWNLOAD_HOST
            network.require_connection(host, port, timeout=network_timeout, message=(
                f"Inception-v3 weights are not on this machine and cannot be downloaded (no "
                f"connection to {host}): pass a local copy of Keras' {WEIGHTS_FILE} with "
                "--inception_weights=PATH, or use --extractor=classifier"))
        try:
            self.model, self.has_probabilities = _build(weights)
        except OSError as error:  # not an HDF5 file, truncated, unreadable
            raise UserError(f"--inception_weights={self.weights}: cannot load it as Keras "
                            f"Inception-v3 weights ({str(error).splitlines()[0]})") from None
        self._extract = tf.function(self.model, reduce_retracing=True)

    def __call__(self, images: np.ndarray | tf.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Pool3 features [N, 2048] and ImageNet probabilities [N, 1000] (None without a top)."""
        features, probabilities = [], []
        for start in range(0, len(images), _BATCH):
            outputs = self._extract(preprocess(images[start:start + _BATCH]), training=False)
            if self.has_probabilities:
                features.append(outputs[0].numpy())
                probabilities.append(outputs[1].numpy())
            else:
                features.append(outputs.numpy())
        return (np.concatenate(features),
                np.concatenate(probabilities) if self.has_probabilities else None)

    def describe(self) -> dict[str, Any]:
        """What results report about the extractor."""
        return {"name": self.name, "feature_dim": FEATURE_DIM, "weights": self.weights,
                "resize": f"bilinear to {INPUT_SIZE}x{INPUT_SIZE}, grey tiled to RGB, [-1, 1]",
                "probabilities": self.has_probabilities}


def _build(weights: str | None) -> tuple[keras.Model, bool]:
    """The network with pool3 (and, when the weights have the top, softmax) outputs."""
    try:
        full = keras.applications.InceptionV3(include_top=True, weights=weights)
    except ValueError:
        if weights in (None, "imagenet"):
            raise
        # A "_notop" file has no classifier: features only, so no Inception Score.
        try:
            pooled = keras.applications.InceptionV3(include_top=False, pooling="avg",
                                                    weights=weights)
        except ValueError as error:
            raise UserError(f"--inception_weights={weights}: not Keras Inception-v3 weights "
                            f"({str(error).splitlines()[0]})") from None
        return pooled, False
    outputs = [full.get_layer("avg_pool").output, full.output]
    return keras.Model(full.input, outputs, name="inception_v3_features"), True
