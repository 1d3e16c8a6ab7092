"""Tests for aigc_zoo.models.image_to_image (espcn, pix2pix) and models.translation, on tiny
configs and made-up pairs; the shared harness (tests/test_every_model.py) covers the rest."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import run as run_lib
from aigc_zoo import samplers
from aigc_zoo.data import paired
from aigc_zoo.errors import UserError
from aigc_zoo.models import image_to_image, translation

IMAGE_SHAPE = (28, 28, 1)
IMAGES = np.random.default_rng(0).uniform(-1, 1, (16, *IMAGE_SHAPE)).astype(np.float32)


def _make(model_class, **changes):
    config = dataclasses.replace(model_class.tiny_config(), **changes)
    model = model_class(config, image_shape=IMAGE_SHAPE, num_classes=10, seed=0)
    model.compile(jit_compile=False)
    return model


def _batch(task, count=8, first_index=0):
    return paired.batch_pairs(IMAGES[first_index:first_index + count], task,
                              first_index=first_index)


def _numpy_shuffle(x, factor):
    """The sub-pixel shuffle written out: output[i*F + a, j*F + b, c] = x[i, j, (a*F + b)*C + c]."""
    batch, height, width, depth = x.shape
    channels = depth // (factor * factor)
    out = np.zeros((batch, height * factor, width * factor, channels), x.dtype)
    for i in range(height):
        for j in range(width):
            for a in range(factor):
                for b in range(factor):
                    start = (a * factor + b) * channels
                    out[:, i * factor + a, j * factor + b] = x[:, i, j, start:start + channels]
    return out


def test_pixel_shuffle_matches_numpy():
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 2 * 16)).astype(np.float32)
    np.testing.assert_array_equal(image_to_image.pixel_shuffle(x, 4).numpy(),
                                  _numpy_shuffle(x, 4))
    layer = image_to_image.PixelShuffle(2)
    np.testing.assert_array_equal(layer(x[..., :8]).numpy(), _numpy_shuffle(x[..., :8], 2))
    assert layer.compute_output_shape((None, 3, 4, 8)) == (None, 6, 8, 2)


def test_espcn_shapes_per_task_and_regression_learns():
    for task, source in (("sr:2", (14, 14, 1)), ("inpaint", (28, 28, 2)),
                         ("edges", (28, 28, 1))):
        model = _make(image_to_image.ESPCN, task=task)
        assert model.source_shape == source
        shuffles = [layer for layer in model.network.layers
                    if isinstance(layer, image_to_image.PixelShuffle)]
        assert len(shuffles) == (task == "sr:2")  # same-size tasks: no shuffle
        assert model.translate(_batch(task)["source"]).shape == (8, *IMAGE_SHAPE)
    # Images constant on 4x4 blocks: their x4 sources determine them, so the loss can fall.
    blocks = np.random.default_rng(2).uniform(-0.9, 0.9, (8, 7, 7, 1)).astype(np.float32)
    batch = paired.batch_pairs(np.kron(blocks, np.ones((1, 4, 4, 1), np.float32)), "sr:4")
    model = _make(image_to_image.ESPCN, task="sr:4", loss="l1", learning_rate=1e-2)
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    history = model.fit(dataset, epochs=30, steps_per_epoch=1, verbose=0).history
    assert history["loss"] == history["l1"]
    assert np.mean(history["loss"][-5:]) < 0.8 * np.mean(history["loss"][:5])
    with pytest.raises(ValueError, match=r"\(7, 7, 1\)"):
        model.translate(np.zeros((1, 14, 14, 1), np.float32))


def test_generate_translates_the_first_batch_sources_kept_as_references():
    model = _make(image_to_image.ESPCN, task="sr:4")
    first, second = _batch("sr:4"), _batch("sr:4", first_index=8)
    model.fit(tf.data.Dataset.from_tensor_slices(
        {key: tf.stack([first[key], second[key]]) for key in first}), verbose=0)
    references = model.reference_sources.numpy()
    assert references.shape == (translation.REFERENCES, 7, 7, 1)
    np.testing.assert_array_equal(references[:8], first["source"].numpy())  # not the second
    np.testing.assert_array_equal(references[8:16], first["source"].numpy())  # tiled
    outputs = model.translate(references).numpy()
    samples = model.generate(5, seed=3).numpy()
    assert all(any(np.array_equal(sample, output) for output in outputs) for sample in samples)
    # The picks have their own stream, folded in from [seed, 0] (translate's noise stream).
    picks = tf.random.stateless_uniform(
        [5], tf.random.experimental.stateless_fold_in(tf.constant([3, 0], tf.int64),
                                                      translation.PICKS_STREAM),
        0, translation.REFERENCES, dtype=tf.int32).numpy()
    np.testing.assert_allclose(samples, outputs[picks], atol=1e-5)


def test_pix2pix_update_groups_step_only_their_own_variables():
    model = _make(image_to_image.Pix2Pix, task="inpaint")
    assert model.config.l1_weight == image_to_image.Pix2PixConfig().l1_weight == 100.0
    batch = _batch("inpaint")
    groups = {group.name: group for group in model.groups}
    assert list(groups) == ["discriminator", "generator"]
    names = {name: {v.path for v in group.variables} for name, group in groups.items()}
    assert not names["discriminator"] & names["generator"]
    assert names["discriminator"] | names["generator"] == {v.path for v in
                                                           model.trainable_variables}
    for name, group in groups.items():
        before = {v.path: v.numpy().copy() for v in model.trainable_variables}
        model._step_group(group, batch)
        changed = {v.path for v in model.trainable_variables
                   if not np.array_equal(before[v.path], v.numpy())}
        assert changed and changed <= names[name], name
    losses = model.compute_losses(batch, training=False)
    assert float(losses["g_loss"]) == pytest.approx(
        float(losses["g_gan"]) + 100.0 * float(losses["l1"]), rel=1e-5)


def test_task_flag_sets_the_config_field_of_image_to_image_models_only():
    request = run_lib.parse(["run", "--model=espcn", "--task=sr:2"])
    assert request.run.config.task == "sr:2"
    assert run_lib.parse(["run", "--model=pix2pix"]).run.config.task == "edges"
    with pytest.raises(UserError, match="--task is for image-to-image"):
        run_lib.parse(["run", "--model=vae", "--task=sr:2"])
    with pytest.raises(UserError, match="task='sr:1'"):
        run_lib.parse(["run", "--model=espcn", "--task=sr:1"])
    with pytest.raises(UserError, match="loss='wasserstein': pix2pix has no gradient penalty"):
        run_lib.parse(["run", "--model=pix2pix", "--set", "loss=wasserstein"])


def test_sr3_conditions_by_channel_concatenation():
    from aigc_zoo.models import sr3
    model = sr3.SR3(dataclasses.replace(sr3.SR3.tiny_config(), task="inpaint"),
                    image_shape=IMAGE_SHAPE, num_classes=10, seed=0)
    # x_t (1 channel) next to the masked image and its mask; the output is x_t's noise.
    assert model.unet.inputs[0].shape[-1] == 1 + 2
    assert model.unet.outputs[0].shape[-1] == 1
    assert model.knobs(model.config, IMAGE_SHAPE).sampling_cost == model.config.sample_steps


def test_sr3_translates_with_each_shared_sampler_chosen_by_its_config():
    from aigc_zoo.models import sr3
    sources = _batch("sr:4", count=3)["source"]
    outputs = {}
    for sampler in samplers.SAMPLERS:  # 4 steps: DPM-Solver++(2M) is DDIM up to 2
        model = _make(sr3.SR3, sample_steps=4, sample_sampler=sampler)
        # The U-Net's last convolution starts at zero: no noise predicted, which every sampler
        # turns into the same images.
        kernel = model.ema.averaged.get_layer("conv_out").kernel
        kernel.assign(np.random.default_rng(0).normal(0, 0.3, kernel.shape).astype(np.float32))
        outputs[sampler] = model.translate(sources, seed=1).numpy()
        assert outputs[sampler].shape == (3, *IMAGE_SHAPE)
        assert outputs[sampler].min() >= -1.0 and outputs[sampler].max() <= 1.0
        np.testing.assert_array_equal(model.translate(sources, seed=1).numpy(), outputs[sampler])
    assert not np.allclose(outputs["dpmpp_2m"], outputs["ddim"])
    assert not np.allclose(outputs["ddpm"], outputs["ddim"])
    # Ancestral DDPM visits all T steps, as `ddpm`'s does by default.
    ancestral = dataclasses.replace(model.config, sample_sampler="ddpm")
    assert sr3.SR3.knobs(ancestral, IMAGE_SHAPE).sampling_cost == ancestral.timesteps
    # A run saved before the field existed sampled with DDIM, and still does.
    saved = config_lib.to_dict(sr3.SR3.tiny_config())
    del saved["sample_sampler"]
    assert config_lib.from_dict(sr3.SR3Config, saved).sample_sampler == "ddim"
    request = run_lib.parse(["run", "--model=sr3", "--set", "sample_sampler=dpmpp_2m"])
    assert request.run.config.sample_sampler == "dpmpp_2m"
    with pytest.raises(UserError, match="sample_sampler='euler'"):
        run_lib.parse(["run", "--model=sr3", "--set", "sample_sampler=euler"])
