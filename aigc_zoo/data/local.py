"""Readers for datasets kept as local files: MNIST-style IDX files and folders of images.

    images, labels = local.load_idx("~/mnist", "train")        # (N, 28, 28, 1) uint8, (N,) int32
    images, labels, class_names = local.load_folder("pets/", "train", image_size=64)
    captions = local.load_folder_captions("pets/", "train")   # sidecar or per-image .txt

Everything returns numpy arrays (uint8 images in NHWC, int32 labels or None); turning them into
a tf.data pipeline is the caller's job. Every user mistake (missing directory, wrong file,
corrupt data) raises `UserError` with one line naming the path. IDX format:
http://yann.lecun.com/exdb/mnist/ (LeCun, Cortes and Burges).
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import numbers
import os
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps

from aigc_zoo.errors import UserError

# IDX type byte -> big-endian numpy dtype (the full table of the format, not only MNIST's uint8).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# Split name -> IDX file prefixes; the keys are also the sub-folder names of an image folder.
_SPLITS = {"train": ("train",), "test": ("t10k", "test")}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


def _readable_errors(function: Callable) -> Callable:
    """Turn OS errors met while reading a data folder (permissions, races) into `UserError`s."""
    @functools.wraps(function)
    def wrapper(directory, *args, **kwargs):
        try:
            return function(directory, *args, **kwargs)
        except OSError as error:
            where = error.filename or directory
            raise UserError(f"cannot read {where}: {error.strerror or error}") from None
    return wrapper


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file, raw or gzipped, into a writeable array of its declared type and shape.

    Gzip is recognised by its content rather than the `.gz` name, so a misnamed file still reads.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0:2] != b"\0\0":
        raise UserError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    type_byte, ndim = data[2], data[3]
    if type_byte not in _IDX_DTYPES:
        raise UserError(f"{path}: unsupported IDX type byte 0x{type_byte:02x}; "
                        f"expected one of {', '.join(f'0x{t:02x}' for t in _IDX_DTYPES)}")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise UserError(f"{path}: truncated IDX header ({len(data)} bytes, need {offset})")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[type_byte])
    expected = offset + math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise UserError(f"{path}: IDX file {what}: header says shape {shape} "
                        f"({expected} bytes), found {len(data)} bytes")
    # astype copies, which also makes the result writeable (frombuffer over bytes is read-only).
    array = np.frombuffer(data, dtype, offset=offset).astype(dtype.newbyteorder("="))
    return array.reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes `array` as an IDX file, gzipped when `path` ends in `.gz` (inverse of `read_idx`)."""
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise UserError(f"{path}: IDX cannot store {array.dtype}; convert the array to one of "
                        f"{', '.join(str(d) for d in codes)}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + array.astype(_IDX_DTYPES[code]).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


@_readable_errors
def load_idx(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Loads one split of an MNIST-style dataset stored as IDX files in `directory`.

    Looks for `{prefix}-images-idx3-ubyte` and `{prefix}-labels-idx1-ubyte` (also with `.gz`, and
    with `.` for the second `-` as Kaggle's copies have), prefix `train` for split "train" and
    `t10k` or `test` for split "test".

    Returns:
      images: uint8 (N, H, W, 1); labels: int32 (N,), or None when there is no label file.
    """
    directory = _existing_dir(directory, split)
    prefixes = _SPLITS[split]
    found = _find_idx(directory, prefixes, "images", "idx3")
    if found is None:
        names = _idx_names(prefixes, "images", "idx3")
        raise UserError(f"no image file for split {split!r} in {directory}; "
                        f"looked for: {', '.join(names)}")
    prefix, image_path = found
    images = read_idx(image_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(f"{image_path}: expected uint8 images of shape (N, H, W), "
                        f"got {images.dtype} {images.shape}")
    found = _find_idx(directory, (prefix,), "labels", "idx1")
    if found is None:
        return images[..., np.newaxis], None
    labels = read_idx(found[1])
    if labels.ndim != 1 or len(labels) != len(images):
        raise UserError(f"{found[1]}: labels of shape {labels.shape} do not match the "
                        f"{len(images)} images in {image_path}")
    return images[..., np.newaxis], labels.astype(np.int32)


@_readable_errors
def load_folder(directory: str | os.PathLike, split: str, *,
                image_size: int) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None]:
    """Loads a folder of images (png, jpg, bmp, gif first frame), centre-cropped and resized.

    Layout: `directory/{train,test}/...` selects the split's sub-folder; otherwise the whole
    folder is the "train" split. Inside, each sub-folder is a class (sorted names give labels
    0..K-1); images lying directly inside are unlabelled.

    Returns:
      images: uint8 (N, S, S, C) with S = `image_size`; C = 1 when every file decodes as
        greyscale, else 3 (grey images repeated to RGB, alpha dropped);
      labels: int32 (N,), and class_names: the sorted sub-folder names; both None when unlabelled.
    """
    directory = _existing_dir(directory, split)
    if not isinstance(image_size, numbers.Integral) or image_size < 1:
        raise UserError(f"image_size must be a positive integer, got {image_size!r}")
    image_size = int(image_size)
    root = _split_dir(directory, split)
    class_dirs = _visible(root, Path.is_dir)
    loose = image_files(root)
    if class_dirs and loose:
        raise UserError(f"{root} holds both images and sub-folders; put every image in a "
                        "class sub-folder, or none of them")
    groups = [(d, image_files(d)) for d in class_dirs] or [(root, loose)]
    for folder, files in groups:
        if not files:
            raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    decoded = [read_image(f, image_size) for _, files in groups for f in files]
    if all(image.shape[-1] == 1 for image in decoded):
        images = np.stack(decoded)
    else:  # one colour image makes the whole set RGB; grey ones get their channel repeated
        images = np.stack([np.broadcast_to(im, im.shape[:2] + (3,)) for im in decoded])
    if not class_dirs:
        return images, None, None
    labels = np.repeat(np.arange(len(groups), dtype=np.int32), [len(f) for _, f in groups])
    return images, labels, tuple(d.name for d in class_dirs)


@_readable_errors
def load_paired_folder(directory: str | os.PathLike, split: str, *,
                       image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Loads a folder of image pairs: `source/` and `target/` holding files of the same names
    (the suffix may differ: `a.jpg` pairs with `a.png`), in `directory/{train,test}/` for two
    splits or in `directory` itself for the "train" split alone.

    Both sides are read as `load_folder` reads images (centre square, resized to
    `image_size`) and share one channel count: 1 when every file of both is grey, else 3.

    Returns:
      sources, targets: uint8 (N, S, S, C), in the order of the file names.
    Raises:
      UserError: a missing side, a name without its pair, two files of one name, a file that
        does not decode (each named in one line).
    """
    directory = _existing_dir(directory, split)
    if not isinstance(image_size, numbers.Integral) or image_size < 1:
        raise UserError(f"image_size must be a positive integer, got {image_size!r}")
    root = _split_dir(directory, split)
    for side in ("source", "target"):
        if not (root / side).is_dir():
            raise UserError(f"{root} has no {side}/ sub-folder: a paired folder holds source/ "
                            "and target/ with matching file names")
    sides = {}
    for side in ("source", "target"):
        folder = root / side
        files = image_files(folder)
        if not files:
            raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
        by_name: dict[str, Path] = {}
        for path in files:
            if path.stem in by_name:
                raise UserError(f"{by_name[path.stem]} and {path} have the same name: one "
                                "pair per name")
            by_name[path.stem] = path
        sides[side] = by_name
    unmatched = sorted(set(sides["source"]) ^ set(sides["target"]))
    if unmatched:
        where = [("target" if name in sides["source"] else "source") for name in unmatched]
        shown = ", ".join(f"{name} (no {side}/ file)" for name, side in
                          zip(unmatched[:5], where))
        raise UserError(f"{root}: {len(unmatched)} file name(s) without a pair: {shown}"
                        f"{', ...' if len(unmatched) > 5 else ''}")
    names = sorted(sides["source"])
    decoded = {side: [read_image(sides[side][name], image_size) for name in names]
               for side in sides}
    colour = any(image.shape[-1] == 3 for images in decoded.values() for image in images)
    channels = 3 if colour else 1
    stacked = [np.stack([np.broadcast_to(image, image.shape[:2] + (channels,))
                         for image in decoded[side]]) for side in ("source", "target")]
    return stacked[0], stacked[1]


CAPTIONS_FILE = "captions.jsonl"


@_readable_errors
def load_folder_captions(directory: str | os.PathLike, split: str) -> list[str]:
    """The caption of every image `load_folder` returns, in its order.

    Either a sidecar `captions.jsonl` in the split's folder, one JSON object a line,
    `{"file": "<path relative to that folder, / separated>", "caption": "..."}`, or else a
    `.txt` file beside each image with the image's name (`cat.png` -> `cat.txt`). Every image
    needs a non-empty caption; a missing one is an error naming the image.
    """
    directory = _existing_dir(directory, split)
    root = _split_dir(directory, split)
    files = [f for d in _visible(root, Path.is_dir) for f in image_files(d)]
    files = files or image_files(root)
    sidecar = root / CAPTIONS_FILE
    if sidecar.is_file():
        table = _read_caption_lines(sidecar)
        texts = [table.get(f.relative_to(root).as_posix()) for f in files]
        where = [f"{sidecar} has no caption for {f.relative_to(root).as_posix()}" for f in files]
    else:
        texts = [f.with_suffix(".txt").read_text(encoding="utf-8")
                 if f.with_suffix(".txt").is_file() else None for f in files]
        where = [f"no caption for {f}: expected {f.with_suffix('.txt')} or {sidecar}"
                 for f in files]
    for text, problem in zip(texts, where):
        if text is None or not text.strip():
            raise UserError(problem if text is None else problem.replace("no", "an empty", 1))
    return [text.strip() for text in texts]


def _read_caption_lines(path: Path) -> dict[str, str]:
    """`file` -> `caption` of a captions.jsonl file; a UserError naming a bad line."""
    table = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("caption"), str)):
            raise UserError(f"{path}:{number}: expected a JSON object with string fields "
                            '"file" and "caption"')
        table[entry["file"]] = entry["caption"]
    return table


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data  # gzip's magic
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as error:  # a directory, no permission, corrupt gzip
        raise UserError(f"{path}: cannot read ({error})") from None


def _existing_dir(directory: str | os.PathLike, split: str) -> Path:
    if not os.fspath(directory).strip():
        raise UserError("no data directory given: write e.g. idx:/path/to/mnist or "
                        "folder:/path/to/images")
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise UserError(f"data directory {path} does not exist or is not a directory")
    if split not in _SPLITS:
        raise UserError(f"unknown split {split!r} for data in {path}; "
                        f"choose one of: {', '.join(_SPLITS)}")
    return path


def _idx_names(prefixes: tuple[str, ...], kind: str, idx: str) -> list[str]:
    # "train-images-idx3-ubyte" as LeCun names it, "train-images.idx3-ubyte" as Kaggle does.
    return [f"{p}-{kind}{sep}{idx}-ubyte{gz}"
            for p in prefixes for sep in ("-", ".") for gz in ("", ".gz")]


def _find_idx(directory: Path, prefixes: tuple[str, ...], kind: str,
              idx: str) -> tuple[str, Path] | None:
    for name in _idx_names(prefixes, kind, idx):
        if (directory / name).is_file():
            return name.split("-", 1)[0], directory / name
    return None


def _split_dir(directory: Path, split: str) -> Path:
    # Either split folder marks the split layout, so a lone train/ is never mistaken for a class.
    if any((directory / name).is_dir() for name in _SPLITS):
        if not (directory / split).is_dir():
            raise UserError(f"{directory} has no {split}/ sub-folder for split {split!r}")
        return directory / split
    if split != "train":
        raise UserError(f"{directory} has no train/ and test/ sub-folders, so it only holds the "
                        f"'train' split; to use {split!r}, put the images in train/ and {split}/")
    return directory


def _visible(folder: Path, keep: Callable[[Path], bool]) -> list[Path]:
    # Hidden entries (.DS_Store, .ipynb_checkpoints) are tool clutter, not data.
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and keep(p))


def image_files(folder: Path) -> list[Path]:
    """The image files (by suffix, `IMAGE_SUFFIXES`) directly inside `folder`, hidden ones left
    out, in name order."""
    return _visible(folder, lambda p: p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: str | os.PathLike, image_size: int | None = None, *,
               keep_alpha: bool = False) -> np.ndarray:
    """One file -> uint8 (S, S, C): EXIF-rotated, centre square, antialiased resize to
    `image_size` (None: the centre square at its own size). C is 1 for grey files, else 3;
    with `keep_alpha`, a file with transparency gets its alpha as one more channel (C = 2 or 4).

    Raises:
        UserError: the file cannot be decoded as an image.
    """
    try:
        with Image.open(path) as image:  # a GIF opens on its first frame
            image = ImageOps.exif_transpose(image)
            alpha = keep_alpha and ("A" in image.getbands() or "transparency" in image.info)
            if image.mode.startswith("I"):  # 16-bit grey: PIL's convert("L") would clip at 255
                image = Image.fromarray(np.round(np.asarray(image) / 257).astype(np.uint8))
            # Palette images (most GIFs) count as colour, as tf.io.decode_image treats them.
            grey = image.mode in ("1", "L", "LA")
            image = image.convert(("LA" if grey else "RGBA") if alpha else ("L" if grey else "RGB"))
            width, height = image.size
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            # Crop before resizing: resize(box=...) lets the filter read pixels outside the box.
            image = image.crop((left, top, left + side, top + side))
            if image_size is not None:
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.asarray(image, np.uint8)
    # PIL signals a corrupt file with any of these, depending on the format plugin.
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError) as error:
        raise UserError(f"cannot decode image {path}: {error}") from None
    return array[..., np.newaxis] if array.ndim == 2 else array
