"""Paired tasks: any image dataset as pairs `{"source", "image"}` for image-to-image models.

The `image` is the dataset's image (the target); the `source` is made from it inside the tf.data
pipeline, the same for the same example every time (its randomness is seeded by the example's
position in the split and `PAIR_SEED` only):

| task           | source                                                  | source shape    |
|----------------|---------------------------------------------------------|-----------------|
| `sr:F` (`sr`)  | the image averaged over FxF blocks (an anti-aliasing    | (H/F, W/F, C)   |
|                | box filter, then every F-th pixel); `sr` means `sr:4`   |                 |
| `inpaint`      | the image with random rectangles and strokes (27-48% of | (H, W, C + 1)   |
|                | the pixels) set to 0, then the mask (1 in the holes)    |                 |
| `edges`        | the Sobel gradient magnitude of the channel mean, x/2   | (H, W, 1)       |
|                | clipped to [0, 1], in [-1, 1]                           |                 |
| `pairs`        | the dataset's own source (a paired folder, `pairs:<dir>`| (H, W, C)       |
|                | of `source/` and `target/`), at the target's shape      |                 |
| `unpaired`     | an image of the run's dataset; the `image` is one of a  | (H, W, C)       |
|                | second dataset (`open_target`), not its pair (cyclegan) |                 |

    task = paired.parse_task("sr:4")
    paired.source_shape(task, (28, 28, 1))          # (7, 7, 1)
    pairs = paired.batch_pairs(images, task)        # {"source", "image"} of a batch

Sources are float32 in [-1, 1] like the images. `aigc_zoo.data.batches(..., task=...)` is the
pipeline that makes them; a model trained on a task says so in its `Knobs.task`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from aigc_zoo.errors import UserError

TASKS = ("sr:4", "sr:2", "sr", "inpaint", "edges", "pairs")
# Sources given by the data rather than made from the image: a paired folder's (`pairs`), or
# a second dataset's images (`unpaired`, which only cyclegan trains on: it needs no pairs).
GIVEN = ("pairs", "unpaired")
# The masks' seed: a constant, so that every run and every model sees the same holes for the
# same example (evaluations of different models compare like with like).
PAIR_SEED = 18
# The range a mask's share of hole pixels is drawn from (uniformly), inside 25-50%.
MASK_COVERAGE = (0.27, 0.48)
_RECTANGLES = 3
_STROKES = 2
_SR = re.compile(r"^sr(?::(\d+))?$")


@dataclasses.dataclass(frozen=True)
class Task:
    """A parsed paired task: `kind` is sr, inpaint or edges; `factor` the SR scale (1 else)."""

    kind: str
    factor: int = 1

    @property
    def name(self) -> str:
        return f"sr:{self.factor}" if self.kind == "sr" else self.kind


def parse_task(text: str) -> Task:
    """`"sr:4"` -> Task("sr", 4); a `UserError` naming the choices for anything else."""
    match = _SR.match(text.strip())
    if match:
        factor = int(match.group(1) or 4)
        if factor < 2:
            raise UserError(f"bad value task={text!r}: the SR factor must be >= 2")
        return Task("sr", factor)
    if text.strip() in ("inpaint", "edges", *GIVEN):
        return Task(text.strip())
    raise UserError(f"bad value task={text!r}: expected one of {', '.join(TASKS)} "
                    "(sr:F for another integer factor F)")


def source_shape(task: Task, image_shape: Sequence[int]) -> tuple[int, int, int]:
    """The shape of the task's source for images of `image_shape` (H, W, C)."""
    if len(image_shape) != 3:
        raise UserError(f"paired tasks need images, not data of shape {tuple(image_shape)}")
    height, width, channels = (int(d) for d in image_shape)
    if task.kind == "sr":
        if height % task.factor or width % task.factor:
            raise UserError(f"task {task.name}: {height}x{width} images do not divide by "
                            f"{task.factor}; pick --image_size as a multiple of it")
        return height // task.factor, width // task.factor, channels
    if task.kind == "inpaint":
        return height, width, channels + 1
    if task.kind in GIVEN:  # read at the target's size and channels (`open_target`, `local`)
        return height, width, channels
    return height, width, 1


def downsample(images: tf.Tensor, factor: int) -> tf.Tensor:
    """Means of the FxF blocks of images [B, H, W, C]: box-filter anti-aliasing, then every
    F-th pixel (exactly `tf.image.resize(..., "area")` for a whole factor)."""
    return tf.nn.avg_pool2d(images, factor, factor, "VALID")


@functools.lru_cache(maxsize=None)
def _bicubic_weights(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in]: `tf.image.resize`'s bicubic interpolation along one axis, as a
    matrix (the resize of each unit impulse; the resize is linear and separable)."""
    impulses = np.eye(size_in, dtype=np.float32)[:, :, None, None]  # size_in images, size_in x 1
    with tf.init_scope():  # eager, also when called while a function is traced
        resized = tf.image.resize(impulses, (size_out, 1), method="bicubic").numpy()
    return resized[:, :, 0, 0].T


def upsample(sources: tf.Tensor, image_shape: Sequence[int]) -> tf.Tensor:
    """Bicubic upsampling of SR sources [B, h, w, C] to the image size, clipped to [-1, 1]:
    the SR baseline, and the input of networks that work at the target's size.

    `tf.image.resize(..., "bicubic")` up to float rounding, written as two products with its
    interpolation matrices because XLA has no bicubic resize: with it, sr3 could not train or
    sample with `jit_compile` (the default on a GPU). float32 whatever the sources' dtype, as
    `tf.image.resize` returns."""
    sources = tf.cast(sources, tf.float32)
    rows = _bicubic_weights(int(sources.shape[1]), int(image_shape[0]))
    columns = _bicubic_weights(int(sources.shape[2]), int(image_shape[1]))
    resized = tf.einsum("ip,bpqc,jq->bijc", rows, sources, columns)
    return tf.clip_by_value(resized, -1.0, 1.0)


def edges(images: tf.Tensor) -> tf.Tensor:
    """Edge maps [B, H, W, 1] in [-1, 1] of images [B, H, W, C] in [-1, 1]."""
    grey = (tf.reduce_mean(images, axis=-1, keepdims=True) + 1.0) / 2.0
    sobel = tf.image.sobel_edges(grey)  # [B, H, W, 1, 2]: dy, dx
    magnitude = tf.sqrt(tf.reduce_sum(tf.square(sobel), axis=-1))
    return tf.clip_by_value(magnitude / 2.0, 0.0, 1.0) * 2.0 - 1.0


def random_mask(height: int, width: int, seed: tf.Tensor) -> tf.Tensor:
    """A float32 [H, W] mask (1: hole) of rectangles and strokes covering 27-48% of the pixels.

    Coverage is exact by construction: every pixel gets a priority (the rectangles' and strokes'
    pixels first, shape by shape, each shape from its centre line outwards, then the rest by
    distance to a random point) and the holes are exactly the `round(u * H * W)` pixels of
    highest priority (`top_k` indices, so ties cannot add pixels), for a coverage u drawn
    uniformly from `MASK_COVERAGE`, [0.27, 0.48); so the last shape may be cut short, never
    overshoot.
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    coverage = tf.random.stateless_uniform([], seeds[0], *MASK_COVERAGE)
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32),
                         indexing="ij")
    size = tf.constant([height, width], tf.float32)
    # Rectangles: centre, half sizes from a tenth to a third of each side.
    centres = tf.random.stateless_uniform([_RECTANGLES, 2], seeds[1]) * size
    halves = tf.random.stateless_uniform([_RECTANGLES, 2], seeds[2], 0.1, 0.33) * size
    # Strokes: segments between two random points, 2-3 pixels thick (scaled for larger images).
    ends = tf.random.stateless_uniform([_STROKES, 4], seeds[3]) * tf.tile(size, [2])
    scale = tf.cast(tf.minimum(height, width), tf.float32) / 28.0
    thickness = 1.5 * scale
    priority = -tf.sqrt(tf.square(ys - centres[0, 0]) + tf.square(xs - centres[0, 1]))
    priority = priority / (tf.reduce_max(tf.abs(priority)) + 1.0) - 1.0  # in (-2, -1]: the rest
    rank = float(_RECTANGLES + _STROKES)
    for i in range(_RECTANGLES):
        dy = tf.abs(ys - centres[i, 0]) / halves[i, 0]
        dx = tf.abs(xs - centres[i, 1]) / halves[i, 1]
        distance = tf.maximum(dy, dx)
        inside = distance <= 1.0
        priority = tf.maximum(priority, tf.where(inside, rank - 0.5 * distance, -2.0))
        rank -= 1.0
    for i in range(_STROKES):
        distance = _segment_distance(ys, xs, ends[i]) / thickness
        inside = distance <= 1.0
        priority = tf.maximum(priority, tf.where(inside, rank - 0.5 * distance, -2.0))
        rank -= 1.0
    # A tiny seeded jitter spreads ties (pixels at equal distances) at random rather than in
    # scan order; the count is exact either way, as the holes are top_k's indices.
    priority += tf.random.stateless_uniform([height, width], seeds[0] + 1, 0.0, 1e-4)
    count = tf.cast(tf.round(coverage * float(height * width)), tf.int32)
    holes = tf.math.top_k(tf.reshape(priority, [-1]), k=count).indices
    mask = tf.scatter_nd(holes[:, None], tf.ones_like(holes, tf.float32), [height * width])
    return tf.reshape(mask, [height, width])


def _segment_distance(ys: tf.Tensor, xs: tf.Tensor, segment: tf.Tensor) -> tf.Tensor:
    """Distance of each pixel to the segment (y0, x0, y1, x1)."""
    y0, x0, y1, x1 = tf.unstack(segment)
    dy, dx = y1 - y0, x1 - x0
    length2 = tf.maximum(dy * dy + dx * dx, 1e-6)
    t = tf.clip_by_value(((ys - y0) * dy + (xs - x0) * dx) / length2, 0.0, 1.0)
    return tf.sqrt(tf.square(ys - (y0 + t * dy)) + tf.square(xs - (x0 + t * dx)))


def masked(images: tf.Tensor, masks: tf.Tensor) -> tf.Tensor:
    """Inpainting sources: images [B, H, W, C] with the holes of masks [B, H, W] set to 0, and
    the mask as a last channel."""
    masks = masks[..., None]
    return tf.concat([images * (1.0 - masks), masks], axis=-1)


def make_source(task: Task, image: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """The source of one image [H, W, C] in [-1, 1], example `index` of its split (for the
    tasks whose source the data gives, `GIVEN`, the pipeline reads it from the example)."""
    if task.kind in GIVEN:
        raise ValueError(f"task {task.name}: the data gives the source, it is not made")
    batch = image[None]
    if task.kind == "sr":
        return downsample(batch, task.factor)[0]
    if task.kind == "edges":
        return edges(batch)[0]
    seed = tf.stack([tf.constant(PAIR_SEED, tf.int64), tf.cast(index, tf.int64)])
    return masked(batch, random_mask(image.shape[0], image.shape[1], seed)[None])[0]


def batch_pairs(images: tf.Tensor | np.ndarray, task: Task | str, *,
                first_index: int = 0) -> dict[str, tf.Tensor]:
    """`{"source", "image"}` of a batch of images in [-1, 1], as examples `first_index`,
    `first_index + 1`, ... of a split (for tests and made-up batches)."""
    task = parse_task(task) if isinstance(task, str) else task
    images = tf.convert_to_tensor(images, tf.float32)
    if task.kind in GIVEN:  # made-up sources: the batch in reverse order, unpaired by design
        return {"source": images[::-1], "image": images}
    sources = [make_source(task, images[i], first_index + i) for i in range(images.shape[0])]
    return {"source": tf.stack(sources), "image": images}


def indexed(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Each example with its position in the split (`"index"`), before any shuffle."""
    return dataset.enumerate().map(lambda index, example: {**example, "index": index})


def pair_fn(task: Task):
    """The map from an indexed uint8 example to `{"source", "image"(, "label")}` in [-1, 1]."""

    def make(example):
        image = tf.cast(example["image"], tf.float32) / 127.5 - 1.0
        result = {key: value for key, value in example.items()
                  if key not in ("index", "image", "source")}
        if task.kind in GIVEN:
            source = tf.cast(example["source"], tf.float32) / 127.5 - 1.0
        else:
            source = make_source(task, image, example["index"])
        return {**result, "image": image, "source": source}

    return make


# -- sources given by the data: paired folders and unpaired datasets ------------------------

def check_given(task: Task, info, element_spec) -> None:
    """`UserError` unless the data fits the task: `pairs` needs a paired dataset (examples
    with a `"source"`), and a paired dataset's sources are only read by `pairs` (a task that
    makes its sources from the images would silently put its own in their place)."""
    has_source = "source" in element_spec
    if task.kind == "pairs" and not has_source:
        raise UserError(f"task pairs reads the sources of a paired folder; {info.name} has "
                        "none: use --dataset=pairs:<dir> (source/ and target/ inside)")
    if has_source and task.kind not in GIVEN:
        raise UserError(f"{info.name} holds its own sources, which task {task.name} would "
                        "replace with sources made from the targets: use --task=pairs, or a "
                        "dataset of the target images alone")


def open_target(target: Sequence[str], role: str, like, *, data_dir: str | None = None):
    """The unpaired target domain's split, read at the shape of the source split `like`.

    Args:
        target: (dataset, train split, eval split), a model's `Knobs.target`.
        role: "train" or "eval": which of the two splits.
        like: the `DatasetInfo` of the run's dataset (the sources).
    Returns:
        (tf.data of `{"image": uint8, "label"?}`, its `DatasetInfo`). Images are brought to the
        sources' size (centre square, area resize, as `--image_size` does) and channels (RGB
        to grey by luminance, grey repeated to RGB): the two generators map one shape to
        itself, so a grey domain and a colour one train as two grey (or two colour) domains.
    """
    from aigc_zoo import data
    name, train_split, eval_split = target
    if not name:
        raise UserError("unpaired translation maps --dataset into a second dataset; name it "
                        "with --target_dataset (e.g. shapes, or idx:<folder of MNIST files>)")
    if len(like.image_shape) != 3:
        raise UserError(f"unpaired translation needs images; {like.name} holds points")
    height, width, channels = like.image_shape
    if height != width:
        raise UserError(f"{like.name} has {height}x{width} images; unpaired translation "
                        "needs square ones: pass --image_size")
    split = train_split if role == "train" else eval_split
    dataset, info = data.open_split(name, split, data_dir=data_dir, image_size=height)
    if len(info.image_shape) != 3:
        raise UserError(f"--target_dataset={name} holds points, not images")
    if info.image_shape[-1] != channels:
        convert = (tf.image.rgb_to_grayscale if channels == 1
                   else lambda image: tf.image.grayscale_to_rgb(image[..., :1]))
        dataset = dataset.map(lambda ex: {**ex, "image": tf.cast(tf.round(convert(
            tf.cast(ex["image"], tf.float32))), tf.uint8)})
        info = dataclasses.replace(info, image_shape=tuple(like.image_shape))
    return dataset, info


def unpaired(sources: tf.data.Dataset, targets: tf.data.Dataset) -> tf.data.Dataset:
    """Examples `{"source": the run's image, "label": its label, "image": the target's image,
    "target_label": its label}` of two streams, zipped (no pairing: the streams are shuffled
    independently when training)."""

    def join(source, target):
        example = {"source": source["image"], "image": target["image"]}
        if "label" in source:
            example["label"] = source["label"]
        if "label" in target:
            example["target_label"] = target["label"]
        return example

    return tf.data.Dataset.zip((sources, targets)).map(join)
