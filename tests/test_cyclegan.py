"""Tests for aigc_zoo.models.cyclegan: its losses and image pool against closed forms, its update
groups, its flags; the shared harness (tests/test_every_model.py) covers training, sampling,
checkpoints, `.keras` files and the export, and tests/test_paired.py the unpaired batches."""

import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo import run as run_lib
from aigc_zoo.data import paired
from aigc_zoo.errors import UserError
from aigc_zoo.models import cyclegan

SHAPE = (8, 8, 1)
RNG = np.random.default_rng(0)


def test_cycle_and_identity_losses_vanish_for_identity_generators():
    images = tf.constant(RNG.uniform(-1, 1, (4, *SHAPE)), tf.float32)
    others = tf.constant(RNG.uniform(-1, 1, (4, *SHAPE)), tf.float32)
    same = cyclegan.cycle_and_identity(tf.identity, tf.identity, images, images)
    assert float(same["cycle"]) == 0.0 and float(same["identity"]) == 0.0
    # Identity generators between two different domains: nothing to undo, nothing changed.
    apart = cyclegan.cycle_and_identity(tf.identity, tf.identity, images, others)
    assert float(apart["cycle"]) == 0.0 and float(apart["identity"]) == 0.0
    # G(x) = x / 2, F(y) = y / 2: F(G(x)) = x / 4 misses x by 3|x| / 4, G(y) misses y by |y| / 2.
    halves = cyclegan.cycle_and_identity(lambda x: x / 2, lambda y: y / 2, images, others)
    mean_x, mean_y = np.abs(images).mean(), np.abs(others).mean()
    np.testing.assert_allclose(float(halves["cycle"]), 0.75 * (mean_x + mean_y), rtol=1e-5)
    np.testing.assert_allclose(float(halves["identity"]), 0.5 * (mean_x + mean_y), rtol=1e-5)


def _fill(count, start=0.0):
    """`count` images [count, 1, 1, 1] holding start, start + 1, ..."""
    return tf.reshape(tf.range(count, dtype=tf.float32) + start, [count, 1, 1, 1])


def test_image_pool_fills_then_swaps_half_the_images():
    pool, count = tf.zeros([6, 1, 1, 1]), tf.constant(0)
    shown, pool, count = cyclegan.query_pool(pool, count, _fill(4), tf.constant([1, 2]))
    np.testing.assert_array_equal(shown, _fill(4))  # while filling: shown as they are
    assert int(count) == 4
    np.testing.assert_array_equal(pool[:4], _fill(4))
    # This batch fills the pool: two stored, two past the end shown and dropped, no swaps.
    shown, pool, count = cyclegan.query_pool(pool, count, _fill(4, 10), tf.constant([1, 3]))
    np.testing.assert_array_equal(shown, _fill(4, 10))
    assert int(count) == 6
    np.testing.assert_array_equal(tf.reshape(pool, [-1]), [0, 1, 2, 3, 10, 11])
    swapped = 0
    for step in range(20):  # full: each image swapped for a stored one with probability 1/2
        before = tf.reshape(pool, [-1]).numpy()
        new = _fill(4, 100 + 10 * step)
        shown, pool, count = cyclegan.query_pool(pool, count, new, tf.constant([step, 7]))
        after, shown = tf.reshape(pool, [-1]).numpy(), tf.reshape(shown, [-1]).numpy()
        # Nothing is lost or made up: what is shown and stored is what was stored and given.
        np.testing.assert_array_equal(np.sort(np.concatenate([shown, after])),
                                      np.sort(np.concatenate([before, new.numpy().ravel()])))
        swapped += int(np.sum(shown != new.numpy().ravel()))
        assert int(count) == 6
    assert 20 <= swapped <= 60  # 40 expected of 80


def test_each_update_group_steps_only_its_own_networks():
    from conftest import tiny_model
    model = tiny_model("cyclegan", image_shape=SHAPE, num_classes=None)
    images = RNG.uniform(-1, 1, (8, *SHAPE)).astype(np.float32)
    batch = {key: tf.constant(value) for key, value in paired.batch_pairs(images,
                                                                         "unpaired").items()}
    owners = {"discriminators": ("discriminator", "inverse_discriminator"),
              "generators": ("generator", "inverse_generator")}
    for group in model.groups:
        own = {id(v) for name in owners[group.name] for v in getattr(model, name).weights}
        assert {id(v) for v in group.variables} == {
            id(v) for name in owners[group.name]
            for v in getattr(model, name).trainable_variables}
        before = {id(v): v.numpy().copy() for v in model.trainable_variables}
        model._step_group(group, batch)
        changed = {id(v) for v in model.trainable_variables
                   if not np.array_equal(before[id(v)], v.numpy())}
        assert changed <= own, group.name  # nothing outside the group moves
        for name in owners[group.name]:  # and each network of the group does (the U-Nets'
            # zero-initialised output layers keep the layers below still on a first step)
            assert changed & {id(v) for v in getattr(model, name).weights}, name
    # The discriminators' step filled the pools with the batch's fakes.
    assert [int(count.numpy()) for count in model.pool_counts] == [8, 8]


def test_flags_set_the_target_domain_and_the_direction(tmp_path):
    request = run_lib.parse(["aigc_zoo", "--model=cyclegan", "--target_dataset=shapes",
                             "--target_train_split=train[:100]", f"--workdir={tmp_path}"])
    config = request.run.config
    assert (config.target_dataset, config.target_train_split, config.target_eval_split,
            config.direction, config.task) == ("shapes", "train[:100]", "test", "forward",
                                               "unpaired")
    sample = run_lib.parse(["aigc_zoo", "--mode=translate", "--direction=backward",
                            f"--workdir={tmp_path}", f"--input={tmp_path}",
                            f"--output={tmp_path / 'out'}"])
    assert sample.overrides == ("direction=backward",)
    for flags, fragment in (
            (["--model=espcn", "--target_dataset=shapes"], "--target_dataset is for unpaired"),
            (["--model=espcn", "--task=unpaired"], "unpaired translation is cyclegan's"),
            (["--model=cyclegan", "--task=edges"], "cyclegan learns unpaired"),
            (["--model=cyclegan", "--target_train_split=train[:"], "bad split"),
            (["--model=cyclegan", "--set=pool_size=4"], "pool_size=4"),
            (["--model=cyclegan", "--direction=backward"], "training learns both"),
            (["--mode=sample", "--target_dataset=shapes"], "is for --mode=train")):
        with pytest.raises(UserError, match=fragment):
            run_lib.parse(["aigc_zoo", *flags, f"--workdir={tmp_path}"])


def test_a_run_without_a_target_dataset_is_refused_in_one_line(tmp_path):
    from conftest import user_error
    message = user_error("--model=cyclegan", "--dataset=folder:" +
                         str(_one_image_folder(tmp_path)), "--image_size=8",
                         f"--workdir={tmp_path / 'run'}")
    assert "--target_dataset" in message
    assert not (tmp_path / "run").exists()


def _one_image_folder(root):
    from PIL import Image
    (root / "images").mkdir()
    for i in range(8):
        Image.fromarray(np.full((8, 8), 30 * i, np.uint8)).save(root / "images" / f"{i}.png")
    return root / "images"


def test_backward_direction_translates_and_samples_the_other_way():
    from conftest import tiny_model
    forward = tiny_model("cyclegan", image_shape=SHAPE, num_classes=None)
    backward = tiny_model("cyclegan", image_shape=SHAPE, num_classes=None,
                          direction="backward")
    # Random weights: the untrained generators' zero-initialised output layers give 0 for all.
    forward.set_weights([RNG.normal(0, 0.2, w.shape).astype(w.dtype) if w.dtype.kind == "f"
                         else w for w in forward.get_weights()])
    backward.set_weights(forward.get_weights())
    images = tf.constant(RNG.uniform(-1, 1, (2, *SHAPE)), tf.float32)
    np.testing.assert_allclose(forward.translate_direction(images, "backward"),
                               backward.translate(images), atol=1e-5)  # eager vs graph
    assert not np.array_equal(forward.translate(images), backward.translate(images))
    forward.reference_targets.assign(tf.ones_like(forward.reference_targets))
    backward.set_weights(forward.get_weights())
    # generate translates the kept targets back: every draw is F(ones).
    expected = forward.translate_direction(tf.ones([1, *SHAPE]), "backward")[0]
    for sample in backward.generate(3, seed=1).numpy():
        np.testing.assert_allclose(sample, expected, atol=1e-5)


def test_a_points_dataset_as_the_source_is_one_error_line():
    from aigc_zoo import data
    _, points = data.open_split("ring8", "train")
    with pytest.raises(UserError, match="needs images"):
        paired.open_target(("digits", "train", "test"), "train", points)
