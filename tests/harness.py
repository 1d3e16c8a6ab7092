"""The shared harness every model goes through (tests/test_every_model.py runs it for each
registered model; tests/test_adding_a_model.py for the example of docs/adding_a_model.md).

Each check takes a model with its tiny config after two train steps on made-up digits
(`trained_model`) and asserts what every model of the zoo must do: train every update group,
sample deterministically in range, restore from a checkpoint into a new model, round-trip
through a `.keras` file with safe_mode, and export a SavedModel whose signatures give the
model's own samples. What a model can do beyond that it declares in `knobs` (`encodes`), and
the harness checks that too.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

from conftest import tiny_model
from aigc_zoo import export
from aigc_zoo.checkpoints import Checkpointer
from aigc_zoo.data import paired

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def build(name, seed=0):
    return tiny_model(name, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES, seed=seed)


def prompts(model, count):
    """{"tokens": made-up token ids [count, max_length]} for a text-conditional model (its
    `conditioning_specs` take "tokens"), else {}: what its batches and `generate` need."""
    if "tokens" not in model.conditioning_specs():
        return {}
    rng = np.random.default_rng(count)
    shape = (count, model.config.text_max_length)
    return {"tokens": rng.integers(2, model.config.text_vocabulary_size, shape).astype(np.int32)}


def generate(model, count, seed):
    """`model.generate(count, seed=seed)`, with made-up prompts for a text-conditional model."""
    return model.generate(count, seed=seed, **prompts(model, count))


def batches(batch_size, task="", extra=None):
    """One made-up batch, repeated; with a paired task (`Knobs.task`) it holds the task's
    `source` too, made by the data pipeline's own function; `extra` adds features (prompts)."""
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch_size, *IMAGE_SHAPE)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)
    batch = {"image": images, "label": labels, **(extra or {})}
    if task:
        batch["source"] = paired.batch_pairs(images, task)["source"].numpy()
    return tf.data.Dataset.from_tensors(batch).repeat()


def task_of(model):
    """The paired task the model declares in its knobs ("" for none)."""
    return model.knobs(model.config, model.image_shape).task


def trained_model(name):
    """The model `name` with its tiny config after two train steps, and the fit's history."""
    model = build(name)
    size = model.config.batch_size
    history = model.fit(batches(size, task_of(model), prompts(model, size)), epochs=1,
                        steps_per_epoch=2, verbose=0)
    return model, history.history


def _sources(model, count=3):
    return batches(count, task_of(model)).take(1).get_single_element()["source"]


def check_train_steps(model, history):
    assert set(history) == set(model.loss_names)
    assert all(np.isfinite(values[-1]) for values in history.values())
    assert int(model.global_step.numpy()) == 2
    for group in model.groups:
        assert int(group.optimizer.iterations.numpy()) == 2 * group.repeats


def check_generate(model):
    images = generate(model, 4, 3).numpy()
    assert images.shape == (4, *IMAGE_SHAPE)
    assert images.min() >= -1.0 and images.max() <= 1.0
    np.testing.assert_array_equal(images, generate(model, 4, 3).numpy())
    assert not np.array_equal(images, generate(model, 4, 4).numpy())


@contextlib.contextmanager
def _sampling_without_xla(*models):
    """Sampling without XLA for these models inside the block. The `.keras` check compares
    what restored weights sample, which XLA does not change; compiling a sampler with XLA
    (vqgpt's and dalle's, on a CPU) costs seconds a model, and the generate and export checks
    compile it already."""
    previous = [model.sampling_jit_compile for model in models]
    for model in models:
        model.sampling_jit_compile = False
    try:
        yield
    finally:
        for model, value in zip(models, previous):
            model.sampling_jit_compile = value


def check_checkpoint(model, directory):
    Checkpointer(directory, model).save(epoch=1)
    fresh = build(model.registered_name, seed=1)  # other initial weights and seed stream
    assert Checkpointer(directory, fresh).restore_latest() == 1
    assert int(fresh.global_step.numpy()) == 2
    for saved, restored in zip(model.variables, fresh.variables, strict=True):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    for group in model.groups:
        for saved, restored in zip(group.optimizer.variables,
                                   fresh.optimizers[group.name].variables, strict=True):
            np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    # Equal variables sample equally (sampling is a function of them, the seed and the config,
    # which the checkpoint does not hold): samples of a restored model are compared by
    # `check_keras_file`, whose file restores the config too.


def _codes(model, method, inputs, labels):
    """`model.encode` / `decode` of `inputs`, with labels for a conditional model."""
    outputs = getattr(model, method)(inputs, *([labels] if model.conditional else []))
    return [tensor.numpy() for tensor in tf.nest.flatten(outputs)]


def check_keras_file(model, directory):
    name = model.registered_name
    with _sampling_without_xla(model):
        expected = generate(model, 4, 5).numpy()
    path = str(directory / f"{name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model) and loaded.registered_name == name
    assert loaded.config == model.config and loaded.image_shape == model.image_shape
    for saved, restored in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy(), err_msg=saved.path)
    with _sampling_without_xla(loaded):
        np.testing.assert_array_equal(generate(loaded, 4, 5).numpy(), expected)
    if model.knobs(model.config, model.image_shape).encodes:
        images = tf.constant(batches(4).take(1).get_single_element()["image"][:4])
        labels = tf.constant([1, 2, 3, 4], tf.int32)
        codes = _codes(model, "encode", images, labels)
        for original, restored in zip(codes, _codes(loaded, "encode", images, labels),
                                      strict=True):
            np.testing.assert_array_equal(original, restored)
        # Decode what was encoded: continuous latents or integer codes alike.
        latents = tf.constant(codes[0])
        np.testing.assert_array_equal(_codes(model, "decode", latents, labels)[0],
                                      _codes(loaded, "decode", latents, labels)[0])
    if task_of(model):
        np.testing.assert_array_equal(loaded.translate(_sources(model), seed=2).numpy(),
                                      model.translate(_sources(model), seed=2).numpy())


def check_export(model, directory):
    """The SavedModel's `generate` (and `sample`, with the defaults) give the model's samples;
    an image-to-image model's `translate` (and cyclegan's other direction) its translations."""
    export_dir = str(directory / "saved")
    signatures = export.save_model(model, export_dir)
    served = tf.saved_model.load(export_dir)
    assert set(signatures) <= set(served.signatures) and "generate" in signatures
    conditioning = {"labels": tf.constant([], tf.int32)} if model.conditional else {}
    # Four samples, as `check_generate` drew: an XLA sampler compiles once per sample count.
    conditioning.update({name: tf.constant(value) for name, value in prompts(model, 4).items()})
    expected = generate(model, 4, 7).numpy()
    images = served.signatures["generate"](num_samples=tf.constant(4), seed=tf.constant(7),
                                           **conditioning)["images"].numpy()
    np.testing.assert_array_equal(images, expected)
    if "sample" in signatures:
        defaults = model.resolved_sampling_options({})
        runtime = {name: tf.constant(defaults[name], option.dtype)
                   for name, option in model.sampling_options().items()
                   if option.dtype is not None}
        images = served.signatures["sample"](num_samples=tf.constant(4), seed=tf.constant(7),
                                             **runtime, **conditioning)["images"].numpy()
        np.testing.assert_array_equal(images, expected)
    if task_of(model):  # an image-to-image model serves `translate` too
        sources = _sources(model)
        images = served.signatures["translate"](sources=sources, seed=tf.constant(2))["images"]
        translated = model.translate(sources, seed=2).numpy()
        assert translated.shape == (3, *IMAGE_SHAPE)
        np.testing.assert_array_equal(images.numpy(), translated)
    for name in set(signatures) - {"translate"}:  # cyclegan serves the other direction too
        if name.startswith("translate_"):
            direction, images = name[len("translate_"):], _sources(model)
            served_images = served.signatures[name](sources=images, seed=tf.constant(0))
            own = tf.function(lambda x, d=direction: model.translate_direction(x, d),
                              jit_compile=model.samples_with_xla())(images)
            np.testing.assert_array_equal(served_images["images"].numpy(), own.numpy())


ALL_CHECKS = ("train_steps", "generate", "checkpoint", "keras_file", "export")


def run_check(check, model, history, directory):
    """One of `ALL_CHECKS` on a `trained_model`; `directory` is a fresh folder."""
    if check == "train_steps":
        check_train_steps(model, history)
    elif check == "generate":
        check_generate(model)
    else:
        {"checkpoint": check_checkpoint, "keras_file": check_keras_file,
         "export": check_export}[check](model, directory)
