"""Pixel scores of images against their targets: what the autoencoders' and the image-to-image
models' evaluations report (reconstructions, translations)."""

from __future__ import annotations

import tensorflow as tf


def pixel_scores(images: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per-image squared error, PSNR (dB) and SSIM of `images` against `targets`, both NHWC in
    [-1, 1] and scored in [0, 1]; graph-safe (a `tf.function` may call it).

    SSIM's Gaussian window is 11 pixels (Wang et al. 2004), unless the image is smaller.
    """
    a = (tf.cast(images, tf.float32) + 1.0) / 2.0
    b = (tf.cast(targets, tf.float32) + 1.0) / 2.0
    window = min(11, int(a.shape[1]), int(a.shape[2]))
    return (tf.reduce_mean(tf.square(a - b), axis=[1, 2, 3]),
            tf.image.psnr(a, b, 1.0),
            tf.image.ssim(a, b, 1.0, filter_size=window))
