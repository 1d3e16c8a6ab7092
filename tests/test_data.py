"""The shared input pipeline: shapes, ranges, order, splits, TFDS sources and offline errors."""

import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from aigc_zoo import data, network
from aigc_zoo.data import local
from aigc_zoo.errors import UserError


@pytest.fixture()
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    local.write_idx(tmp_path / "train-images-idx3-ubyte.gz",
                    rng.integers(0, 256, (50, 28, 28), dtype=np.uint8))
    local.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", (np.arange(50) % 10).astype(np.uint8))
    return f"idx:{tmp_path}"


def _first(dataset):
    return {k: v.numpy() for k, v in next(iter(dataset)).items()}


def test_training_batches_are_static_float_images_in_range(idx_dir):
    dataset, info = data.load(idx_dir, "train", batch_size=8, training=True, seed=1)
    assert info.image_shape == (28, 28, 1) and info.num_classes == 10 and info.num_examples == 50
    assert dataset.element_spec["image"].shape.as_list() == [8, 28, 28, 1]
    assert dataset.element_spec["label"].dtype == tf.int32
    batch = _first(dataset)
    assert batch["image"].dtype == np.float32
    assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
    assert batch["image"].min() == -1.0 and batch["image"].max() == 1.0  # 0 and 255 both occur


@pytest.mark.parametrize("training", [True, False])
def test_pipelines_run_without_the_tf_data_autotuner(idx_dir, training):
    # With it on, whole `fit` calls ran on one core of the 2-core CPU (data.with_fixed_tuning).
    dataset, _ = data.load(idx_dir, "train", batch_size=8, training=training)
    assert dataset.options().autotune.enabled is False
    # Options survive what `fit` and the runner add on top (distribution, skip).
    assert dataset.skip(2).with_options(tf.data.Options()).options().autotune.enabled is False


def test_shuffle_is_deterministic_for_a_seed(idx_dir):
    def first(seed):
        dataset, _ = data.load(idx_dir, "train", batch_size=8, training=True, seed=seed)
        return _first(dataset)["label"]

    np.testing.assert_array_equal(first(3), first(3))
    orders = [tuple(first(seed)) for seed in range(5)]
    assert len(set(orders)) > 1


def test_evaluation_pass_keeps_every_example_in_order(idx_dir):
    dataset, _ = data.load(idx_dir, "train", batch_size=8, training=False)
    labels = np.concatenate([batch["label"].numpy() for batch in dataset])
    np.testing.assert_array_equal(labels, np.arange(50) % 10)


@pytest.mark.parametrize("split, count, first_label", [
    ("train[:20]", 20, 0), ("train[20:]", 30, 0), ("train[:10%]", 5, 0), ("train[45:]", 5, 5)])
def test_split_slices(idx_dir, split, count, first_label):
    dataset, info = data.load(idx_dir, split, batch_size=1, training=False)
    labels = np.concatenate([batch["label"].numpy() for batch in dataset])
    assert info.num_examples == count == len(labels)
    assert labels[0] == first_label


def test_resize_to_image_size(idx_dir):
    dataset, info = data.load(idx_dir, "train", batch_size=4, training=True, image_size=16)
    assert info.image_shape == (16, 16, 1)
    assert _first(dataset)["image"].shape == (4, 16, 16, 1)


@pytest.mark.parametrize("name, split, message", [
    ("nope", "train", "unknown dataset 'nope'"),
    ("idx:/does/not/exist", "train", "/does/not/exist"),
    ("IDX", "train[::2]", "bad split"),
    ("IDX", "validation", "validation"),
])
def test_bad_names_and_splits_are_user_errors(idx_dir, name, split, message):
    with pytest.raises(UserError, match=message):
        data.load(idx_dir if name == "IDX" else name, split, batch_size=4, training=True)


def test_features_are_read_from_tfds_datasets_only(idx_dir):
    with pytest.raises(UserError, match="not a TFDS dataset"):
        data.open_with_features(f"idx:{idx_dir}", "train", ["caption"])


def test_batch_larger_than_split_is_a_user_error(idx_dir):
    with pytest.raises(UserError, match="fewer than the batch size"):
        data.load(idx_dir, "train", batch_size=64, training=True)


@pytest.mark.parametrize("name, shape, num_classes", [
    ("mnist", (28, 28, 1), 10), ("fashion_mnist", (28, 28, 1), 10),
    ("cifar10", (32, 32, 3), 10), ("celeb_a", (64, 64, 3), None)])
def test_tfds_sources_through_mock_data(monkeypatch, tmp_path, name, shape, num_classes):
    monkeypatch.setattr(network, "require_connection", lambda *args, **kwargs: None)
    with tfds.testing.mock_data(num_examples=12):
        dataset, info = data.load(name, "train", batch_size=4, training=True,
                                  data_dir=str(tmp_path))
        batch = _first(dataset)
    assert info.image_shape == shape and info.num_classes == num_classes
    assert batch["image"].shape == (4, *shape)
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert ("label" in batch) == (num_classes is not None)


def test_unprepared_tfds_dataset_offline_fails_fast(monkeypatch, tmp_path):
    # A closed local port stands in for an unreachable download host, whatever this machine's
    # network: the probe must refuse within seconds instead of TFDS' minutes of retries.
    monkeypatch.setitem(data._TFDS_HOSTS, "mnist", ("127.0.0.1", 9))
    start = time.monotonic()
    with pytest.raises(UserError, match="--data_dir.*--dataset=digits"):
        data.load("mnist", "train", batch_size=4, training=True, data_dir=str(tmp_path))
    assert time.monotonic() - start < 30
    assert not (tmp_path / "downloads").exists()


@pytest.mark.parametrize("channels", [1, 3])
def test_png_bytes_decode_to_the_image(channels):
    from aigc_zoo.data import png
    image = np.random.default_rng(channels).integers(0, 256, (7, 5, channels), dtype=np.uint8)
    np.testing.assert_array_equal(tf.io.decode_png(png.encode(image)).numpy(), image)
    with pytest.raises(ValueError, match="uint8"):
        png.encode(image.astype(np.float32))
