"""Tests for aigc_zoo.metrics.classifier: accuracy on digits, the cache, datasets without labels."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from aigc_zoo import data
from aigc_zoo.errors import UserError
from aigc_zoo.metrics import classifier


@pytest.fixture(scope="module")
def digits_classifier(digits_classifier_dir, digits_data_dir):
    return classifier.load("digits", data_dir=digits_data_dir, cache_dir=digits_classifier_dir)


@pytest.fixture(scope="module")
def test_split(digits_data_dir):
    batches, _ = data.load("digits", "test", batch_size=10_000, training=False,
                           data_dir=digits_data_dir)
    batch = next(iter(batches))
    return batch["image"].numpy(), batch["label"].numpy()


def test_reaches_97_percent_on_the_whole_digits_test_split(digits_classifier, test_split):
    images, labels = test_split
    assert len(images) == 10_000
    features, probabilities = digits_classifier(images)
    accuracy = np.mean(np.argmax(probabilities, axis=1) == labels)
    assert accuracy >= 0.97
    # The stored accuracy is what results report; the loaded weights reproduce it.
    assert digits_classifier.test_accuracy == pytest.approx(accuracy, abs=1e-4)
    assert digits_classifier.info["test_examples"] == 10_000
    assert features.shape == (10_000, classifier.FEATURE_DIM)
    assert probabilities.shape == (10_000, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # Standardised with the train split's moments: about zero mean and unit scale on test.
    assert np.abs(features.mean(axis=0)).max() < 0.5
    assert 0.5 < features.std(axis=0).mean() < 2.0


def test_second_load_comes_from_the_cache(digits_classifier, digits_classifier_dir,
                                          digits_data_dir, test_split, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier was trained again")

    monkeypatch.setattr(classifier, "train", no_training)
    again = classifier.load("digits", data_dir=digits_data_dir, cache_dir=digits_classifier_dir)
    assert again.path == digits_classifier.path
    assert again.info == digits_classifier.info
    images = test_split[0][:64]
    for mine, theirs in zip(again(images), digits_classifier(images)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5)
    with open(os.path.join(again.path, "info.json")) as handle:
        assert json.load(handle)["test_accuracy"] == again.test_accuracy
    # Another cache folder has no copy, so it would train.
    with pytest.raises(AssertionError, match="trained again"):
        classifier.load("digits", data_dir=digits_data_dir,
                        cache_dir=digits_classifier_dir + "-elsewhere")


def test_cache_folder_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AIGC_ZOO_CACHE", str(tmp_path))
    assert classifier.default_cache_dir() == str(tmp_path / "classifiers")
    monkeypatch.delenv("AIGC_ZOO_CACHE")
    assert classifier.default_cache_dir() == os.path.join(
        os.path.expanduser("~"), ".cache", "aigc_zoo", "classifiers")


def test_cache_key_separates_datasets_shapes_and_splits():
    paths = {classifier.cache_path("/c", *args) for args in [
        ("digits", (28, 28, 1), "train", "test"),
        ("mnist", (28, 28, 1), "train", "test"),
        ("digits", (32, 32, 1), "train", "test"),
        ("digits", (28, 28, 1), "train[:50%]", "test"),
        ("idx:/a/mnist", (28, 28, 1), "train", "test"),
        ("idx:/b/mnist", (28, 28, 1), "train", "test"),
    ]}
    assert len(paths) == 6
    name = os.path.basename(classifier.cache_path("/c", "digits", (28, 28, 1), "train", "test"))
    assert name.startswith(f"digits-28x28x1-v{classifier.VERSION}-")


def test_dataset_without_labels_says_to_use_inception(tmp_path):
    for index in range(4):
        Image.fromarray(np.full((8, 8), index * 60, np.uint8)).save(tmp_path / f"{index}.png")
    with pytest.raises(UserError, match="no labels.*--extractor=inception"):
        classifier.load(f"folder:{tmp_path}", image_size=8, cache_dir=str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()
