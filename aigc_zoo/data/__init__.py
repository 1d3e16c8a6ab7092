"""Datasets: every source ends in the same pipeline of `{"image", "label"}` batches.

Images come out float32 in [-1, 1], NHWC; labels int32 where the dataset has them. Sources:

- `digits` (default): procedurally rendered digits, built offline by a TFDS builder;
- `shapes`: captioned 32x32 colour images of one or two shapes, built offline likewise;
- TFDS names: `mnist`, `fashion_mnist`, `cifar10`, `celeb_a` (centre-cropped, 64x64);
- `idx:<dir>`: MNIST-format IDX files; `folder:<dir>`: a folder of images;
- `ring8`, `grid25`: 2D Gaussian mixtures for GAN mode-coverage checks (`data.toy`); their
  examples are points (`"image"` is float32 [2] in data coordinates), not images.

Splits are `train` and `test`, with TFDS-style slices (`test[:9000]`, `train[:10%]`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging as absl_logging

from aigc_zoo import network
from aigc_zoo.errors import UserError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset split.

    Args:
        name: the dataset name as given by the user.
        image_shape: (height, width, channels); (2,) for the 2D toy datasets.
        num_classes: number of labels, or None for unlabelled data.
        num_examples: examples in the split that was opened.
    """

    name: str
    image_shape: tuple[int, ...]
    num_classes: int | None
    num_examples: int


# An opener returns the unbatched split ({"image": uint8 HWC, "label": int32}) and its info.
Opener = Callable[[str, str, "str | None", "int | None"], "tuple[tf.data.Dataset, DatasetInfo]"]

_DATASETS: dict[str, tuple[Opener, str]] = {}
_SCHEMES: dict[str, tuple[Opener, str]] = {}

# A download host per TFDS dataset, probed before a download so that a machine with no
# network fails in seconds instead of retrying for minutes.
_TFDS_HOSTS = {
    "mnist": ("storage.googleapis.com", 443),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    "cifar10": ("www.cs.toronto.edu", 443),
    "celeb_a": ("drive.google.com", 443),
}
_CACHE_LIMIT_BYTES = 4 << 30
# The registered datasets with a `caption` feature (`has_captions`).
_CAPTIONED = frozenset({"digits", "shapes"})
_SHUFFLE_BUFFER = 60_000


def register_dataset(name: str, opener: Opener, description: str, *, scheme: bool = False) -> None:
    """Make `name` (or the prefix `name:` when `scheme`) loadable by `load`."""
    table = _SCHEMES if scheme else _DATASETS
    if name in table:
        raise ValueError(f"dataset {name!r} is registered twice")
    table[name] = (opener, description)


def list_datasets() -> dict[str, str]:
    """Dataset names (schemes as `name:<dir>`) with one-line descriptions."""
    names = {name: text for name, (_, text) in _DATASETS.items()}
    names.update({f"{name}:<dir>": text for name, (_, text) in _SCHEMES.items()})
    return names


def open_split(name: str, split: str, *, data_dir: str | None = None,
               image_size: int | None = None) -> tuple[tf.data.Dataset, DatasetInfo]:
    """The unbatched uint8 split of dataset `name`, resized to `image_size` when given."""
    scheme, sep, path = name.partition(":")
    if sep and scheme in _SCHEMES:
        opener = _SCHEMES[scheme][0]
        dataset, info = opener(path, split, data_dir, image_size)
    elif name in _DATASETS:
        dataset, info = _DATASETS[name][0](name, split, data_dir, image_size)
    else:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}")
    if image_size and len(info.image_shape) != 3:
        raise UserError(f"{info.name} holds points, not images; drop --image_size")
    if image_size and info.image_shape[:2] != (image_size, image_size):
        dataset, info = _resize_dataset(dataset, info, image_size)
    return dataset, info


def load(name: str, split: str, *, batch_size: int, training: bool, seed: int = 0,
         data_dir: str | None = None, image_size: int | None = None, task: str = "",
         target: Sequence[str] = ()) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Batches of `{"image": float32 [-1, 1] NHWC, "label": int32}` from a dataset split.

    Args:
        name: a registered name or `scheme:<dir>`.
        split: `train`, `test`, or a slice of one (`test[:9000]`).
        batch_size: examples per batch.
        training: shuffled (seeded), repeated forever and with static batch shapes; otherwise
            one pass in order, keeping the last partial batch.
        seed: the shuffle seed.
        data_dir: where TFDS datasets are (or are built); TFDS' default when None.
        image_size: resize to image_size x image_size when given.
        task: a paired task (`data.paired`, e.g. `sr:4`): batches then hold the task's
            `"source"` beside the `"image"` it was made from.
        target: for the `unpaired` task, the target domain (dataset, train split, eval split)
            (`Knobs.target`); `split` of `name` gives the sources, the target's train split
            (`training`) or eval split the images.
    """
    dataset, info = open_split(name, split, data_dir=data_dir, image_size=image_size)
    opened = None
    if target:
        from aigc_zoo.data import paired
        opened = paired.open_target(target, "train" if training else "eval", info,
                                    data_dir=data_dir)
    return batches(dataset, info, split=split, batch_size=batch_size, training=training,
                   seed=seed, task=task, target=opened), info


def batches(dataset: tf.data.Dataset, info: DatasetInfo, *, split: str, batch_size: int,
            training: bool, seed: int = 0, task: str = "",
            target: tuple[tf.data.Dataset, DatasetInfo] | None = None) -> tf.data.Dataset:
    """The pipeline of `load` on a split already opened with `open_split`.

    For callers that need the split's size before choosing `batch_size`, without opening it
    twice. `target`: the unpaired task's target split, opened (`paired.open_target`).
    """
    if info.num_examples < (batch_size if training else 1):
        raise UserError(f"{info.name} split {split!r} has {info.num_examples} examples, fewer "
                        f"than the batch size {batch_size}")
    from aigc_zoo.data import paired
    pair = None
    if task:  # each example keeps its position, which seeds its source (inpainting masks)
        parsed = paired.parse_task(task)
        paired.source_shape(parsed, info.image_shape)
        paired.check_given(parsed, info, dataset.element_spec)
        if (parsed.kind == "unpaired") != (target is not None):
            raise ValueError("the unpaired task needs a target split, and only it takes one")
        pair = paired.pair_fn(parsed)
        dataset = paired.indexed(dataset)
    dataset = _stream(dataset, info, training=training, seed=seed)
    if target is not None:  # the target domain's own order: its own seed
        dataset = paired.unpaired(dataset, _stream(*target, training=training, seed=seed + 1))
    if pair is not None:  # after the cache: the cache keeps uint8 images, not float pairs
        dataset = dataset.map(pair, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=training)
    dataset = dataset.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return with_fixed_tuning(dataset.prefetch(tf.data.AUTOTUNE))


def _stream(dataset: tf.data.Dataset, info: DatasetInfo, *, training: bool, seed: int
            ) -> tf.data.Dataset:
    """A split cached (when it fits in memory), shuffled and repeated for training."""
    if training:
        # Decoded examples are kept in memory after the first epoch, when they fit.
        if info.num_examples * int(np.prod(info.image_shape)) <= _CACHE_LIMIT_BYTES:
            dataset = dataset.cache()
        dataset = dataset.shuffle(min(info.num_examples, _SHUFFLE_BUFFER), seed=seed,
                                  reshuffle_each_iteration=True).repeat()
    return dataset


def with_fixed_tuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with tf.data's autotuner off (parallelism and prefetch at their defaults).

    With the autotuner on, a third of the `fit` calls on the 2-core CPU ran their whole train
    loop on one core, at half speed (dcgan 78 ms per step instead of 36, ddpm 637 instead of
    about 320), with these pipelines and with an in-memory `Dataset.from_tensors(batch)
    .repeat()` alike; with it off, none did (`experiments/input_autotune.py`). A training run
    is one `fit`, so it was either all fast or all slow. These pipelines need a small fraction
    of a core, so the autotuner has nothing to win here.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _to_float(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    if example["image"].dtype != tf.uint8:
        return example  # points of the toy datasets are float32 already
    return {**example, "image": tf.cast(example["image"], tf.float32) / 127.5 - 1.0}


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """Centre-crop to a square, then area-resize to size x size (uint8 in and out)."""
    shape = tf.shape(image)
    side = tf.minimum(shape[0], shape[1])
    image = tf.image.crop_to_bounding_box(image, (shape[0] - side) // 2, (shape[1] - side) // 2,
                                          side, side)
    resized = tf.image.resize(image, [size, size], method="area", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


# -- arrays (IDX files, image folders) -------------------------------------------------------

_SLICE = re.compile(r"^(\w+)(?:\[(-?\d*)(%?):(-?\d*)(%?)\])?$")


def parse_split(split: str) -> tuple[str, Callable[[int], slice]]:
    """`"test[:90%]"` -> ("test", a function of the split's length giving the slice)."""
    match = _SLICE.match(split.strip())
    if not match:
        raise UserError(f"bad split {split!r}: expected e.g. train, test, test[:9000], train[:10%]")
    base, start, start_pct, stop, stop_pct = match.groups()

    def bound(text: str, percent: str, length: int) -> int | None:
        if not text:
            return None
        return int(text) * length // 100 if percent else int(text)

    return base, lambda n: slice(bound(start, start_pct, n), bound(stop, stop_pct, n))


def from_arrays(name: str, images: np.ndarray, labels: np.ndarray | None,
                num_classes: int | None, split: str) -> tuple[tf.data.Dataset, DatasetInfo]:
    """An opener result for in-memory uint8 images [N, H, W, C] and int labels [N] (or None)."""
    _, make_slice = parse_split(split)
    cut = make_slice(len(images))
    images = images[cut]
    tensors = {"image": images}
    if labels is not None:
        tensors["label"] = labels[cut].astype(np.int32)
    if len(images) == 0:
        raise UserError(f"{name} split {split!r} is empty")
    info = DatasetInfo(name, tuple(images.shape[1:]), num_classes, len(images))
    return tf.data.Dataset.from_tensor_slices(tensors), info


def _open_idx(path: str, split: str, data_dir: str | None, image_size: int | None):
    from aigc_zoo.data import local
    base, _ = parse_split(split)
    images, labels = local.load_idx(path, base)
    num_classes = None if labels is None else int(labels.max()) + 1
    return from_arrays(f"idx:{path}", images, labels, num_classes, split)


def _open_folder(path: str, split: str, data_dir: str | None, image_size: int | None):
    from aigc_zoo.data import local
    base, _ = parse_split(split)
    images, labels, class_names = local.load_folder(path, base, image_size=image_size or 64)
    num_classes = None if class_names is None else len(class_names)
    return from_arrays(f"folder:{path}", images, labels, num_classes, split)


def _open_pairs(path: str, split: str, data_dir: str | None, image_size: int | None):
    from aigc_zoo.data import local
    base, make_slice = parse_split(split)
    sources, images = local.load_paired_folder(path, base, image_size=image_size or 64)
    cut = make_slice(len(images))
    if len(images[cut]) == 0:
        raise UserError(f"pairs:{path} split {split!r} is empty")
    info = DatasetInfo(f"pairs:{path}", tuple(images.shape[1:]), None, len(images[cut]))
    return tf.data.Dataset.from_tensor_slices({"image": images[cut],
                                               "source": sources[cut]}), info


def open_captioned(name: str, split: str, *, data_dir: str | None = None,
                   image_size: int | None = None) -> tuple[tf.data.Dataset, DatasetInfo]:
    """`open_split` with each example's `"caption"` (a string tensor) kept.

    Captioned sources: `digits`, `shapes`, and `folder:<dir>` with captions (`local.
    load_folder_captions`). The caption stays out of `open_split`, so the models and metrics
    that do not read text never see string tensors.
    """
    scheme, sep, path = name.partition(":")
    if sep and scheme == "folder":
        from aigc_zoo.data import local
        base, make_slice = parse_split(split)
        texts = np.array(local.load_folder_captions(path, base))
        dataset, info = _open_folder(path, split, data_dir, image_size)
        captions = tf.data.Dataset.from_tensor_slices(texts[make_slice(len(texts))])
        dataset = tf.data.Dataset.zip((dataset, captions)).map(
            lambda example, text: {**example, "caption": text})
    elif not sep and _DATASETS.get(name, (None,))[0] is _open_tfds:
        dataset, info = _open_tfds(name, split, data_dir, image_size, keep=("caption",))
    else:
        raise UserError(f"dataset {name!r} has no captions; captioned datasets: digits, "
                        "shapes, folder:<dir> with captions")
    if image_size and info.image_shape[:2] != (image_size, image_size):
        dataset, info = _resize_dataset(dataset, info, image_size)
    return dataset, info


def open_with_features(name: str, split: str, features: Sequence[str], *,
                       data_dir: str | None = None) -> tuple[tf.data.Dataset, DatasetInfo]:
    """`open_split` of a TFDS dataset (`digits`, `shapes`, ...) at native size, with each
    example's named `features` kept (the attributes it was rendered with, its caption)."""
    if _DATASETS.get(name, (None,))[0] is not _open_tfds:
        raise UserError(f"dataset {name!r} is not a TFDS dataset; its features cannot be read")
    return _open_tfds(name, split, data_dir, None, keep=tuple(features))


def has_captions(name: str, split: str = "train") -> bool:
    """Whether dataset `name` has captions, without reading it: `digits` and `shapes`, and a
    `folder:<dir>` whose split holds a `captions.jsonl` or any `.txt` file (`open_captioned`
    then checks every image has one). The runner makes text models text-conditional on them."""
    scheme, sep, path = name.partition(":")
    if sep and scheme == "folder":
        from aigc_zoo.data import local
        base = parse_split(split)[0]
        try:
            root = local._split_dir(local._existing_dir(path, base), base)
        except UserError:
            return False  # opening the split reports it
        return (root / local.CAPTIONS_FILE).is_file() or any(root.rglob("*.txt"))
    return not sep and name in _CAPTIONED


def without_phrases(dataset: tf.data.Dataset, info: DatasetInfo, captions: list[str],
                    phrases: tuple[str, ...]) -> tuple[tf.data.Dataset, DatasetInfo]:
    """The examples of an `open_captioned` split whose caption holds none of `phrases`
    (`text.holds_phrase`; `captions` are the split's, in order, to count what is kept), and
    the info of what is kept. A phrase that no caption holds is a `UserError` (a typo would
    otherwise hold nothing out)."""
    from aigc_zoo import text
    if not phrases:
        return dataset, info
    for phrase in phrases:
        if not any(text.holds_phrase(caption, [phrase]) for caption in captions):
            raise UserError(f"held_out_combinations: no {info.name} training caption "
                            f"holds {phrase!r} (as whole words); check its spelling")
    kept = sum(not text.holds_phrase(caption, phrases) for caption in captions)
    dataset = dataset.filter(lambda example: tf.logical_not(
        text.GraphTokenizer.holds_phrase(example["caption"], phrases)))
    return dataset, dataclasses.replace(info, num_examples=kept)


def with_tokens(dataset: tf.data.Dataset, tokenizer: Callable[[tf.Tensor], tf.Tensor]
                ) -> tf.data.Dataset:
    """The examples of an `open_captioned` split with the caption replaced by its `"tokens"`
    (int32 [max_length], by a `text.GraphTokenizer`): a text model's training split, which
    `batches` then batches like any other (no string tensor reaches a train step)."""
    def tokens(example):
        kept = {key: value for key, value in example.items() if key != "caption"}
        return {**kept, "tokens": tokenizer(example["caption"][None])[0]}

    return dataset.map(tokens, num_parallel_calls=tf.data.AUTOTUNE)


def first_captions(name: str, split: str, count: int, *, data_dir: str | None = None,
                   keep: Callable[[str], bool] = lambda caption: True) -> list[str]:
    """The first `count` distinct captions of a split that `keep` accepts, in order (fewer
    when the split has fewer): the default prompts of a text model's pictures."""
    dataset, _ = open_captioned(name, split, data_dir=data_dir)
    found: list[str] = []
    for batch in dataset.map(lambda example: example["caption"]).batch(256).as_numpy_iterator():
        for caption in (text.decode("utf-8") for text in batch):
            if caption not in found and keep(caption):
                found.append(caption)
                if len(found) == count:
                    return found
    return found


def captions(name: str, split: str, *, data_dir: str | None = None) -> list[str]:
    """Every caption of a split, in order (to build a tokenizer's vocabulary from)."""
    dataset, _ = open_captioned(name, split, data_dir=data_dir)
    texts = dataset.map(lambda example: example["caption"]).batch(4096)
    return [text.decode("utf-8") for batch in texts.as_numpy_iterator() for text in batch]


# -- TFDS ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _absl_errors_only():
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(verbosity)


def _embedded_builder(name: str, data_dir: str | None):
    """The TFDS builder of an embedded (rendered offline) dataset, or None."""
    if name == "digits":
        from aigc_zoo.data import digits
        return digits.Digits(data_dir=data_dir)
    if name == "shapes":
        from aigc_zoo.data import shapes
        return shapes.Shapes(data_dir=data_dir)
    return None


def _open_tfds(name: str, split: str, data_dir: str | None, image_size: int | None, *,
               keep: tuple[str, ...] = ()):
    """A TFDS split's `image` and `label`, and the features named in `keep`."""
    import tensorflow_datasets as tfds

    with _absl_errors_only():  # TFDS warns that an unprepared folder has no dataset_info.json
        builder = (_embedded_builder(name, data_dir)
                   or tfds.builder(name, data_dir=data_dir))
        prepared = builder.is_prepared()
    if not prepared:
        if name in _TFDS_HOSTS:
            host, port = _TFDS_HOSTS[name]
            network.require_connection(host, port, message=(
                f"dataset {name!r} is not prepared under {data_dir or '~/tensorflow_datasets'} "
                f"and cannot be downloaded (no connection to {host}); prepare it on a connected "
                "machine and pass its folder with --data_dir, or train on the embedded dataset "
                "with --dataset=digits"))
        try:
            builder.download_and_prepare()
        except OSError as error:
            where = error.filename or data_dir or "~/tensorflow_datasets"
            raise UserError(f"cannot prepare {name} in {where}: {error.strerror or error}; "
                            "pass a writable folder with --data_dir") from None
    parse_split(split)  # the same split syntax for every source
    try:
        # `load` caches training data itself; TFDS' own auto-cache would warn on partial reads.
        dataset = builder.as_dataset(split=split, shuffle_files=False,
                                     read_config=tfds.ReadConfig(try_autocache=False))
    except (ValueError, KeyError) as error:
        raise UserError(f"{name}: bad split {split!r}: {str(error).splitlines()[0]}") from None
    num_examples = int(dataset.cardinality())  # TFDS knows it, slices included
    features = builder.info.features
    num_classes = features["label"].num_classes if "label" in features else None
    keep_label = num_classes is not None
    missing = [feature for feature in keep if feature not in features]
    if missing:
        raise UserError(f"dataset {name!r} has no {missing[0]!r}; captioned datasets: "
                        "digits, shapes, folder:<dir> with captions")

    def select(example):
        selected = {"image": example["image"], **{k: example[k] for k in keep}}
        if keep_label:
            selected["label"] = tf.cast(example["label"], tf.int32)
        return selected

    dataset = dataset.map(select, num_parallel_calls=tf.data.AUTOTUNE)
    info = DatasetInfo(name, tuple(features["image"].shape), num_classes, num_examples)
    if name == "celeb_a" and not image_size:
        dataset, info = _resize_dataset(dataset, info, 64)
    return dataset, info


def _resize_dataset(dataset: tf.data.Dataset, info: DatasetInfo, size: int):
    dataset = dataset.map(lambda ex: {**ex, "image": _resize(ex["image"], size)},
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset, dataclasses.replace(info, image_shape=(size, size, info.image_shape[-1]))


for _name, _text in [
    ("digits", "28x28x1, 10 classes: digits rendered from matplotlib's fonts, built offline"),
    ("shapes", "32x32x3, 4 classes: one or two captioned coloured shapes, built offline"),
    ("mnist", "28x28x1, 10 classes (TFDS; downloads once)"),
    ("fashion_mnist", "28x28x1, 10 classes (TFDS; downloads once)"),
    ("cifar10", "32x32x3, 10 classes (TFDS; downloads once)"),
    ("celeb_a", "64x64x3 centre-cropped faces, no labels (TFDS; needs a manual download)"),
]:
    register_dataset(_name, _open_tfds, _text)


def _open_toy(name: str, split: str, data_dir: str | None, image_size: int | None):
    from aigc_zoo.data import toy
    base, _ = parse_split(split)
    points, labels = toy.split_arrays(name, base)
    return from_arrays(name, points, labels, toy.MIXTURES[name].num_modes, split)


register_dataset("ring8", _open_toy, "2D points: 8 Gaussians on a circle (GAN mode coverage)")
register_dataset("grid25", _open_toy, "2D points: 5x5 grid of Gaussians (GAN mode coverage)")
register_dataset("idx", _open_idx, "MNIST-format IDX files (train-/t10k- prefixes, .gz or raw)",
                 scheme=True)
register_dataset("pairs", _open_pairs, "a folder of image pairs, source/ and target/ with "
                 "matching file names (in train/ and test/ for two splits), resized to "
                 "--image_size; train with --task=pairs", scheme=True)
register_dataset("folder", _open_folder, "a folder of images, one sub-folder per class "
                 "(optional), resized to --image_size", scheme=True)
