"""Plots a grid of the embedded `digits` dataset: one row per class, from the train split.

    python experiments/plot_digits.py            # writes docs/images/digits.png

The samples are the first ones `aigc_zoo.data.digits` renders for the train split (the same
images the TFDS builder stores), so the figure shows exactly what models train on.

How close the images are to real MNIST (pixel levels, ink box, stroke width, centre of mass,
class separability): `python experiments/digits_vs_mnist.py` computes it and writes the
table to experiments/results/digits_vs_mnist.md.
"""

import pathlib

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aigc_zoo.data import digits  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "images" / "digits.png"
PER_CLASS = 16


def first_per_class(per_class: int) -> np.ndarray:
    """The first `per_class` train-split images of each class, as (10, per_class, 28, 28)."""
    found: list[list[np.ndarray]] = [[] for _ in range(digits.NUM_CLASSES)]
    split = "train"
    for images, labels in digits.render_chunks(digits.SPLITS[split],
                                               seed=digits.SPLIT_SEEDS[split]):
        for image, label in zip(images, labels):
            if len(found[label]) < per_class:
                found[label].append(image[..., 0])
        if all(len(row) == per_class for row in found):
            return np.array(found)
    raise AssertionError("the train split has fewer than per_class images of some class")


def montage(grid: np.ndarray, gap: int = 2) -> np.ndarray:
    """Tiles (rows, cols, h, w) images into one picture with grey gaps between tiles."""
    rows, cols, height, width = grid.shape
    canvas = np.full((rows * (height + gap) - gap, cols * (width + gap) - gap), 64, np.uint8)
    for r in range(rows):
        for c in range(cols):
            canvas[r * (height + gap):r * (height + gap) + height,
                   c * (width + gap):c * (width + gap) + width] = grid[r, c]
    return canvas


def main() -> None:
    picture = montage(first_per_class(PER_CLASS))
    figure, axes = plt.subplots(figsize=(8, 5.4), dpi=120)
    axes.imshow(picture, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axes.set_yticks([(28 + 2) * c + 14 for c in range(digits.NUM_CLASSES)],
                    [str(c) for c in range(digits.NUM_CLASSES)])
    axes.set_xticks([])
    axes.tick_params(length=0)
    axes.set_title(f"digits: the embedded offline dataset (train split, first {PER_CLASS} "
                   f"per class;\n{len(digits.FONT_FACES)} matplotlib font faces, random stroke, "
                   "affine and elastic warp)", fontsize=10)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUTPUT, bbox_inches="tight")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
