"""`shapes`: an embedded, offline dataset of 32x32 colour images of one or two simple shapes,
each with a caption that says what was drawn ("a small red circle above a large blue square").

A text-to-image set whose every attribute is known exactly: each object has a shape, a colour,
a size and a position (one of five slots: the centre, top, bottom, left, right, jittered by up
to a pixel); two objects sit in opposite slots (top and bottom, or left and right), so they
never overlap and their relation is one word. The first object's shape is the `label`, so the
label-conditional models run on it too. Drawn analytically (coverage of each pixel by the
shape, 4x4 supersampled: anti-aliased edges) on black, deterministically from a seed.

    images, labels, attributes, captions = shapes.render(1_000, seed=0)
    tfds.load("shapes", data_dir=...)               # after `import aigc_zoo.data.shapes`
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from aigc_zoo.data import png

IMAGE_SHAPE = (32, 32, 3)
SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = ("red", "green", "blue", "yellow", "white")
RGB = np.array([(220, 40, 40), (40, 200, 60), (50, 90, 235), (230, 210, 40), (235, 235, 235)],
               np.float32)
SIZES = ("small", "large")
HALF_SIZES = (3.5, 6.5)  # half the side of each size's bounding square, px
POSITIONS = ("centre", "top", "bottom", "left", "right")
# Slot centres (row, col) in px, pixel centres at integer + 0.5; a large shape in the top slot
# ends at row 15.5 at most, one in the bottom slot starts at 16.5: the pair never touches.
SLOTS = np.array([(16, 16), (8, 16), (24, 16), (16, 8), (16, 24)], np.float32)
JITTER = 1.0  # px, uniform either way in both directions
OPPOSITE = {1: 2, 2: 1, 3: 4, 4: 3}
# The words of one object's place, and of the first object's relation to the second.
PLACE_WORDS = ("in the centre", "at the top", "at the bottom", "on the left", "on the right")
RELATION_WORDS = {1: "above", 2: "below", 3: "to the left of", 4: "to the right of"}
NUM_CLASSES = len(SHAPES)
SPLITS = {"train": 20_000, "test": 2_000}
SPLIT_SEEDS = {"train": 11, "test": 12}
_SUPERSAMPLE = 4
_CHUNK_SIZE = 256
ATTRIBUTES = ("shape", "colour", "size", "position")


def _sample_params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Every random choice of `n` images; attributes are (n, 2), -1 for no second object."""
    count = rng.integers(1, 3, size=n)
    params = {name: rng.integers(len(values), size=(n, 2))
              for name, values in zip(ATTRIBUTES, (SHAPES, COLOURS, SIZES, POSITIONS))}
    # A pair takes a vertical or horizontal pair of opposite slots, the first object either one.
    params["position"][:, 0] = np.where(count == 2, rng.integers(1, 5, size=n),
                                        params["position"][:, 0])
    params["position"][:, 1] = [OPPOSITE.get(int(p), -1) for p in params["position"][:, 0]]
    jitter = rng.uniform(-JITTER, JITTER, size=(n, 2, 2)).astype(np.float32)
    alone = count == 1
    for name in ATTRIBUTES:
        params[name][alone, 1] = -1
    params = {name: values.astype(np.int32) for name, values in params.items()}
    params["centre"] = SLOTS[params["position"].clip(0)] + jitter
    params["centre"][alone, 1] = np.nan
    params["count"] = count.astype(np.int32)
    return params


def coverage(shape: int, offset_row: np.ndarray, offset_col: np.ndarray,
             half: float) -> np.ndarray:
    """1 where a point at (offset_row, offset_col) px from a shape's centre is inside it."""
    if SHAPES[shape] == "circle":
        return offset_row**2 + offset_col**2 <= half**2
    if SHAPES[shape] == "square":
        return np.maximum(np.abs(offset_row), np.abs(offset_col)) <= half
    if SHAPES[shape] == "diamond":
        return np.abs(offset_row) + np.abs(offset_col) <= half
    # An upright isosceles triangle filling the bounding square: apex up, base down.
    return (np.abs(offset_row) <= half) & (
        np.abs(offset_col) <= (offset_row + half) / 2)


def _draw(params: dict[str, np.ndarray]) -> np.ndarray:
    """uint8 (n, 32, 32, 3) images of a chunk; a pure function of `params`."""
    n, size = len(params["count"]), IMAGE_SHAPE[0]
    # Sub-pixel sample points, pixel (i, j) covering [i, i + 1) x [j, j + 1).
    points = (np.arange(size * _SUPERSAMPLE, dtype=np.float32) + 0.5) / _SUPERSAMPLE
    canvas = np.zeros((n, size, size, 3), np.float32)
    for i in range(n):
        for k in range(int(params["count"][i])):
            centre = params["centre"][i, k]
            inside = coverage(int(params["shape"][i, k]), points[:, None] - centre[0],
                              points[None, :] - centre[1], HALF_SIZES[params["size"][i, k]])
            alpha = inside.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean((1, 3))
            canvas[i] += alpha[..., None] * RGB[params["colour"][i, k]]
    return np.round(canvas.clip(0, 255)).astype(np.uint8)


def _object_words(params: dict[str, np.ndarray], i: int, k: int) -> str:
    return (f"a {SIZES[params['size'][i, k]]} {COLOURS[params['colour'][i, k]]} "
            f"{SHAPES[params['shape'][i, k]]}")


def captions(params: dict[str, np.ndarray]) -> list[str]:
    """The caption of each image of a chunk: a pure function of its attributes."""
    texts = []
    for i, count in enumerate(params["count"]):
        first = _object_words(params, i, 0)
        position = int(params["position"][i, 0])
        if count == 1:
            texts.append(f"{first} {PLACE_WORDS[position]}")
        else:
            texts.append(f"{first} {RELATION_WORDS[position]} {_object_words(params, i, 1)}")
    return texts


def render_chunks(num_examples: int, *, seed: int
                  ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray], list[str]]]:
    """Yields (images, attributes, captions) of `render` in chunks, to bound memory."""
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    rng = np.random.default_rng(seed)
    for start in range(0, num_examples, _CHUNK_SIZE):
        params = _sample_params(rng, min(_CHUNK_SIZE, num_examples - start))
        yield _draw(params), params, captions(params)


def render(num_examples: int, *, seed: int
           ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], list[str]]:
    """Renders `num_examples` images, deterministically for `seed`.

    Returns:
      images: uint8 (N, 32, 32, 3); labels: int32 (N,), the first object's shape;
      attributes: `count` int32 (N,), `shape`/`colour`/`size`/`position` int32 (N, 2) indices
        into SHAPES/COLOURS/SIZES/POSITIONS (-1 for no second object) and `centre` float32
        (N, 2, 2), each object's centre (row, col) in px (NaN for none);
      captions: one string per image.
    """
    parts = list(render_chunks(num_examples, seed=seed))
    if not parts:
        empty = _sample_params(np.random.default_rng(0), 0)
        return np.zeros((0, *IMAGE_SHAPE), np.uint8), np.zeros(0, np.int32), empty, []
    images, params, texts = zip(*parts)
    attributes = {k: np.concatenate([p[k] for p in params]) for k in params[0]}
    return (np.concatenate(images), attributes["shape"][:, 0].copy(), attributes,
            [t for chunk in texts for t in chunk])


class Shapes(tfds.core.GeneratorBasedBuilder):
    """TFDS builder for `shapes`: 20,000 train and 2,000 test captioned images, no download."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 4 shapes, 5 colours, 2 sizes, 5 positions."}

    def _info(self) -> tfds.core.DatasetInfo:
        pair = tfds.features.Tensor(shape=(2,), dtype=np.int32)
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "32x32 colour images of one or two shapes (circle, square, triangle, diamond) "
                "in five colours, two sizes and five positions, drawn analytically on black, "
                "each with a caption naming every attribute. Attributes are (first, second) "
                "object indices into the module's SHAPES, COLOURS, SIZES, POSITIONS; -1 for "
                "no second object."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=IMAGE_SHAPE),
                "label": tfds.features.ClassLabel(names=SHAPES),
                "caption": tfds.features.Text(),
                "count": tfds.features.Scalar(dtype=np.int32),
                **{name: pair for name in ATTRIBUTES},
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # everything is rendered locally
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
        key = 0
        for images, params, texts in render_chunks(SPLITS[split], seed=SPLIT_SEEDS[split]):
            for i, (image, text) in enumerate(zip(images, texts)):
                yield key, {"image": png.encode(image), "label": int(params["shape"][i, 0]),
                            "caption": text, "count": params["count"][i],
                            **{name: params[name][i] for name in ATTRIBUTES}}
                key += 1
