"""DiffAugment and ADA: the pure operations of `aigc_zoo.augment` (gradients, shapes, ranges,
identity at strength 0, seeded draws), ADA's controller, and the GANs' `augment` switch
(training, checkpoints, augment=none unchanged, refusals)."""

import functools
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, cli_env, tiny_model, user_error
from aigc_zoo import augment
from aigc_zoo.checkpoints import Checkpointer
from aigc_zoo.errors import UserError
from aigc_zoo.models import gan

SEED = tf.constant([3, 7], tf.int64)
OPS = {
    "brightness": augment.brightness,
    "saturation": augment.saturation,
    "contrast": augment.contrast,
    "color": augment.color,
    "translation": augment.translation,
    "cutout": augment.cutout,
    "rotate90": augment.rotate90,
    "diff_augment": augment.diff_augment,
    "ada_augment": functools.partial(augment.ada_augment, p=1.0),
}
AT_ZERO = {  # each operation at strength (or probability) 0
    "brightness": functools.partial(augment.brightness, strength=0.0),
    "saturation": functools.partial(augment.saturation, strength=0.0),
    "contrast": functools.partial(augment.contrast, strength=0.0),
    "color": functools.partial(augment.color, strength=0.0),
    "translation": functools.partial(augment.translation, ratio=0.0),
    "cutout": functools.partial(augment.cutout, ratio=0.0),
    "ada_augment": functools.partial(augment.ada_augment, p=0.0),
}


def _images(shape=(4, 8, 8, 3), seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(-0.95, 0.95, shape), tf.float32)


@pytest.mark.parametrize("name", sorted(OPS))
def test_each_operation_keeps_shape_and_range_and_passes_a_gradient(name):
    images = _images()
    weights = _images(seed=1)
    with tf.GradientTape() as tape:
        tape.watch(images)
        augmented = OPS[name](images, SEED)
        objective = tf.reduce_sum(augmented * weights)
    gradient = tape.gradient(objective, images)
    assert augmented.shape == images.shape
    assert float(tf.reduce_min(augmented)) >= -1.0 and float(tf.reduce_max(augmented)) <= 1.0
    assert gradient is not None and float(tf.reduce_sum(tf.abs(gradient))) > 0
    if name not in ("saturation",):  # saturation's factor may be near 1; the others move pixels
        assert not np.array_equal(augmented.numpy(), images.numpy()), name


def test_a_gradient_reaches_the_generator_through_the_augmentation():
    model = tiny_model("dcgan")
    latents = tf.random.stateless_normal([4, model.config.latent_dim], [0, 1])
    with tf.GradientTape() as tape:
        fake = model.generator(latents, training=True)
        scores = model.discriminator(augment.diff_augment(fake, SEED), training=True)
        loss = tf.reduce_mean(scores)
    gradients = tape.gradient(loss, model.generator.trainable_variables)
    assert all(g is not None for g in gradients)
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in gradients) > 0


def test_colour_shifts_clip_to_the_range():
    bright = tf.fill([64, 4, 4, 1], 0.9)
    shifted = augment.brightness(bright, SEED, strength=2.0)
    assert float(tf.reduce_max(shifted)) == 1.0 and float(tf.reduce_min(shifted)) >= -1.0


@pytest.mark.parametrize("name", sorted(AT_ZERO))
def test_strength_or_probability_zero_is_the_identity(name):
    images = _images()
    np.testing.assert_array_equal(AT_ZERO[name](images, SEED).numpy(), images.numpy())


@pytest.mark.parametrize("name", sorted(OPS))
def test_the_same_seed_gives_the_same_draw_and_another_seed_another(name):
    images = _images(shape=(8, 8, 8, 3))
    first = OPS[name](images, SEED).numpy()
    np.testing.assert_array_equal(first, OPS[name](images, SEED).numpy())
    if name != "saturation":  # draws that differ could still give close pictures; not these
        assert not np.array_equal(first, OPS[name](images, SEED + 1).numpy()), name
    # Two tensors share a draw: augmenting the halves of a pair with one seed moves both
    # exactly as augmenting each alone with that seed.
    pair = OPS[name](tf.concat([images, images], axis=3), SEED).numpy()
    if name not in ("saturation", "color", "contrast", "diff_augment", "ada_augment"):
        np.testing.assert_array_equal(pair[..., :3], first)


def test_translation_moves_whole_pixels_and_fills_with_zero():
    image = tf.reshape(tf.range(1.0, 17.0) / 17.0, [1, 4, 4, 1])
    shifted = augment.translation(tf.tile(image, [16, 1, 1, 1]), SEED, ratio=0.25).numpy()
    for picture in shifted[..., 0]:
        # Each result is the image shifted by (dy, dx) in {-1, 0, 1}^2, with zeros let in.
        matches = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                   if np.array_equal(picture, _shifted(image.numpy()[0, ..., 0], dy, dx))]
        assert matches, picture


def _shifted(picture, dy, dx):
    out = np.zeros_like(picture)
    h, w = picture.shape
    for y in range(h):
        for x in range(w):
            if 0 <= y + dy < h and 0 <= x + dx < w:
                out[y, x] = picture[y + dy, x + dx]
    return out


def test_ada_augments_about_a_share_p_of_the_images():
    images = _images(shape=(400, 4, 4, 1))
    flipped = augment.ada_augment(images, SEED, p=0.3).numpy()
    changed = np.mean(np.any(flipped != images.numpy(), axis=(1, 2, 3)))
    # 7 operations, each with probability 0.3: 1 - 0.7^7 = 0.92 of the images change.
    assert 0.85 < changed < 0.97, changed


def test_ada_controller_moves_p_towards_the_target_and_stays_in_range():
    def update(p, r_t, step=0.1):
        return float(augment.ada_update(tf.constant(p), tf.constant(r_t), target=0.6, step=step))

    assert update(0.5, 0.9) == pytest.approx(0.6)   # D overconfident on reals: more augmentation
    assert update(0.5, 0.2) == pytest.approx(0.4)   # D unsure: less
    assert update(0.95, 1.0) == 1.0 and update(0.05, -1.0) == 0.0
    assert update(0.0, 0.6) == 0.0


def _batches(batch_size, seed=0):
    images = np.random.default_rng(seed).uniform(-1, 1, (batch_size, 28, 28, 1))
    return tf.data.Dataset.from_tensors(
        {"image": tf.constant(images, tf.float32),
         "label": tf.zeros([batch_size], tf.int32)}).repeat()


def test_a_tiny_dcgan_with_ada_adapts_p_each_interval_and_checkpoints_it(tmp_path):
    # An interval of 3 discriminator steps of 8 images; a step of 24 / 80 = 0.3 from p = 0.5.
    model = tiny_model("dcgan", augment="ada", ada_interval=3, ada_kimg=0.08)
    model.ada_p.assign(0.5)
    model.fit(_batches(8), epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
    assert float(model.ada_p.numpy()) == 0.5  # two steps of the interval: not yet
    statistics = model.ada_statistics.numpy()
    assert statistics[1:].tolist() == [16.0, 2.0] and abs(statistics[0]) <= 16
    history = model.fit(_batches(8), epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
    p = float(model.ada_p.numpy())
    assert p == pytest.approx(0.2) or p == pytest.approx(0.8), p
    assert model.ada_statistics.numpy()[1:].tolist() == [8.0, 1.0]  # a new interval began
    assert {"ada_p", "ada_r_t"} <= set(history.history)
    assert -1.0 <= history.history["ada_r_t"][-1] <= 1.0
    Checkpointer(tmp_path, model).save(epoch=1)
    fresh = tiny_model("dcgan", augment="ada", ada_interval=3, ada_kimg=0.08)
    Checkpointer(tmp_path, fresh).restore_latest()
    assert float(fresh.ada_p.numpy()) == p
    np.testing.assert_array_equal(fresh.ada_statistics.numpy(), model.ada_statistics.numpy())


def test_augment_none_leaves_the_losses_of_a_seeded_step_as_they_were():
    def one_step(**changes):
        keras.utils.set_random_seed(0)  # the same initial weights for each model
        model = tiny_model("dcgan", **changes)
        history = model.fit(_batches(8), epochs=1, steps_per_epoch=1, verbose=0,
                            shuffle=False)
        draws = int(model.seed_generator.state.numpy()[1])
        return {k: v[-1] for k, v in history.history.items()}, len(model.variables), draws

    default, count, draws = one_step()
    explicit, explicit_count, explicit_draws = one_step(
        augment="none", augment_policy=("cutout",), ada_target=0.9)
    assert explicit == default and explicit_count == count
    # The seeded stream as before augmentation existed: the discriminator's latents, then the
    # generator's labels and latents; an extra draw would shift every later step's noise.
    assert draws == explicit_draws == 3
    augmented, _, augmented_draws = one_step(augment="diffaugment")
    assert augmented["d_loss"] != default["d_loss"] and augmented_draws == 6


def test_bad_augment_configs_are_user_errors():
    config = gan.GANConfig
    with pytest.raises(UserError, match="augment"):
        config(augment="mixup").validate()
    with pytest.raises(UserError, match="augment_policy"):
        config(augment_policy=("color", "rotate")).validate()
    with pytest.raises(UserError, match="augment_policy"):
        config(augment="diffaugment", augment_policy=()).validate()
    with pytest.raises(UserError, match="loss=least_squares"):
        config(augment="ada", loss="least_squares").validate()
    config(augment="ada", loss="hinge").validate()


def test_wgan_gp_with_ada_is_one_line_user_error(tmp_path):
    message = user_error("--model=wgan_gp", "--config=tiny", f"--workdir={tmp_path / 'w'}",
                         "--set", "augment=ada")
    assert "augment=ada" in message and "loss=wasserstein" in message
    assert not (tmp_path / "w").exists()


def test_points_cannot_be_augmented(tmp_path):
    message = user_error("--model=dcgan", "--dataset=ring8", "--config=tiny",
                         f"--workdir={tmp_path / 'p'}", "--set", "augment=diffaugment")
    assert "2D points cannot be augmented" in message
    assert not (tmp_path / "p").exists()


# A tiny dcgan with ADA, on one device and on two logical CPU devices (MirroredStrategy) with
# the same global batch and seed; prints the losses per step and the controller's state.
_REPLICAS = textwrap.dedent("""
    import json
    import keras, numpy as np, tensorflow as tf
    from aigc_zoo import distribute, registry
    distribute.split_cpu(2)
    mirrored = distribute.make_strategy("mirrored", num_cpu_devices=2)
    images = np.random.default_rng(0).uniform(-1, 1, (8, 28, 28, 1)).astype(np.float32)
    data = tf.data.Dataset.from_tensors({"image": images}).repeat()
    results = {}
    for label, strategy in (("single", tf.distribute.get_strategy()), ("mirrored", mirrored)):
        keras.utils.set_random_seed(3)
        with strategy.scope():
            model_class = registry.get_model("dcgan")
            config = model_class.tiny_config()
            config.augment, config.ada_interval, config.ada_kimg = "ada", 2, 0.04
            model = model_class(config, image_shape=(28, 28, 1), seed=3)
            model.compile(jit_compile=False)
            model.ada_p.assign(0.5)
        history = model.fit(data, epochs=1, steps_per_epoch=4, verbose=0, shuffle=False)
        results[label] = {"history": history.history, "p": float(model.ada_p.numpy()),
                          "statistics": model.ada_statistics.numpy().tolist()}
    print("RESULTS " + json.dumps(results))
""")


@pytest.mark.slow  # two processes, two replicas each (20 s); `make test-slow` runs it
def test_every_replica_sees_the_single_device_p():
    result = subprocess.run([sys.executable, "-c", _REPLICAS], cwd=REPO, env=cli_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(text for text in result.stdout.splitlines() if text.startswith("RESULTS "))
    results = json.loads(line[len("RESULTS "):])
    single, mirrored = results["single"], results["mirrored"]
    # Two adjustments of 0.2 (16 images / 80) each: p moved, and identically on 2 replicas.
    assert single["p"] != 0.5
    assert mirrored["p"] == single["p"] and mirrored["statistics"] == single["statistics"]
    for key, values in single["history"].items():
        np.testing.assert_allclose(mirrored["history"][key], values, rtol=1e-4, atol=1e-5,
                                   err_msg=key)


def test_benchmark_entries_carry_config_changes():
    from aigc_zoo import benchmark  # in-process: it defines its flags only as a program
    run = benchmark.entry_run("dcgan+augment=ada")
    assert (run.model, run.dataset, run.config.augment) == ("dcgan", "digits", "ada")
    assert benchmark.entry_run("dcgan").config == gan.DCGANConfig()
    assert set(benchmark.VARIANTS) == {"dcgan+augment=diffaugment", "dcgan+augment=ada"}
    with pytest.raises(UserError, match="augment"):
        benchmark.entry_run("dcgan+augment=mixup")
    with pytest.raises(UserError, match="loss=wasserstein"):
        benchmark.entry_run("wgan_gp+augment=ada")
