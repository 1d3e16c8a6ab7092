"""Tests for aigc_zoo.models.klae: the latent grid's shape, the loss's terms against their
definitions, and the evaluation's scores on known inputs (the shared harness does the rest)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_model
from aigc_zoo import losses
from aigc_zoo.errors import UserError
from aigc_zoo.metrics import pixels
from aigc_zoo.models import klae


@pytest.fixture(scope="module")
def model():
    return tiny_model("klae")


def _images(count: int, seed: int = 0) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(-1, 1, (count, 28, 28, 1)).astype(np.float32))


def test_latent_grid_is_spatial(model):
    assert model.latent_shape == (7, 7, 2)  # the tiny config's 2 channels
    mean, log_var = model.encode(_images(3))
    assert mean.shape == log_var.shape == (3, 7, 7, 2) and mean.dtype == tf.float32
    decoded = model.decode(mean)
    assert decoded.shape == (3, 28, 28, 1) and float(tf.reduce_max(tf.abs(decoded))) <= 1
    default = klae.KLAEConfig()
    assert (default.latent_channels, len(default.filters)) == (4, 2)  # 7x7x4 on 28x28


def test_losses_are_their_definitions(model):
    images = _images(4, seed=1)
    found = model.compute_losses({"image": images}, training=False)
    mean, log_var = model.encode(images)
    kl = float(tf.reduce_mean(losses.gaussian_kl(mean, log_var))) / 2
    assert float(found["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(found["loss"]) == pytest.approx(
        float(found["reconstruction"]) + model.config.kl_weight * kl, rel=1e-5)
    # The reconstruction term decodes a posterior sample: near the mean's squared error.
    mean_error = float(tf.reduce_mean(tf.square(tf.cast(model.decoder(mean), tf.float32)
                                                - images)))
    assert float(found["reconstruction"]) == pytest.approx(mean_error, rel=0.2)


def test_pixel_scores_on_known_images():  # the one function every evaluation uses
    images = tf.constant(np.linspace(-1, 1, 2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28, 1))
    mse, psnr, ssim = pixels.pixel_scores(images, images)
    np.testing.assert_allclose(mse, 0)
    np.testing.assert_allclose(ssim, 1, rtol=1e-5)
    assert np.isinf(psnr).all()
    shifted = tf.clip_by_value(images + 0.2, -1, 1)  # 0.1 in [0, 1] where not clipped
    mse, psnr, _ = pixels.pixel_scores(shifted, images)
    np.testing.assert_allclose(psnr, 10 * np.log10(1 / mse.numpy()), rtol=1e-4)


def test_evaluate_model_reports_reconstruction_and_latents(model):
    dataset = tf.data.Dataset.from_tensor_slices({"image": _images(32, seed=2)}).batch(16)
    found = model.evaluate_model(dataset)
    assert found["num_examples"] == 32
    assert set(found) >= {"reconstruction_mse", "reconstruction_psnr_db", "reconstruction_ssim",
                          "kl_per_latent", "latent_mean", "latent_std"}
    assert math.isfinite(found["reconstruction_psnr_db"]) and found["latent_std"] > 0


def test_config_checks_its_values():
    for change in ({"kl_weight": -1.0}, {"latent_channels": 0}, {"filters": ()}):
        with pytest.raises(UserError):
            dataclasses.replace(klae.KLAEConfig(), **change).validate()
