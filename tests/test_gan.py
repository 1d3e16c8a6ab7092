"""The GAN family: configs, spectral norm, the discriminator's batch slices, EMA sampling,
conditioning, every loss, and mode coverage on the 2D toy data."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_model
from aigc_zoo import data, registry
from aigc_zoo.errors import UserError
from aigc_zoo.metrics import modes
from aigc_zoo.models import base, gan, gan_networks

GANS = ["gan", "dcgan", "wgan_gp", "sngan", "cgan"]


def _build(name, shape=(2,), seed=0, **changes):
    return tiny_model(name, image_shape=shape, num_classes=8, seed=seed, **changes)


def _points(batch_size, seed=0):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(batch_size, 2)).astype(np.float32)
    labels = rng.integers(0, 8, batch_size).astype(np.int32)
    return tf.data.Dataset.from_tensors({"image": points, "label": labels}).repeat()


def test_every_gan_is_registered_with_its_published_settings():
    assert set(GANS) <= set(registry.list_models())
    configs = {name: registry.get_model(name).default_config() for name in GANS}
    assert configs["gan"].architecture == "mlp" and configs["dcgan"].architecture == "conv"
    assert configs["dcgan"].loss == "non_saturating" and configs["dcgan"].generator_batch_norm
    wgan = configs["wgan_gp"]
    assert (wgan.loss, wgan.d_steps, wgan.gradient_penalty) == ("wasserstein", 5, 10.0)
    assert (wgan.beta_1, wgan.beta_2, wgan.spectral_norm) == (0.0, 0.9, False)
    assert configs["sngan"].loss == "hinge" and configs["sngan"].spectral_norm
    assert registry.get_model("cgan").conditional
    toy_config = registry.get_model("wgan_gp").default_config("ring8")
    assert toy_config.architecture == "mlp" and toy_config.d_steps == 5


@pytest.mark.parametrize("name", GANS)
def test_trains_on_points_and_generates_points(name):
    model = _build(name)
    history = model.fit(_points(model.config.batch_size), epochs=1, steps_per_epoch=2,
                        verbose=0, shuffle=False)
    assert all(np.isfinite(values[-1]) for values in history.history.values())
    samples = model.generate(5, seed=1).numpy()
    assert samples.shape == (5, 2) and np.isfinite(samples).all()
    np.testing.assert_array_equal(samples, model.generate(5, seed=1).numpy())


@pytest.mark.parametrize("loss", sorted(gan.LOSSES))
def test_every_loss_trains(loss):
    model = _build("gan", loss=loss)
    history = model.fit(_points(8), epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
    assert np.isfinite(history.history["d_loss"][-1]) and np.isfinite(history.history["g_loss"][-1])


def test_bad_configs_are_user_errors():
    config_class = registry.get_model("wgan_gp").config_class
    with pytest.raises(UserError, match="multiple of d_steps"):
        config_class(batch_size=66).validate()
    with pytest.raises(UserError, match="loss"):
        config_class(loss="bce").validate()
    with pytest.raises(UserError, match="architecture"):
        config_class(architecture="resnet").validate()
    with pytest.raises(UserError, match="mlp_units"):
        config_class(mlp_units=()).validate()


def test_each_critic_step_takes_its_own_slice_of_the_batch():
    seen = []

    class Recorder(gan.GAN):
        config_class = registry.get_model("wgan_gp").config_class

        def compute_losses(self, batch, *, training, group=None):
            if group == "discriminator":
                seen.append(batch["image"])
            return super().compute_losses(batch, training=training, group=group)

    config = dataclasses.replace(registry.get_model("wgan_gp").tiny_config(), batch_size=10)
    model = Recorder(config, image_shape=(2,), num_classes=None)
    model.compile(jit_compile=False)
    batch = {"image": tf.reshape(tf.range(20, dtype=tf.float32), [10, 2])}
    model.train_step(batch)  # eagerly, so `seen` holds values
    assert len(seen) == 5
    np.testing.assert_array_equal(np.concatenate([s.numpy() for s in seen]),
                                  batch["image"].numpy())
    assert int(model.optimizers["discriminator"].iterations.numpy()) == 5
    assert int(model.optimizers["generator"].iterations.numpy()) == 1


def test_a_batch_that_does_not_split_is_refused():
    with pytest.raises(ValueError, match="equal parts"):
        base._split({"image": tf.zeros([7, 2])}, 5)


def test_spectral_norm_bounds_the_largest_singular_value():
    layer = gan_networks.SpectralDense(6, kernel_initializer="random_normal")
    x = tf.random.normal([4, 5])
    for _ in range(30):  # power iterations converge while training
        layer(x, training=True)
    normalised = layer._normalised_kernel(training=False).numpy()
    assert np.linalg.svd(normalised, compute_uv=False)[0] == pytest.approx(1.0, abs=1e-3)
    # The variable keeps the unnormalised kernel (unlike keras.layers.SpectralNormalization).
    assert np.linalg.svd(layer.kernel.numpy(), compute_uv=False)[0] != pytest.approx(1.0, abs=0.01)
    conv = gan_networks.SpectralConv2D(3, 4, strides=2, padding="same")
    images = tf.random.normal([2, 8, 8, 2])
    for _ in range(30):
        conv(images, training=True)
    matrix = conv._normalised_kernel(training=False).numpy().reshape(-1, 3)
    assert np.linalg.svd(matrix, compute_uv=False)[0] == pytest.approx(1.0, abs=1e-3)


def test_spectral_norm_gradient_flows_through_sigma():
    layer = gan_networks.SpectralDense(1, use_bias=False, kernel_initializer="ones")
    x = tf.ones([1, 3])
    layer(x, training=True)
    with tf.GradientTape() as tape:
        y = layer(x)
    gradient = tape.gradient(y, layer.kernel).numpy()
    # y = sum(w) / ||w|| is scale invariant, so its gradient at w = (1, 1, 1) is orthogonal to w.
    np.testing.assert_allclose(gradient.sum(), 0.0, atol=1e-5)


def test_generate_uses_the_weight_average_and_ema_off_uses_the_generator():
    model = _build("dcgan", shape=(8, 8, 1), ema_decay=0.9, generator_filters=(4, 8),
                   discriminator_filters=(4, 8))
    images = tf.data.Dataset.from_tensors(
        {"image": tf.random.uniform([8, 8, 8, 1], -1, 1)}).repeat()
    model.fit(images, epochs=1, steps_per_epoch=5, verbose=0, shuffle=False)
    assert int(model.generator_average.updates.numpy()) == 5
    averaged, live = model.generate(4, seed=0), model.generate(4, seed=0, average=False)
    assert not np.allclose(averaged.numpy(), live.numpy())
    # Standing statistics: the average's batch norm describes the average's own activations.
    norm = model.generator_average.batch_norms[0]
    live_norm = [layer for layer in model.generator.layers
                 if isinstance(layer, keras.layers.BatchNormalization)][0]
    assert not np.allclose(norm.moving_mean.numpy(), live_norm.moving_mean.numpy())
    plain = _build("dcgan", shape=(8, 8, 1), ema_decay=0.0, generator_filters=(4, 8),
                   discriminator_filters=(4, 8))
    assert plain.generator_average is None
    np.testing.assert_array_equal(plain.generate(3, seed=2).numpy(),
                                  plain.generate(3, seed=2, average=False).numpy())


def test_conditional_generate_follows_the_labels():
    model = _build("cgan")
    same_latents = model.generate(4, seed=0, labels=[0, 0, 0, 0]).numpy()
    other_labels = model.generate(4, seed=0, labels=[5, 5, 5, 5]).numpy()
    assert not np.allclose(same_latents, other_labels)
    np.testing.assert_array_equal(model.generate(4, seed=0, labels=[5, 5, 5, 5]).numpy(),
                                  other_labels)
    with pytest.raises(UserError, match="labels"):
        registry.get_model("cgan")(registry.get_model("cgan").tiny_config(), image_shape=(2,),
                                   num_classes=None)


@pytest.mark.slow  # 2,250 train steps: a learning check, not a contract
def test_a_short_run_on_ring8_covers_more_modes_than_the_untrained_generator():
    model_class = registry.get_model("sngan")
    config = model_class.default_config("ring8")
    model = model_class(config, image_shape=(2,), num_classes=8, seed=0)
    model.compile(jit_compile=False, steps_per_execution=50)  # 45 calls, not 2,250
    before = modes.mode_coverage(model.generate(2500, seed=0).numpy(), "ring8")
    dataset, _ = data.load("ring8", "train", batch_size=config.batch_size, training=True, seed=0)
    model.fit(dataset, epochs=1, steps_per_epoch=2250, verbose=0, shuffle=False)
    after = modes.mode_coverage(model.generate(2500, seed=0).numpy(), "ring8")
    assert before["modes_covered"] == 0 and before["high_quality_share"] < 0.01
    assert after["modes_covered"] >= 6, after
    assert after["high_quality_share"] > 0.05, after


def test_labels_out_of_range_or_for_an_unconditional_model_are_refused():
    model = _build("cgan")
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        model.generate(2, labels=[0, 8])
    with pytest.raises(ValueError, match=r"\[0, 8\)"):  # not wrapped to 3 by an int32 cast
        model.generate(2, labels=[0, 2**32 + 3])
    with pytest.raises(ValueError, match="one label per sample"):
        model.generate(3, labels=[0, 1])
    with pytest.raises(ValueError, match="unconditional"):
        _build("dcgan").generate(2, labels=[0, 1])


def test_mixed_float16_keeps_float32_scores_points_and_losses():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _build("wgan_gp")
        assert model.discriminator.output.dtype == "float32"
        assert model.generator.output.dtype == "float32"
        history = model.fit(_points(model.config.batch_size), epochs=1, steps_per_epoch=2,
                            verbose=0, shuffle=False)
        assert all(np.isfinite(values[-1]) for values in history.history.values())
        assert model.generate(4, seed=0).dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")
