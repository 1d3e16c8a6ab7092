"""Every registered model through the same harness: build, train steps, generate, checkpoint."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_model
from aigc_zoo import registry
from aigc_zoo.checkpoints import Checkpointer

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def _build(name, seed=0):
    return tiny_model(name, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES, seed=seed)


def _batches(batch_size):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch_size, *IMAGE_SHAPE)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)
    return tf.data.Dataset.from_tensors({"image": images, "label": labels}).repeat()


@pytest.fixture(scope="module", params=registry.list_models())
def trained(request):
    """Each model with its tiny config after two train steps on made-up digits, and the fit's
    history; shared by this file's tests, which only read it."""
    model = _build(request.param)
    history = model.fit(_batches(model.config.batch_size), epochs=1, steps_per_epoch=2,
                        verbose=0)
    return model, history.history


def test_train_steps_are_finite_and_step_every_group(trained):
    model, history = trained
    assert set(history) == set(model.loss_names)
    assert all(np.isfinite(values[-1]) for values in history.values())
    assert int(model.global_step.numpy()) == 2
    for group in model.groups:
        assert int(group.optimizer.iterations.numpy()) == 2 * group.repeats


def test_generate_is_deterministic_images_in_range(trained):
    model, _ = trained
    images = model.generate(4, seed=3).numpy()
    assert images.shape == (4, *IMAGE_SHAPE)
    assert images.min() >= -1.0 and images.max() <= 1.0
    np.testing.assert_array_equal(images, model.generate(4, seed=3).numpy())
    assert not np.array_equal(images, model.generate(4, seed=4).numpy())


def test_checkpoint_restores_weights_optimizers_and_step_in_a_new_model(trained, tmp_path):
    model, _ = trained
    Checkpointer(tmp_path, model).save(epoch=1)

    fresh = _build(model.registered_name, seed=1)  # different initial weights and seed stream
    assert Checkpointer(tmp_path, fresh).restore_latest() == 1
    assert int(fresh.global_step.numpy()) == 2
    for saved, restored in zip(model.variables, fresh.variables, strict=True):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    for group in model.groups:
        for saved, restored in zip(group.optimizer.variables,
                                   fresh.optimizers[group.name].variables, strict=True):
            np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    np.testing.assert_array_equal(model.generate(4, seed=0).numpy(),
                                  fresh.generate(4, seed=0).numpy())


def test_keras_file_round_trip_with_safe_mode(trained, tmp_path):
    model, _ = trained
    name = model.registered_name
    expected = model.generate(4, seed=5).numpy()
    path = str(tmp_path / f"{name}.keras")
    model.save(path)

    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model) and loaded.registered_name == name
    assert loaded.config == model.config and loaded.image_shape == model.image_shape
    for saved, restored in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy(), err_msg=saved.path)
    np.testing.assert_array_equal(loaded.generate(4, seed=5).numpy(), expected)
    if model.knobs(model.config, model.image_shape).encodes:  # the VAEs
        images = tf.constant(_batches(4).take(1).get_single_element()["image"][:4])
        labels = tf.constant([1, 2, 3, 4], tf.int32) if model.conditional else None
        for original, restored in zip(model.encode(images, labels), loaded.encode(images, labels),
                                      strict=True):
            np.testing.assert_array_equal(original.numpy(), restored.numpy())
        latents = tf.random.stateless_normal([4, model.config.latent_dim], [1, 2])
        np.testing.assert_array_equal(model.decode(latents, labels).numpy(),
                                      loaded.decode(latents, labels).numpy())
