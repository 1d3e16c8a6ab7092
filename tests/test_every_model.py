"""Every registered model through the same harness: build, train steps, generate, checkpoint."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo import registry
from aigc_zoo.checkpoints import Checkpointer

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def _build(name, seed=0):
    model_class = registry.get_model(name)
    model = model_class(model_class.tiny_config(), image_shape=IMAGE_SHAPE,
                        num_classes=NUM_CLASSES, seed=seed)
    model.compile(jit_compile=False)
    return model


def _batches(batch_size):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch_size, *IMAGE_SHAPE)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)
    return tf.data.Dataset.from_tensors({"image": images, "label": labels}).repeat()


@pytest.fixture(params=registry.list_models())
def name(request):
    return request.param


def test_train_steps_are_finite_and_step_every_group(name):
    model = _build(name)
    history = model.fit(_batches(model.config.batch_size), epochs=1, steps_per_epoch=2, verbose=0)
    assert set(history.history) == set(model.loss_names)
    assert all(np.isfinite(values[-1]) for values in history.history.values())
    assert int(model.global_step.numpy()) == 2
    for group in model.groups:
        assert int(group.optimizer.iterations.numpy()) == 2 * group.repeats


def test_generate_is_deterministic_images_in_range(name):
    model = _build(name)
    images = model.generate(6, seed=3).numpy()
    assert images.shape == (6, *IMAGE_SHAPE)
    assert images.min() >= -1.0 and images.max() <= 1.0
    np.testing.assert_array_equal(images, model.generate(6, seed=3).numpy())
    assert not np.array_equal(images, model.generate(6, seed=4).numpy())


def test_checkpoint_restores_weights_optimizers_and_step_in_a_new_model(name, tmp_path):
    trained = _build(name, seed=0)
    trained.fit(_batches(trained.config.batch_size), epochs=1, steps_per_epoch=2, verbose=0)
    Checkpointer(tmp_path, trained).save(epoch=1)

    fresh = _build(name, seed=1)  # different initial weights and seed stream
    assert Checkpointer(tmp_path, fresh).restore_latest() == 1
    for saved, restored in zip(trained.variables, fresh.variables, strict=True):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    for group in trained.groups:
        for saved, restored in zip(group.optimizer.variables,
                                   fresh.optimizers[group.name].variables, strict=True):
            np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    np.testing.assert_array_equal(trained.generate(4, seed=0).numpy(),
                                  fresh.generate(4, seed=0).numpy())


def test_keras_file_round_trip_with_safe_mode(name, tmp_path):
    model = _build(name)
    model.fit(_batches(model.config.batch_size), epochs=1, steps_per_epoch=1, verbose=0)
    expected = model.generate(4, seed=5).numpy()
    path = str(tmp_path / f"{name}.keras")
    model.save(path)

    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model) and loaded.registered_name == name
    assert loaded.config == model.config and loaded.image_shape == model.image_shape
    for saved, restored in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy(), err_msg=saved.path)
    np.testing.assert_array_equal(loaded.generate(4, seed=5).numpy(), expected)
    if hasattr(model, "encode"):  # the VAEs
        images = tf.constant(_batches(4).take(1).get_single_element()["image"][:4])
        labels = tf.constant([1, 2, 3, 4], tf.int32) if model.conditional else None
        for original, restored in zip(model.encode(images, labels), loaded.encode(images, labels),
                                      strict=True):
            np.testing.assert_array_equal(original.numpy(), restored.numpy())
        latents = tf.random.stateless_normal([4, model.config.latent_dim], [1, 2])
        np.testing.assert_array_equal(model.decode(latents, labels).numpy(),
                                      loaded.decode(latents, labels).numpy())
