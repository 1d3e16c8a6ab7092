"""Tests for aigc_zoo.data.local: IDX files and image folders made in tmp dirs, and real MNIST."""

from __future__ import annotations

import contextlib
import gzip
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from aigc_zoo.data import local
from aigc_zoo.errors import UserError

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 5, 4), dtype=np.uint8)


def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, **kwargs)
    return path


def _grey(value: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    return np.full(size, value, np.uint8)


def _colour(rgb: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), size + (3,))


@contextlib.contextmanager
def _raises(path: Path | str, *texts: str) -> Iterator[None]:
    """Expects a one-line `UserError` whose message names `path` (and contains `texts`)."""
    with pytest.raises(UserError) as info:
        yield
    message = str(info.value)
    assert "\n" not in message, message
    for text in (str(path),) + texts:
        assert text in message, f"{text!r} not in {message!r}"


# --- IDX ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32])
def test_idx_round_trip(tmp_path, name, dtype):
    array = (np.arange(2 * 3 * 4).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        array = _random_images(7)
    local.write_idx(tmp_path / name, array)
    back = local.read_idx(tmp_path / name)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


def test_idx_gz_file_is_really_gzipped_and_header_is_standard(tmp_path):
    local.write_idx(tmp_path / "x.gz", np.zeros((3, 2), np.uint8))
    raw = gzip.decompress((tmp_path / "x.gz").read_bytes())
    # 0x0000, type 0x08, 2 dims, then 3 and 2 as big-endian uint32, then 6 data bytes.
    assert raw == bytes([0, 0, 8, 2, 0, 0, 0, 3, 0, 0, 0, 2]) + bytes(6)


def _write_split(directory: Path, prefix: str, images, labels=None, gz: bool = False) -> None:
    ext = ".gz" if gz else ""
    local.write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", images)
    if labels is not None:
        local.write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", labels)


def test_load_idx_train_with_labels(tmp_path):
    images, labels = _random_images(6), np.arange(6, dtype=np.uint8)
    _write_split(tmp_path, "train", images, labels, gz=True)
    _write_split(tmp_path, "t10k", _random_images(2, seed=1))  # must not be picked for "train"
    got_images, got_labels = local.load_idx(tmp_path, "train")
    assert got_images.shape == (6, 5, 4, 1) and got_images.dtype == np.uint8
    np.testing.assert_array_equal(got_images[..., 0], images)
    assert got_labels.dtype == np.int32
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize("prefix", ["t10k", "test"])
def test_load_idx_test_split_accepts_both_prefixes(tmp_path, prefix):
    images, labels = _random_images(3), np.array([9, 0, 4], np.uint8)
    _write_split(tmp_path, prefix, images, labels)
    got_images, got_labels = local.load_idx(str(tmp_path), "test")
    np.testing.assert_array_equal(got_images[..., 0], images)
    np.testing.assert_array_equal(got_labels, [9, 0, 4])


def test_load_idx_without_label_file_returns_none(tmp_path):
    _write_split(tmp_path, "t10k", _random_images(4), gz=True)
    images, labels = local.load_idx(tmp_path, "test")
    assert images.shape == (4, 5, 4, 1) and labels is None


def test_load_idx_accepts_kaggle_file_names(tmp_path):
    local.write_idx(tmp_path / "train-images.idx3-ubyte", _random_images(2))
    local.write_idx(tmp_path / "train-labels.idx1-ubyte", np.array([1, 2], np.uint8))
    _, labels = local.load_idx(tmp_path, "train")
    np.testing.assert_array_equal(labels, [1, 2])


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with _raises(path, "magic"):
        local.read_idx(path)


def test_read_idx_unsupported_type(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))
    with _raises(path, "0x07"):
        local.read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated_payload(tmp_path, gz):
    full = tmp_path / "full"
    local.write_idx(full, _random_images(3))
    path = tmp_path / ("cut.gz" if gz else "cut")
    data = full.read_bytes()[:-7]
    path.write_bytes(gzip.compress(data) if gz else data)
    with _raises(path, "truncated", "(3, 5, 4)"):
        local.read_idx(path)


def test_read_idx_truncated_header_and_corrupt_gzip(tmp_path):
    header = tmp_path / "header"
    header.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 9]))
    with _raises(header, "truncated"):
        local.read_idx(header)
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(bytes(1000))[:-20])
    with _raises(broken_gz):
        local.read_idx(broken_gz)


def test_read_idx_missing_file(tmp_path):
    with _raises(tmp_path / "nope"):
        local.read_idx(tmp_path / "nope")


def test_load_idx_missing_directory(tmp_path):
    with _raises(tmp_path / "absent", "does not exist"):
        local.load_idx(tmp_path / "absent", "train")


def test_load_idx_missing_files_lists_names_looked_for(tmp_path):
    _write_split(tmp_path, "train", _random_images(2))
    with _raises(tmp_path, "t10k-images-idx3-ubyte", "test-images-idx3-ubyte.gz"):
        local.load_idx(tmp_path, "test")


def test_load_idx_count_mismatch(tmp_path):
    _write_split(tmp_path, "train", _random_images(5), np.zeros(4, np.uint8))
    with _raises(tmp_path / "train-labels-idx1-ubyte", "5 images"):
        local.load_idx(tmp_path, "train")


def test_load_idx_unknown_split(tmp_path):
    with _raises(tmp_path, "'validation'", "train, test"):
        local.load_idx(tmp_path, "validation")


# --- image folders -----------------------------------------------------------------------------

def test_load_folder_classes_resize_and_rgb_promotion(tmp_path):
    _save(tmp_path / "dog" / "b.png", _grey(200, (12, 12)))
    _save(tmp_path / "dog" / "a.jpg", _colour(BLUE, (16, 16)), quality=95)
    _save(tmp_path / "cat" / "only.bmp", _grey(10, (6, 6)))
    (tmp_path / "cat" / "notes.txt").write_text("not an image, ignored")
    images, labels, class_names = local.load_folder(tmp_path, "train", image_size=4)
    assert class_names == ("cat", "dog")
    np.testing.assert_array_equal(labels, [0, 1, 1])
    assert labels.dtype == np.int32
    assert images.shape == (3, 4, 4, 3) and images.dtype == np.uint8
    # Sorted order within a class: a.jpg (blue) before b.png (grey, repeated to RGB).
    np.testing.assert_array_equal(images[0], np.full((4, 4, 3), 10))
    np.testing.assert_allclose(images[1].reshape(-1, 3).mean(0), BLUE, atol=3)
    np.testing.assert_array_equal(images[2], np.full((4, 4, 3), 200))


def test_load_folder_all_grey_gives_one_channel(tmp_path):
    _save(tmp_path / "0" / "x.png", _grey(50, (20, 20)))
    _save(tmp_path / "1" / "y.png", np.dstack([_grey(80), _grey(255)]))  # grey + alpha
    images, labels, _ = local.load_folder(tmp_path, "train", image_size=10)
    assert images.shape == (2, 10, 10, 1)
    np.testing.assert_array_equal(images[..., 0].reshape(2, -1).max(1), [50, 80])


def test_load_folder_alpha_dropped_and_gif_first_frame(tmp_path):
    _save(tmp_path / "a.png", np.dstack([_colour(GREEN), _grey(0)]))  # fully transparent green
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    frames[0].save(tmp_path / "b.gif", save_all=True, append_images=frames[1:])
    images, labels, class_names = local.load_folder(tmp_path, "train", image_size=3)
    assert images.shape == (2, 3, 3, 3) and labels is None and class_names is None
    np.testing.assert_array_equal(images[0], np.broadcast_to(GREEN, (3, 3, 3)))
    np.testing.assert_array_equal(images[1], np.broadcast_to(RED, (3, 3, 3)))


@pytest.mark.parametrize("size", [(10, 30), (30, 10)])  # wide and tall
def test_load_folder_crops_the_centre_square(tmp_path, size):
    height, width = size
    array = np.empty(size + (3,), np.uint8)
    array[...] = BLUE  # the two sides, which the crop must drop
    if width > height:
        array[:, 10:20] = RED
    else:
        array[10:20, :] = RED
    _save(tmp_path / "img.png", array)
    images, _, _ = local.load_folder(tmp_path, "train", image_size=5)
    np.testing.assert_array_equal(images[0], np.broadcast_to(RED, (5, 5, 3)))


def test_load_folder_flat_is_unlabelled_and_sorted(tmp_path):
    for name, value in [("c.png", 30), ("a.png", 10), ("b.PNG", 20)]:
        _save(tmp_path / name, _grey(value))
    images, labels, class_names = local.load_folder(tmp_path, "train", image_size=8)
    assert labels is None and class_names is None
    np.testing.assert_array_equal(images[:, 0, 0, 0], [10, 20, 30])


def test_load_folder_train_test_layout(tmp_path):
    _save(tmp_path / "train" / "x" / "1.png", _grey(1))
    _save(tmp_path / "train" / "y" / "2.png", _grey(2))
    _save(tmp_path / "test" / "x" / "3.png", _grey(3))
    _save(tmp_path / "test" / "y" / "4.png", _grey(4))
    _save(tmp_path / "test" / "y" / "5.png", _grey(5))
    images, labels, class_names = local.load_folder(tmp_path, "test", image_size=2)
    assert class_names == ("x", "y")
    np.testing.assert_array_equal(labels, [0, 1, 1])
    np.testing.assert_array_equal(images[:, 0, 0, 0], [3, 4, 5])
    images, labels, _ = local.load_folder(tmp_path, "train", image_size=2)
    np.testing.assert_array_equal(images[:, 0, 0, 0], [1, 2])


def test_load_folder_test_split_needs_layout(tmp_path):
    _save(tmp_path / "a.png", _grey(1))
    with _raises(tmp_path, "train/", "test/"):
        local.load_folder(tmp_path, "test", image_size=4)


def test_load_folder_undecodable_file(tmp_path):
    _save(tmp_path / "k" / "good.png", _grey(1))
    bad = tmp_path / "k" / "bad.png"
    bad.write_bytes(b"this is not a png")
    with _raises(bad):
        local.load_folder(tmp_path, "train", image_size=4)


def test_load_folder_truncated_image(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)  # incompressible
    path = _save(tmp_path / "cut.png", noise)
    path.write_bytes(path.read_bytes()[:200])
    with _raises(path):
        local.load_folder(tmp_path, "train", image_size=4)


def test_load_folder_empty_folder_and_empty_class(tmp_path):
    with _raises(tmp_path, "no images"):
        local.load_folder(tmp_path, "train", image_size=4)
    _save(tmp_path / "full" / "a.png", _grey(1))
    (tmp_path / "empty").mkdir()
    with _raises(tmp_path / "empty", "no images"):
        local.load_folder(tmp_path, "train", image_size=4)


def test_load_folder_bad_arguments(tmp_path):
    with _raises(tmp_path / "absent"):
        local.load_folder(tmp_path / "absent", "train", image_size=4)
    with _raises(tmp_path, "'val'"):
        local.load_folder(tmp_path, "val", image_size=4)
    with pytest.raises(UserError, match="image_size"):
        local.load_folder(tmp_path, "train", image_size=0)


def test_load_folder_16_bit_png_is_scaled_not_clipped(tmp_path):
    _save(tmp_path / "deep.png", np.full((4, 4), 32896, np.uint16))  # 128 * 257
    images, _, _ = local.load_folder(tmp_path, "train", image_size=2)
    assert images.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(images, 128)


# --- real data ---------------------------------------------------------------------------------

def test_real_mnist_test_split():
    if not MNIST_DIR.is_dir():
        pytest.skip(f"real-data test: {MNIST_DIR} not found "
                    "(../shared/data/mnist is only present beside a CI checkout)")
    images, labels = local.load_idx(MNIST_DIR, "test")
    assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.min() == 0 and labels.max() == 9
    counts = np.bincount(labels, minlength=10)
    assert np.all((counts >= 850) & (counts <= 1150)), counts
    assert labels[0] == 7  # the first MNIST test digit is a 7
    assert abs(images.mean() - 33) < 2, images.mean()


def test_unreadable_folders_and_empty_paths_are_user_errors(tmp_path, monkeypatch):
    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    (tmp_path / "cats").mkdir()
    monkeypatch.setattr(local.Path, "iterdir", refuse)
    with pytest.raises(UserError, match="cannot read .*Permission denied"):
        local.load_folder(tmp_path, "train", image_size=8)
    with pytest.raises(UserError, match="no data directory given"):
        local.load_folder("", "train", image_size=8)
    with pytest.raises(UserError, match="no data directory given"):
        local.load_idx("", "train")
