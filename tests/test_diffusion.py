"""Tests for aigc_zoo.models.diffusion (`ddpm`, `cddpm`) on tiny configs and made-up images."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_model
from aigc_zoo import registry, schedules
from aigc_zoo.errors import UserError
from aigc_zoo.models import diffusion

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
RNG = np.random.default_rng(0)
IMAGES = np.clip(RNG.normal(0.0, 0.3, (64,) + IMAGE_SHAPE), -1, 1).astype(np.float32)
LABELS = (np.arange(64) % NUM_CLASSES).astype(np.int32)


def _make(name: str = "ddpm", *, num_classes: int | None = NUM_CLASSES, **changes
          ) -> diffusion.DDPM:
    keras.utils.set_random_seed(0)  # the same initial weights whatever ran before
    return tiny_model(name, image_shape=IMAGE_SHAPE, num_classes=num_classes, **changes)


def _train(model: diffusion.DDPM, steps: int, images: np.ndarray = IMAGES) -> list[float]:
    dataset = tf.data.Dataset.from_tensor_slices({"image": images, "label": LABELS}).repeat()
    history = model.fit(dataset.batch(model.config.batch_size, drop_remainder=True),
                        epochs=steps, steps_per_epoch=1, verbose=0).history
    return history["loss"]


def _batch(images: np.ndarray, size: int = 64) -> dict[str, tf.Tensor]:
    return {"image": tf.constant(np.resize(images, (size,) + IMAGE_SHAPE)),
            "label": tf.constant(np.resize(LABELS, size))}


def test_registered_and_configs_validate():
    assert registry.get_model("ddpm") is diffusion.DDPM
    assert registry.get_model("cddpm") is diffusion.CDDPM and diffusion.CDDPM.conditional
    diffusion.DDPM.tiny_config().validate()
    diffusion.DDPM.default_config().validate()
    for change in ({"prediction": "x0"}, {"schedule": "sigmoid"}, {"sample_steps": 51},
                   {"widths": ()}, {"sample_spacing": "cubic"}, {"ema_decay": 1.0}):
        with pytest.raises(UserError):
            dataclasses.replace(diffusion.DDPM.tiny_config(), **change).validate()


def test_needs_labels_and_images():
    with pytest.raises(UserError, match="labels"):
        _make("cddpm", num_classes=None)
    with pytest.raises(UserError, match="images"):  # a 2-D toy dataset's points
        diffusion.DDPM(diffusion.DDPM.tiny_config(), image_shape=(2,), num_classes=None)


# --- objective: an untrained network outputs exactly 0 (zero-initialised last conv) ----------

def test_untrained_epsilon_loss_is_the_noise_variance():
    model = _make(min_snr_gamma=0.0)  # L_simple (ddpm's default weighs it by min-SNR-5)
    loss = float(model.compute_losses(_batch(IMAGES, 128), training=False)["loss"])
    # mean of eps^2 over 128 x 784 draws: 1 +- 0.005.
    assert loss == pytest.approx(1.0, abs=0.03)


def test_untrained_v_loss_and_min_snr_weights_match_the_schedule():
    zeros = np.zeros((1,) + IMAGE_SHAPE, np.float32)
    alpha_bar = schedules.make_alphas_cumprod("cosine", 50)
    # x_0 = 0: v = sqrt(a) eps, so E[v^2] = E_t[a_t] over uniform t.
    model = _make(prediction="v", min_snr_gamma=0.0)
    losses = [float(model.compute_losses(_batch(zeros, 256), training=False)["loss"])
              for _ in range(4)]
    assert np.mean(losses) == pytest.approx(alpha_bar.mean(), abs=0.04)
    # min-SNR-5 on epsilon: E_t[min(SNR, 5) / SNR].
    model = _make(min_snr_gamma=5.0)
    ratio = schedules.snr(alpha_bar)
    expected = np.mean(np.minimum(ratio, 5.0) / ratio)
    assert expected < 0.9  # far enough from the unweighted 1.0 that a missing weight shows
    losses = [float(model.compute_losses(_batch(zeros, 256), training=False)["loss"])
              for _ in range(4)]
    assert np.mean(losses) == pytest.approx(expected, abs=0.04)


@pytest.mark.slow  # a learning check of 16 steps (26 s); `make test-slow` runs it
def test_training_lowers_the_loss_and_moves_the_ema_weights(tmp_path):
    # The default's network (down- and upsampling, attention at the lower resolution), small.
    model = _make(learning_rate=3e-3, batch_size=16, widths=(8, 16), attention=True)
    assert any(isinstance(layer, keras.layers.MultiHeadAttention)
               for layer in model.unet.layers), "the tiny config turns attention off"
    initial = [w.copy() for w in model.ema.averaged.get_weights()]
    losses = _train(model, 16)  # the loss falls to about 0.6 of its start by then
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:4]), losses
    assert int(model.ema.updates.numpy()) == 16
    averaged = model.ema.averaged.get_weights()
    live = model.unet.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(averaged, initial))
    assert any(not np.allclose(a, b) for a, b in zip(averaged, live))  # an average, not a copy
    samples = model.generate(3, seed=0).numpy()
    assert samples.shape == (3,) + IMAGE_SHAPE and np.all(np.abs(samples) <= 1)
    # The attention layers survive a `.keras` round trip (test_every_model's use tiny configs).
    model.save(tmp_path / "ddpm.keras")
    loaded = keras.saving.load_model(tmp_path / "ddpm.keras", safe_mode=True)
    assert loaded.config.attention  # and the weights (test_every_model samples a loaded model)
    for saved, restored in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy(), err_msg=saved.path)


# --- sampling ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_cddpm():
    model = _make("cddpm", learning_rate=3e-3)
    _train(model, 4)
    return model


def test_generate_shape_range_determinism_and_options(trained_cddpm):
    model = trained_cddpm
    samples = model.generate(4, seed=2).numpy()
    assert samples.shape == (4,) + IMAGE_SHAPE and samples.dtype == np.float32
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    np.testing.assert_array_equal(model.generate(4, seed=2).numpy(), samples)
    assert not np.allclose(model.generate(4, seed=3).numpy(), samples)
    ddpm = model.generate(4, seed=2, sampler="ddpm", steps=4).numpy()
    assert ddpm.shape == samples.shape and not np.allclose(ddpm, samples)
    stochastic = model.generate(4, seed=2, eta=1.0).numpy()
    assert not np.allclose(stochastic, samples)
    # DPM-Solver++(2M) takes DDIM's (eta 0) steps up to two steps, its own after.
    np.testing.assert_allclose(model.generate(4, seed=2, sampler="dpmpp_2m", steps=2).numpy(),
                               model.generate(4, seed=2, steps=2).numpy(), atol=1e-5)
    dpm = model.generate(4, seed=2, sampler="dpmpp_2m").numpy()
    assert dpm.min() >= -1.0 and dpm.max() <= 1.0 and not np.allclose(dpm, samples)
    np.testing.assert_array_equal(model.generate(4, seed=2, sampler="dpmpp_2m").numpy(), dpm)
    # The config's sampler is generate's default, and the runner's sampling cost follows it.
    config = dataclasses.replace(model.config, sample_sampler="dpmpp_2m")
    assert type(model)(config, image_shape=IMAGE_SHAPE, num_classes=10).resolved_sampling_options(
        {})["sampler"] == "dpmpp_2m"
    ancestral = dataclasses.replace(model.config, sample_sampler="ddpm", guidance=2.0)
    assert model.knobs(ancestral, IMAGE_SHAPE).sampling_cost == 2 * model.config.timesteps
    with pytest.raises(TypeError):
        model.generate(2, temperature=0.5)
    with pytest.raises(ValueError, match="sampler"):
        model.generate(2, sampler="euler")
    with pytest.raises(ValueError, match="steps"):
        model.generate(2, steps=51)


def test_trajectory_ends_at_the_sample(trained_cddpm):
    model = trained_cddpm
    final, trajectory = model.generate(4, seed=1, steps=4, return_trajectory=True)
    assert trajectory.shape == (5, 4) + IMAGE_SHAPE
    np.testing.assert_allclose(final.numpy(), model.generate(4, seed=1, steps=4).numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(np.clip(trajectory[-1].numpy(), -1, 1), final.numpy(), atol=1e-6)
    # x_T is the seed's standard normal noise.
    assert 0.7 < np.std(trajectory[0].numpy()) < 1.3


def test_guidance_zero_ignores_labels_one_uses_them(trained_cddpm):
    model = trained_cddpm
    threes, fives = tf.fill([4], 3), tf.fill([4], 5)
    np.testing.assert_allclose(model.generate(4, seed=0, labels=threes, guidance=0.0).numpy(),
                               model.generate(4, seed=0, labels=fives, guidance=0.0).numpy(),
                               atol=1e-6)
    assert not np.allclose(model.generate(4, seed=0, labels=threes, guidance=1.0).numpy(),
                           model.generate(4, seed=0, labels=fives, guidance=1.0).numpy())


def test_guided_prediction_combines_the_two_predictions(trained_cddpm):
    model = trained_cddpm
    x = tf.constant(IMAGES[:4])
    t = tf.constant([3, 10, 20, 40])
    labels = tf.constant([1, 2, 3, 4])
    unconditional = model._denoise_fn(labels, 0.0)(x, t).numpy()
    conditional = model._denoise_fn(labels, 1.0)(x, t).numpy()
    assert not np.allclose(unconditional, conditional)
    guided = model._denoise_fn(labels, 2.5)(x, t).numpy()
    np.testing.assert_allclose(guided, unconditional + 2.5 * (conditional - unconditional),
                               atol=1e-5)


def test_label_dropout_replaces_labels_by_the_null_class():
    # With dropout 1 every training label is the null class, so the label cannot matter.
    model = _make("cddpm", label_dropout=1.0)
    rng = np.random.default_rng(1)
    for layer in model.unet.layers:  # the zero-initialised convs hide the label at first
        if layer.name in ("class_embedding", "conv_out") or layer.name.endswith("conv2"):
            scale = 3.0 if layer.name == "class_embedding" else 0.3
            for weight in layer.weights:
                weight.assign(scale * rng.normal(size=weight.shape).astype(np.float32))
    batch = _batch(IMAGES, 16)
    other = dict(batch, label=(batch["label"] + 1) % NUM_CLASSES)

    def loss(values, training):
        model.seed_generator.state.assign(state)  # the same t and noise every time
        return float(model.compute_losses(values, training=training)["loss"])

    state = model.seed_generator.state.numpy()
    assert loss(other, True) == pytest.approx(loss(batch, True), rel=1e-6)
    # Without dropout (evaluation) the labels count.
    assert abs(loss(other, False) / loss(batch, False) - 1) > 0.01


# Mixed precision's step is shared; tests/test_gan.py's float16 check is in `make test`.
@pytest.mark.slow
def test_trains_under_mixed_float16_with_float32_losses():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _make()
        assert isinstance(model.groups[0].optimizer, keras.optimizers.LossScaleOptimizer)
        values = model.compute_losses(_batch(IMAGES, 8), training=True)
        assert values["loss"].dtype == tf.float32
        assert np.all(np.isfinite(_train(model, 2)))
        samples = model.generate(2, seed=0)
        assert samples.dtype == tf.float32 and np.all(np.isfinite(samples.numpy()))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_labels_are_checked(trained_cddpm):
    with pytest.raises(ValueError, match=r"\[0, "):
        trained_cddpm.generate(2, steps=2, labels=[0, NUM_CLASSES])  # the null class index
    with pytest.raises(ValueError, match="unconditional"):
        _make("ddpm").generate(2, steps=2, labels=[0, 1])


def test_step_counts_the_sampler_cannot_take_are_user_errors():
    config = registry.get_model("ddpm").config_class(timesteps=10, sample_steps=10,
                                                     sample_spacing="leading")
    config.validate()  # 10 of 10 is fine
    with pytest.raises(UserError, match="sample_steps"):
        registry.get_model("ddpm").config_class(timesteps=100, sample_steps=60,
                                                sample_spacing="quadratic").validate()
