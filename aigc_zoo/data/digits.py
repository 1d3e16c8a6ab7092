"""`digits`: an embedded, offline, MNIST-like dataset of 28x28 greyscale digits 0-9.

Rendered procedurally from the TrueType faces that ship inside matplotlib, so the default run
works with no network and no prepared data, and every byte is reproducible from a seed. Each
glyph is thickened or thinned, rotated, scaled, sheared, shifted and elastically warped
(Simard et al., 2003, "Best practices for convolutional neural networks applied to visual
document analysis"), then laid out like MNIST: white on black, a ~20 px glyph centred by its
centre of mass. Pixel statistics (ink share, stroke width, within/between-class distances)
are close to MNIST's; see experiments/plot_digits.py for a picture.

    images, labels = digits.render(1_000, seed=0)   # uint8 (N, 28, 28, 1), int32 (N,)
    images, labels, drawn = digits.render_with_attributes(1_000, seed=0)
    digits.captions(labels, drawn)                  # ["a slanted seven", "an eight", ...]
    tfds.load("digits", data_dir=...)               # after `import aigc_zoo.data.digits`

Captions (version 1.1.0; the images are 1.0.0's, byte for byte) name the digit and, for a clear
lean either way, the slant: the attributes that a small CNN reads back from the image at 90% or
more (experiments/caption_readback.py); stroke weight and font family do not reach that.

How: every (face, digit, stroke radius) glyph is rasterised once with matplotlib's Agg
renderer; each sample is then a vectorised bilinear lookup of its template through an
inverse affine map plus a smooth displacement field, on a 56x56 grid average-pooled to 28x28.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import pathlib
from collections.abc import Iterator
from typing import NamedTuple

import matplotlib
import numpy as np
import tensorflow_datasets as tfds
from matplotlib import font_manager, ft2font, path, textpath, transforms
from matplotlib.backends import backend_agg

from aigc_zoo.data import png

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
SPLITS = {"train": 60_000, "test": 10_000}
# Distinct seeds give independent random streams, so the splits share no image.
SPLIT_SEEDS = {"train": 1, "test": 2}

FONT_DIR = pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf"
# cmmi10 is left out (old-style figures), as are cmsy10/cmex10 and the Display faces
# (no digit glyphs: they would render as tofu boxes).
FONT_FACES = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique",
    "DejaVuSansMono-BoldOblique", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic",
    "DejaVuSerif-BoldItalic", "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic",
    "STIXGeneralBolIta", "cmr10", "cmb10", "cmss10", "cmtt10", "cmti10",
)

_SUPERSAMPLE = 2  # sample 56x56, then 2x2 average-pool (hard-coded in _draw): anti-aliasing
_TEMPLATE_SIZE = 64  # template canvas, in template pixels (= supersampled output pixels)
_GLYPH_SIZE = 40.0  # longest side of every glyph's bounding box in its template
# Stroke radii (template px) by which outlines are grown (>0) or shrunk (<0) by Agg strokes.
_STROKE_STEP = 0.5
_STROKE_RADII = np.arange(-1.0, 3.0 + _STROKE_STEP / 2, _STROKE_STEP)
_EDGE_CONTRAST = 1.5  # see _draw
_CHUNK_SIZE = 64  # samples per work item: fixed (so threads cannot change the output) and
# small, so the temporaries stay in reused heap memory rather than page-faulting in.
_ELASTIC_GRID = 4  # control points per side of the smooth random displacement field


def glyph_path(face: str, digit: int) -> path.Path:
    """The outline of `digit` in the font file `FONT_DIR/{face}.ttf`, on a 1-unit em."""
    file = FONT_DIR / f"{face}.ttf"
    # TextPath silently falls back to a tofu box from another font for a missing glyph.
    if ft2font.FT2Font(str(file)).get_char_index(ord(str(digit))) == 0:
        raise ValueError(f"font face {face!r} has no glyph for the digit {digit}")
    font = font_manager.FontProperties(fname=file)
    return textpath.TextPath((0, 0), str(digit), size=1, prop=font)


def _rasterise(outline: path.Path, radius: float) -> np.ndarray:
    """Fills `outline` (bounding box scaled to _GLYPH_SIZE, centred) on a black canvas.

    A positive radius strokes the outline in white (dilation), a negative one in black
    (erosion): exact, anti-aliased morphology with no image-processing dependency.
    """
    size = _TEMPLATE_SIZE
    low, high = outline.vertices.min(axis=0), outline.vertices.max(axis=0)
    to_canvas = (transforms.Affine2D().translate(*-(low + high) / 2)
                 .scale(_GLYPH_SIZE / max(high - low)).translate(size / 2, size / 2))
    renderer = backend_agg.RendererAgg(size, size, 72)  # 72 dpi: 1 point == 1 pixel
    # Agg's canvas starts transparent white; paint it opaque black and read the red channel.
    background = renderer.new_gc()
    background.set_linewidth(0)
    renderer.draw_path(background, path.Path.unit_rectangle(),
                       transforms.Affine2D().scale(size), rgbFace=(0, 0, 0))
    fill = renderer.new_gc()
    fill.set_linewidth(0)
    renderer.draw_path(fill, outline, to_canvas, rgbFace=(1, 1, 1))
    if radius != 0:
        stroke = renderer.new_gc()
        stroke.set_linewidth(2 * abs(radius))
        stroke.set_foreground("white" if radius > 0 else "black")
        renderer.draw_path(stroke, outline, to_canvas, rgbFace=None)
    return np.asarray(renderer.buffer_rgba())[..., 0].copy()


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width of a glyph mask in pixels: twice its area over its perimeter."""
    mask = mask.astype(np.float32)
    perimeter = np.abs(np.diff(mask, axis=0)).sum() + np.abs(np.diff(mask, axis=1)).sum()
    return float(2 * mask.sum() / max(perimeter, 1e-6))


class Templates(NamedTuple):
    """Every (face, digit, stroke radius) glyph, rasterised once; see `templates()`."""

    masks: np.ndarray  # uint8 (faces, 10, radii, S, S), 255 = ink (uint8: faster lookups)
    centres: np.ndarray  # float32 (faces, 10, radii, 2): centre of mass (row, col)
    corners: np.ndarray  # float32 (faces, 10, radii, 4, 2): ink bounding box - centre
    widths: np.ndarray  # float32 (faces,): mean stroke width of the face, unstroked


@functools.cache
def templates() -> Templates:
    """Rasterises every (face, digit, stroke radius) glyph, once per process."""
    masks = np.stack([
        np.stack([np.stack([_rasterise(outline, r) for r in _STROKE_RADII])
                  for outline in (glyph_path(face, d) for d in range(NUM_CLASSES))])
        for face in FONT_FACES])
    grid = np.arange(_TEMPLATE_SIZE, dtype=np.float32)
    mass = masks.sum(axis=(-2, -1))
    centres = np.stack([(masks.sum(-1) * grid).sum(-1) / mass,
                        (masks.sum(-2) * grid).sum(-1) / mass], axis=-1)
    ink_rows, ink_cols = (masks > 127).any(-1), (masks > 127).any(-2)
    top, left = ink_rows.argmax(-1), ink_cols.argmax(-1)
    bottom = _TEMPLATE_SIZE - 1 - ink_rows[..., ::-1].argmax(-1)
    right = _TEMPLATE_SIZE - 1 - ink_cols[..., ::-1].argmax(-1)
    corners = np.stack([np.stack([top, left], -1), np.stack([top, right], -1),
                        np.stack([bottom, left], -1), np.stack([bottom, right], -1)], -2)
    unstroked = int(np.flatnonzero(_STROKE_RADII == 0)[0])
    widths = [np.mean([stroke_width(m) for m in face[:, unstroked]]) for face in masks]
    return Templates(masks, centres.astype(np.float32),
                     (corners - centres[..., None, :]).astype(np.float32),
                     np.array(widths, np.float32))


def _sample_params(rng: np.random.Generator, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Draws every random choice for a chunk: face, stroke, affine map and warp field."""
    n = len(labels)
    widths = templates().widths
    face = rng.integers(len(FONT_FACES), size=n)
    # Aim each sample at a target stroke width, as a fraction of glyph size (MNIST's 5-95%
    # range is 1.4-3.1 px on a 20 px glyph), so thin serif faces get thickened and bold
    # ones thinned, but never by more than 15%, so that serif hairlines survive.
    target = _GLYPH_SIZE * np.exp(rng.uniform(np.log(0.06), np.log(0.175), size=n))
    radius = np.maximum((target - widths[face]) / 2, -0.15 * widths[face])
    geometry = {
        "angle": np.deg2rad(rng.normal(0.0, 10.0, size=n).clip(-25, 25)),
        # Positive shear slants right, as most handwriting (and MNIST) does.
        "shear": rng.normal(0.08, 0.15, size=n).clip(-0.3, 0.45),
        "aspect": np.exp(rng.uniform(-0.2, 0.15, size=n)),  # width / height multiplier
        # MNIST fits each digit's bounding box into 20x20 px; vary that box a little.
        "box": rng.uniform(18.5, 21.0, size=n),
        # MNIST centres the centre of mass exactly: keep the jitter small.
        "shift": rng.normal(0.0, 0.3, size=(n, 2)).clip(-1.0, 1.0),
        "warp": rng.normal(0.0, 1.0, size=(n, _ELASTIC_GRID, _ELASTIC_GRID, 2)),
    }
    # Round up to a rasterised radius, so the thinning limit holds.
    stroke = np.ceil((radius - _STROKE_RADII[0]) / _STROKE_STEP).astype(np.int64)
    template = (face, labels, stroke.clip(0, len(_STROKE_RADII) - 1))
    return {"template": template, **{k: v.astype(np.float32) for k, v in geometry.items()}}


def _upsample(coarse: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly upsamples (n, g, g, c) control values to a smooth (n, size, size, c) field."""
    points = coarse.shape[1]
    position = np.linspace(0, points - 1, size, dtype=np.float32)
    low = np.minimum(position.astype(np.int32), points - 2)
    weight = (position - low)[:, None, None]
    rows = coarse[:, low] * (1 - weight) + coarse[:, low + 1] * weight
    return rows[:, :, low] * (1 - weight[..., 0]) + rows[:, :, low + 1] * weight[..., 0]


def _output_to_template(params: dict[str, np.ndarray]) -> np.ndarray:
    """Per-sample (n, 2, 2) linear map from output to template (row, col) offsets.

    Its inverse, the forward map, is  scale * rotate(angle) @ shear @ diag(1, aspect),
    with the scale chosen so the glyph's transformed bounding box spans `box` output px.
    """
    inverse, longest_side = _unscaled_inverse(params)
    return inverse * (longest_side / (params["box"] * _SUPERSAMPLE))[:, None, None]


def _unscaled_inverse(params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The map of `_output_to_template` before scaling, and the longest side (template px)
    of the glyph's bounding box under its inverse."""
    def matrices(a, b, c, d):  # (n, 2, 2) from four (n,) entries, row by row
        return np.stack([np.stack([a, b], -1), np.stack([c, d], -1)], -2)

    cos, sin, shear = np.cos(params["angle"]), np.sin(params["angle"]), params["shear"]
    zero, one = np.zeros_like(cos), np.ones_like(cos)
    inverse = (matrices(one, zero, zero, 1 / params["aspect"])  # undo the stretch, after
               @ matrices(one, zero, shear, one)  # undoing the shear, after
               @ matrices(cos, sin, -sin, cos))  # undoing the rotation
    corners = templates().corners[params["template"]] @ np.linalg.inv(inverse).swapaxes(1, 2)
    return inverse, np.ptp(corners, axis=1).max(axis=-1)


def _sample_grid(params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Template (row, col) coordinates of every supersampled output pixel, (n, S, S) each."""
    size = IMAGE_SHAPE[0] * _SUPERSAMPLE
    # The warp and the shift are drawn in output px; the grid is in supersampled px.
    warp = (_upsample(params["warp"], size) - params["shift"][:, None, None]) * _SUPERSAMPLE
    # Like MNIST, put the centre of mass at the centre of pixel (14, 14).
    grid = np.arange(size, dtype=np.float32) - (size / 2 + (_SUPERSAMPLE - 1) / 2)
    y = grid[None, :, None] + warp[..., 0]
    x = grid[None, None, :] + warp[..., 1]
    inverse = _output_to_template(params)[..., None, None]
    centre = templates().centres[params["template"]][..., None, None]
    row = inverse[:, 0, 0] * y + inverse[:, 0, 1] * x + centre[:, 0]
    col = inverse[:, 1, 0] * y + inverse[:, 1, 1] * x + centre[:, 1]
    return row, col


def _draw(params: dict[str, np.ndarray]) -> np.ndarray:
    """Renders one chunk of samples to uint8 (n, 28, 28, 1); a pure function of `params`."""
    masks, size = templates().masks, _TEMPLATE_SIZE
    row, col = _sample_grid(params)
    # Bilinear lookup in the flattened templates; the canvas border is black, so clipping
    # out-of-range coordinates onto it samples background.
    row, col = np.clip(row, 0, size - 1.001), np.clip(col, 0, size - 1.001)
    row0, col0 = row.astype(np.int32), col.astype(np.int32)
    fy, fx = row - row0, col - col0
    which = np.ravel_multi_index(params["template"], masks.shape[:3]).astype(np.int32)
    top_left = (which * size * size)[:, None, None] + row0 * size + col0
    flat = masks.reshape(-1)
    top = flat[top_left] * (1 - fx) + flat[top_left + 1] * fx
    bottom = flat[top_left + size] * (1 - fx) + flat[top_left + size + 1] * fx
    image = top * (1 - fy) + bottom * fy
    # Bilinear lookup plus box filtering leaves softer edges than MNIST's; stretching the
    # contrast around mid-grey first brings the share of grey pixels to MNIST's ~12%.
    image = np.clip((image - 127.5) * _EDGE_CONTRAST + 127.5, 0, 255)
    # 2x2 average pooling (by slicing: much faster than a strided mean), 255 = full ink.
    image = (image[:, 0::2] + image[:, 1::2])
    image = (image[:, :, 0::2] + image[:, :, 1::2]) / 4
    return np.round(image).astype(np.uint8)[..., None]


def render_chunks(num_examples: int, *, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields `render(num_examples, seed=seed)` in consecutive chunks, to bound memory."""
    for images, labels, _ in _render_chunks(num_examples, seed=seed):
        yield images, labels


def _render_chunks(num_examples: int, *, seed: int
                   ) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """`render_chunks` with each chunk's render parameters (see `_sample_params`).

    Random draws happen here, in order, on one thread; only the drawing is spread over
    threads (numpy releases the GIL), so the output does not depend on the thread count.
    """
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    rng = np.random.default_rng(seed)
    # Exact balance: the labels are 0..9 repeated, in a shuffled order.
    labels = rng.permutation(np.arange(num_examples) % NUM_CLASSES).astype(np.int32)
    chunks = [labels[i:i + _CHUNK_SIZE] for i in range(0, num_examples, _CHUNK_SIZE)]
    templates()  # build once, before the threads race to do it
    workers = os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = []
        for chunk in chunks:
            params = _sample_params(rng, chunk)
            pending.append((chunk, params, pool.submit(_draw, params)))
            # Keep only a few chunks in flight, so memory stays bounded for big renders.
            if len(pending) > workers:
                chunk, params, future = pending.pop(0)
                yield future.result(), chunk, params
        for chunk, params, future in pending:
            yield future.result(), chunk, params


def render(num_examples: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Renders `num_examples` digits, deterministically for `seed`.

    Args:
      num_examples: how many images; each class gets num_examples // 10 (one more for the
        first num_examples % 10 classes), in a shuffled order.
      seed: the random seed; the output is a pure function of both arguments.

    Returns:
      images: uint8 (num_examples, 28, 28, 1) in [0, 255], white digit on black.
      labels: int32 (num_examples,) in [0, 10).
    """
    parts = list(render_chunks(num_examples, seed=seed))
    if not parts:
        return np.zeros((0, *IMAGE_SHAPE), np.uint8), np.zeros((0,), np.int32)
    images, labels = zip(*parts)
    return np.concatenate(images), np.concatenate(labels)


# -- captions: words for the render parameters that the image shows --------------------------

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The family of each face in FONT_FACES (cmr/cmb/cmti are Computer Modern's serif faces).
FACE_FAMILIES = tuple(
    "mono" if "Mono" in face or face == "cmtt10" else
    "sans" if face.startswith("DejaVuSans") or face == "cmss10" else "serif"
    for face in FONT_FACES)
_UPRIGHT = np.array([not any(k in face for k in ("Oblique", "Italic", "Ita", "cmti"))
                     for face in FONT_FACES])


@functools.cache
def face_slants() -> np.ndarray:
    """Each face's own slant (horizontal over vertical run; > 0 leans right), measured from
    its unstroked templates against the upright faces' same digits."""
    masks = templates().masks[:, :, int(np.flatnonzero(_STROKE_RADII == 0)[0])]
    ink = masks.astype(np.float64)
    grid = np.arange(_TEMPLATE_SIZE, dtype=np.float64)
    mass = ink.sum((-2, -1))
    row_mean = (ink.sum(-1) * grid).sum(-1) / mass
    col_mean = (ink.sum(-2) * grid).sum(-1) / mass
    rows = grid[:, None] - row_mean[..., None, None]
    cols = grid[None, :] - col_mean[..., None, None]
    # Rows grow downwards: a right lean puts the lower ink further left.
    lean = -(ink * rows * cols).sum((-2, -1)) / (ink * rows**2).sum((-2, -1))
    return (lean - np.median(lean[_UPRIGHT], axis=0)).mean(axis=1).astype(np.float32)


def attributes(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The drawn attributes of a chunk, from its render parameters (see `_sample_params`).

    Returns float32 `stroke` (mean stroke width in output px, before the elastic warp),
    float32 `slant` (horizontal over vertical run of a vertical stroke of the face, after
    the affine map; > 0 leans right) and int32 `face` (index into FONT_FACES).
    """
    face, _, stroke = params["template"]
    inverse, longest_side = _unscaled_inverse(params)
    widths = templates().widths[face] + 2 * _STROKE_RADII[stroke]
    # A vertical stroke of the face runs (1, -slant) in (row, col); map it forward.
    direction = np.stack([np.ones_like(longest_side), -face_slants()[face]], -1)
    forward = np.linalg.solve(inverse, direction[..., None])[..., 0]
    return {"stroke": (widths * params["box"] / longest_side).astype(np.float32),
            "slant": (-forward[:, 1] / forward[:, 0]).astype(np.float32),
            "face": face.astype(np.int32)}


# Caption words, bin by bin (the middle bin has no word: "a seven" is about upright). Only the
# digit and the slant go into captions: experiments/caption_readback.py reads each candidate back
# from images with a small CNN (experiments/results/caption_readback.md): the slant's bins
# reached 91.6%, the stroke weight's 88.8% even at these extreme edges and the face family's
# (sans/serif/mono) 79.6%, under the 90% that a caption word needs.
SLANT_WORDS, SLANT_EDGES = ("backslanted", "", "slanted"), (-0.2, 0.35)  # horizontal/vertical
WEIGHT_EDGES = (1.6, 3.05)  # thin / regular / thick stroke width in px: measured, not used


def weight_bins(stroke: np.ndarray) -> np.ndarray:
    """Bin (thin, regular, thick) of each stroke width (px), by WEIGHT_EDGES."""
    return np.digitize(stroke, WEIGHT_EDGES).astype(np.int32)


def slant_bins(slant: np.ndarray) -> np.ndarray:
    """Index into SLANT_WORDS of each slant."""
    return np.digitize(slant, SLANT_EDGES).astype(np.int32)


def captions(labels: np.ndarray, drawn: dict[str, np.ndarray]) -> list[str]:
    """The caption of each image from its label and `attributes`: "a slanted seven"."""
    texts = []
    for label, slant in zip(labels, slant_bins(drawn["slant"])):
        words = [w for w in (SLANT_WORDS[slant], DIGIT_WORDS[label]) if w]
        article = "an" if words[0] == "eight" else "a"  # by sound: "a one", "an eight"
        texts.append(" ".join([article, *words]))
    return texts


def render_with_attributes(num_examples: int, *, seed: int
                           ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """`render(num_examples, seed=seed)` and the `attributes` of every image."""
    parts = list(_render_chunks(num_examples, seed=seed))
    if not parts:
        empty = {"stroke": np.zeros(0, np.float32), "slant": np.zeros(0, np.float32),
                 "face": np.zeros(0, np.int32)}
        return np.zeros((0, *IMAGE_SHAPE), np.uint8), np.zeros((0,), np.int32), empty
    images, labels, params = zip(*parts)
    drawn = [attributes(p) for p in params]
    return (np.concatenate(images), np.concatenate(labels),
            {k: np.concatenate([d[k] for d in drawn]) for k in drawn[0]})


class Digits(tfds.core.GeneratorBasedBuilder):
    """TFDS builder for `digits`: 60,000 train and 10,000 test images, no download."""

    # A new version, not a changed 1.0.0: TFDS keeps each version's prepared files in its own
    # folder, so data prepared by older code is never read with features it lacks; the 1.1.0
    # images are byte for byte 1.0.0's (the render is unchanged), so classifiers cached on
    # 1.0.0 stay valid.
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 21 matplotlib font faces, 70,000 images.",
                     "1.1.0": "A caption and a slant bin per image; the same images."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "MNIST-like 28x28 greyscale digits 0-9 rendered offline from the fonts "
                "bundled with matplotlib (DejaVu, STIX, Computer Modern), with random "
                "stroke width, rotation, scale, aspect, shear, shift and elastic warp. "
                "Exactly class-balanced; train and test come from different seeds. Each image "
                "has a caption built from its render parameters: the digit and, for a clear "
                "lean, 'slanted' or 'backslanted' (\"a slanted seven\")."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=IMAGE_SHAPE),
                "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                "caption": tfds.features.Text(),
                "slant": tfds.features.ClassLabel(
                    names=[w or "upright" for w in SLANT_WORDS]),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # everything is rendered locally
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
        key = 0
        for images, labels, params in _render_chunks(SPLITS[split], seed=SPLIT_SEEDS[split]):
            drawn = attributes(params)
            texts, slants = captions(labels, drawn), slant_bins(drawn["slant"])
            for image, label, text, slant in zip(images, labels, texts, slants):
                yield key, {"image": png.encode(image), "label": int(label), "caption": text,
                            "slant": int(slant)}
                key += 1
