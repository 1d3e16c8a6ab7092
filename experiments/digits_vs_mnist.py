"""Compares the embedded `digits` dataset with real MNIST: pixel, shape and class statistics.

    python experiments/digits_vs_mnist.py                  # MNIST IDX files in ../shared/data/mnist
    python experiments/digits_vs_mnist.py --mnist_dir=~/mnist

Prints a markdown table and writes it to experiments/results/digits_vs_mnist.md, under a header
line with the date, the machine and the command. Compared: `digits.render(10_000, seed=0)` and
the 10,000 MNIST test images (`local.load_idx(mnist_dir, "test")`). Takes about 10 s.

Definitions (pixels are uint8 0..255; "ink" means pixel > 127):
  - share of pixels 0 / grey / >= 250: pixel == 0, 1 <= pixel <= 249, pixel >= 250.
  - ink bounding-box height: rows from the first to the last row holding an ink pixel; mean and
    std over images.
  - stroke width: 2 * mass / edge length on grey levels, as `digits.stroke_width` measures its
    glyphs: mass = sum of pixel / 255, edge length = sum of |difference| between 4-neighbours
    (a binary shape's perimeter in pixel sides). Mean and 5th-95th percentiles over images.
    (The binary version, ink pixels over ink/non-ink 4-neighbour boundaries, gives 2.14 and
    2.07 px; counting the ink pixels that have a non-ink 4-neighbour as the edge gives ~3.1 px
    for both, as that counts a pixel of a thin stroke once where it has two sides on the edge.)
  - centre of mass: grey-level weighted (row, col); mean over images, and the per-axis std
    around it, sqrt((var(row) + var(col)) / 2) (= RMS distance from the mean / sqrt(2)).
  - the last two rows use the first 3,000 images of each dataset, as pixel / 255 vectors:
    nearest-class-mean accuracy with Euclidean distance, class means fitted on images 0-1999
    and scored on 2000-2999; and mean L2 distance between two images of the same class (pairs
    of distinct images) over the mean between two images of different classes.
"""

import time

START = time.perf_counter()  # the reported run time includes importing TensorFlow

import argparse  # noqa: E402
import datetime  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
from aigc_zoo.errors import UserError  # noqa: E402
# aigc_zoo.data imports TensorFlow, which logs to stderr: main() imports it only after checking
# --mnist_dir, so that a missing folder is reported in one line.

NUM_CLASSES = 10
OUTPUT = ROOT / "experiments" / "results" / "digits_vs_mnist.md"
NUM_DIGITS = 10_000
SEED = 0
INK = 127  # ink: pixel > INK
CLASS_FIT, CLASS_SCORE = 2_000, 1_000  # images for the class means, then for scoring them


def bbox_heights(ink: np.ndarray) -> np.ndarray:
    """Height in rows of each image's ink bounding box (0 for an image with no ink)."""
    rows = ink.any(axis=2)
    height = ink.shape[1]
    first = rows.argmax(axis=1)
    last = height - 1 - rows[:, ::-1].argmax(axis=1)
    return np.where(rows.any(axis=1), last - first + 1, 0)


def stroke_widths(images: np.ndarray) -> np.ndarray:
    """2 * mass / edge length per image, on grey levels: `digits.stroke_width`, vectorised."""
    x = images.astype(np.float64) / 255
    edge = np.abs(np.diff(x, axis=1)).sum(axis=(1, 2)) + np.abs(np.diff(x, axis=2)).sum(axis=(1, 2))
    return 2 * x.sum(axis=(1, 2)) / np.maximum(edge, 1e-6)


def centres_of_mass(images: np.ndarray) -> np.ndarray:
    """Grey-level weighted centre of mass (row, col) of each image, (N, 2)."""
    x = images.astype(np.float64)
    mass = np.maximum(x.sum(axis=(1, 2)), 1e-6)
    rows = x.sum(axis=2) @ np.arange(x.shape[1]) / mass
    cols = x.sum(axis=1) @ np.arange(x.shape[2]) / mass
    return np.stack([rows, cols], axis=1)


def class_statistics(images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Nearest-class-mean accuracy and mean within- / between-class L2 distance ratio."""
    n = CLASS_FIT + CLASS_SCORE
    if len(images) < n:
        raise UserError(f"need at least {n} labelled images, got {len(images)}")
    x = images[:n].reshape(n, -1).astype(np.float64) / 255
    y = labels[:n]
    fit_x, fit_y, score_x, score_y = x[:CLASS_FIT], y[:CLASS_FIT], x[CLASS_FIT:], y[CLASS_FIT:]
    means = np.stack([fit_x[fit_y == c].mean(axis=0) for c in range(NUM_CLASSES)])
    # |a - m|^2 = |a|^2 - 2 a.m + |m|^2; |a|^2 is the same for every class, so it is dropped.
    scores = (means ** 2).sum(axis=1)[None] - 2 * score_x @ means.T
    accuracy = float((scores.argmin(axis=1) == score_y).mean())

    squares = (x ** 2).sum(axis=1)
    distances = np.sqrt(np.maximum(squares[:, None] + squares[None] - 2 * x @ x.T, 0))
    same = y[:, None] == y[None]
    within = distances[same & ~np.eye(n, dtype=bool)].mean()  # distinct pairs only
    between = distances[~same].mean()
    return accuracy, float(within / between)


def statistics(images: np.ndarray, labels: np.ndarray) -> dict[str, str]:
    """The table's column for one dataset: statistic name -> formatted value."""
    images = images[..., 0] if images.ndim == 4 else images
    ink = images > INK
    heights = bbox_heights(ink)
    widths = stroke_widths(images)
    low, high = np.percentile(widths, [5, 95])
    centres = centres_of_mass(images)
    mean_centre = centres.mean(axis=0)
    centre_std = np.sqrt(centres.var(axis=0).mean())
    accuracy, ratio = class_statistics(images, labels)
    return {
        "mean pixel value": f"{images.mean():.1f}",
        "share of pixels 0 / grey / >= 250": " / ".join(
            f"{share:.2f}" for share in ((images == 0).mean(),
                                         ((images >= 1) & (images <= 249)).mean(),
                                         (images >= 250).mean())),
        "ink bounding-box height (px)": f"{heights.mean():.1f} ± {heights.std():.1f}",
        "stroke width (px): mean, 5-95%": f"{widths.mean():.2f}, {low:.1f}-{high:.1f}",
        "centre of mass (row, col), std":
            f"({mean_centre[0]:.1f}, {mean_centre[1]:.1f}), {centre_std:.2f}",
        "nearest-class-mean accuracy": f"{accuracy:.2f}",
        "mean L2 distance, within / between class": f"{ratio:.2f}",
    }


def markdown_table(columns: dict[str, dict[str, str]]) -> str:
    names = list(columns)
    lines = ["| statistic | " + " | ".join(names) + " |",
             "| --- |" + " --- |" * len(names)]
    for row in next(iter(columns.values())):
        lines.append(f"| {row} | " + " | ".join(columns[name][row] for name in names) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist_dir", default=str(ROOT.parent / "shared" / "data" / "mnist"),
                        help="folder with the MNIST test IDX files (t10k-images-idx3-ubyte"
                             "[.gz], t10k-labels-idx1-ubyte[.gz]); default ../shared/data/mnist "
                             "next to the repository")
    args = parser.parse_args()

    mnist_dir = pathlib.Path(args.mnist_dir).expanduser()
    if not mnist_dir.is_dir():
        print(f"error: no MNIST folder at {mnist_dir}; point --mnist_dir at the folder holding "
              "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from aigc_zoo.data import digits, local

    try:
        mnist_images, mnist_labels = local.load_idx(mnist_dir, "test")
        if mnist_labels is None:
            raise UserError(f"no test label file in {mnist_dir}; the class rows need labels")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    digit_images, digit_labels = digits.render(NUM_DIGITS, seed=SEED)

    columns = {
        f"digits (render({NUM_DIGITS:_}, seed={SEED}))": statistics(digit_images, digit_labels),
        f"MNIST test ({len(mnist_images):_} images)": statistics(mnist_images, mnist_labels),
    }
    table = markdown_table(columns)
    seconds = time.perf_counter() - START

    command = shlex.join(["python", "experiments/digits_vs_mnist.py", *sys.argv[1:]])
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    header = (f"{datetime.date.today().isoformat()} · {machine} · `{command}` "
              f"({seconds:.0f} s)")
    print(table)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(f"{header}\n\n{table}\n", encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
