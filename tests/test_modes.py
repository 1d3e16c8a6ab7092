"""The 2D toy datasets and their mode-coverage metrics."""

import math

import numpy as np
import pytest

from aigc_zoo import data
from aigc_zoo.data import toy
from aigc_zoo.errors import UserError
from aigc_zoo.metrics import modes


def test_mixtures_have_the_published_layouts():
    ring = toy.MIXTURES["ring8"]
    np.testing.assert_allclose(np.linalg.norm(ring.centres, axis=1), 2.0)
    angles = np.sort(np.mod(np.arctan2(ring.centres[:, 1], ring.centres[:, 0]), 2 * np.pi))
    np.testing.assert_allclose(np.diff(angles), 2 * np.pi / 8)
    assert ring.std == 0.02
    grid = toy.MIXTURES["grid25"]
    assert sorted(set(grid.centres[:, 0].round(6))) == [-4, -2, 0, 2, 4]
    assert len({tuple(c) for c in grid.centres.round(6)}) == 25 and grid.std == 0.05


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_splits_load_as_float_points_with_mode_labels(name):
    dataset, info = data.load(name, "train", batch_size=500, training=False)
    assert info.image_shape == (2,) and info.num_examples == toy.TRAIN_EXAMPLES
    assert info.num_classes == toy.MIXTURES[name].num_modes
    batch = next(iter(dataset))
    points, labels = batch["image"].numpy(), batch["label"].numpy()
    assert points.dtype == np.float32 and points.shape == (500, 2)
    mixture = toy.MIXTURES[name]
    offsets = points - mixture.centres[labels]
    assert offsets.std() == pytest.approx(mixture.std, rel=0.1)  # not rescaled like images
    again = next(iter(data.load(name, "train", batch_size=500, training=False)[0]))
    np.testing.assert_array_equal(points, again["image"].numpy())
    test = next(iter(data.load(name, "test", batch_size=500, training=False)[0]))
    assert not np.array_equal(points, test["image"].numpy())


def test_points_refuse_an_image_size_and_unknown_splits():
    with pytest.raises(UserError, match="points"):
        data.load("ring8", "train", batch_size=4, training=True, image_size=28)
    with pytest.raises(UserError, match="splits"):
        data.load("ring8", "validation", batch_size=4, training=True)


def test_samples_from_the_mixture_cover_every_mode_with_high_quality():
    points, _ = toy.MIXTURES["grid25"].sample(2500, seed=3)
    results = modes.mode_coverage(points, "grid25")
    assert results["modes_covered"] == 25
    # P(|N(0, s^2 I_2)| <= 3 s) = 1 - exp(-9 / 2) = 0.9889 for each mode.
    assert results["high_quality_share"] == pytest.approx(1 - math.exp(-4.5), abs=0.006)
    assert results["mode_kl"] < 0.02


def test_a_collapsed_generator_covers_one_mode():
    ring = toy.MIXTURES["ring8"]
    points = ring.centres[3] + 0.01 * np.random.default_rng(0).standard_normal((2500, 2))
    results = modes.mode_coverage(points, "ring8")
    assert results["modes_covered"] == 1
    assert results["counts"][3] == 2500 and sum(results["counts"]) == 2500
    assert results["mode_kl"] == pytest.approx(math.log(8))


def test_points_off_the_modes_are_not_high_quality_and_few_do_not_cover():
    ring = toy.MIXTURES["ring8"]
    far = np.zeros((2480, 2))  # the centre of the ring, 100 std from every mode
    near = np.repeat(ring.centres[:2], 10, axis=0)  # 10 exact hits on each of two modes
    results = modes.mode_coverage(np.concatenate([far, near]), "ring8")
    assert results["high_quality_share"] == pytest.approx(20 / 2500)
    assert results["counts"][:2] == [10, 10]
    assert results["modes_covered"] == 0  # below min_count = 20
    assert modes.mode_coverage(np.concatenate([far, near]), "ring8",
                               min_count=10)["modes_covered"] == 2
    assert modes.mode_coverage(far, "ring8")["mode_kl"] == math.inf
    nan = np.full((5, 2), np.nan)
    assert modes.mode_coverage(nan, "ring8")["high_quality_share"] == 0.0
