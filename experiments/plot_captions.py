"""Plots the captioned embedded datasets: `digits` and `shapes` train images under their captions.

    python experiments/plot_captions.py          # writes docs/images/captions.png

The images and captions are the first ones each TFDS builder stores for its train split
(`digits.render_with_attributes` and `shapes.render` with the split's seed).
"""

import pathlib

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from aigc_zoo.data import digits, shapes  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "images" / "captions.png"
COLUMNS = 6


def main() -> None:
    digit_images, labels, drawn = digits.render_with_attributes(
        2 * COLUMNS, seed=digits.SPLIT_SEEDS["train"])
    digit_captions = digits.captions(labels, drawn)
    shape_images, _, _, shape_captions = shapes.render(2 * COLUMNS,
                                                       seed=shapes.SPLIT_SEEDS["train"])
    figure, axes = plt.subplots(4, COLUMNS, figsize=(2.1 * COLUMNS, 9.2), dpi=100)
    rows = [(digit_images[:COLUMNS, ..., 0], digit_captions[:COLUMNS]),
            (digit_images[COLUMNS:, ..., 0], digit_captions[COLUMNS:]),
            (shape_images[:COLUMNS], shape_captions[:COLUMNS]),
            (shape_images[COLUMNS:], shape_captions[COLUMNS:])]
    for row, (images, captions) in zip(axes, rows):
        for axis, image, caption in zip(row, images, captions):
            axis.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            # Long shape captions wrap after the first object.
            words = caption.split()
            axis.set_title(" ".join(words[:4]) + ("\n" + " ".join(words[4:]) if words[4:] else ""),
                           fontsize=8)
            axis.axis("off")
    figure.suptitle("digits (top two rows) and shapes, train split, with their captions")
    figure.tight_layout()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUTPUT)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
