"""Tests for aigc_zoo.metrics.inception, offline: the clear error, the resize, the feature path."""

import time

import keras
import numpy as np
import pytest

from aigc_zoo.errors import UserError
from aigc_zoo.metrics import inception


def _digits(count: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1.0, 1.0, (count, 28, 28, 1)).astype(np.float32)


def test_offline_without_weights_fails_fast_naming_the_flag(monkeypatch):
    # A closed local port stands in for the unreachable download host, whatever this machine's
    # network; no cached download either.
    monkeypatch.setattr(inception, "DOWNLOAD_HOST", ("127.0.0.1", 9))
    monkeypatch.setattr(inception, "_cached_download", lambda: None)
    start = time.monotonic()
    with pytest.raises(UserError, match="--inception_weights=PATH.*--extractor=classifier"):
        inception.InceptionFeatures("imagenet")
    assert time.monotonic() - start < 30


def test_missing_or_unreadable_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        inception.InceptionFeatures(str(tmp_path / "absent.h5"))
    garbage = tmp_path / "garbage.h5"
    garbage.write_text("not HDF5")
    with pytest.raises(UserError, match="cannot load"):
        inception.InceptionFeatures(str(garbage))


def test_preprocess_tiles_grey_and_resizes_bilinearly_to_299():
    images = _digits(2)
    resized = inception.preprocess(images).numpy()
    assert resized.shape == (2, 299, 299, 3)
    np.testing.assert_array_equal(resized[..., 0], resized[..., 2])
    assert resized.min() >= -1.0 and resized.max() <= 1.0
    # A constant image stays that constant: values are not rescaled.
    flat = inception.preprocess(np.full((1, 28, 28, 3), 0.25, np.float32)).numpy()
    np.testing.assert_allclose(flat, 0.25, atol=1e-6)


def test_features_and_probabilities_with_random_weights():
    extractor = inception.InceptionFeatures(None)  # random weights: exercises the path only
    features, probabilities = extractor(_digits(3))
    assert features.shape == (3, inception.FEATURE_DIM)
    assert np.all(np.isfinite(features)) and features.min() >= 0.0  # pool3 is after a ReLU
    assert probabilities.shape == (3, 1000)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert extractor.describe()["probabilities"] is True


# A full InceptionV3 saved and loaded again (14 s beside another test); `make test` keeps the
# network with random weights and the bad-file errors; CI runs `make test-slow` too.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_a_local_file_without_the_top_gives_features_only(tmp_path):
    network = keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg")
    path = str(tmp_path / "notop.weights.h5")
    network.save_weights(path)
    extractor = inception.InceptionFeatures(path)
    assert not extractor.has_probabilities
    images = _digits(2)
    features, probabilities = extractor(images)
    assert probabilities is None
    expected = network(inception.preprocess(images), training=False).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
