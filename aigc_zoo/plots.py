"""Pictures with matplotlib: image grids, scatters of 2D points, figures as pixels.

Headless (the Agg backend); PNGs keep pixels sharp, so small digits are enlarged, not blurred.
"""

from __future__ import annotations

import math
import os

import matplotlib
import numpy as np
import tensorflow as tf

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (after choosing the headless backend)

from aigc_zoo.data import toy  # noqa: E402


def to_grid(images: np.ndarray | tf.Tensor, *, columns: int | None = None) -> np.ndarray:
    """Tile images in [-1, 1] ([N, H, W, C]) into one uint8 image [rows*H, columns*W, C]."""
    images = np.asarray(images, dtype=np.float32)
    count, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    pixels = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    grid = np.zeros((rows * height, columns * width, channels), np.uint8)
    for index, image in enumerate(pixels):
        row, column = divmod(index, columns)
        grid[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
    return grid


def interleave_rows(originals: np.ndarray, reconstructions: np.ndarray, *,
                    columns: int = 8) -> np.ndarray:
    """Images for `to_grid(..., columns=columns)` whose rows alternate: `columns` originals,
    then their reconstructions (or translations), row pair by row pair."""
    count = len(originals) - len(originals) % columns
    return np.concatenate([np.stack([originals[i:i + columns], reconstructions[i:i + columns]])
                           for i in range(0, count, columns)]).reshape(-1, *originals.shape[1:])


def save_grid(path: str | os.PathLike, images: np.ndarray | tf.Tensor, *, title: str = "",
              columns: int | None = None) -> np.ndarray:
    """Write images in [-1, 1] as one PNG grid with matplotlib; returns the grid (`to_grid`)."""
    grid = to_grid(images, columns=columns)
    height, width = grid.shape[:2]
    scale = max(1.0, 480 / max(height, width))  # small digits get enlarged, pixels kept sharp
    figure = plt.figure(figsize=(width * scale / 100, height * scale / 100 + (0.3 if title else 0)),
                        dpi=100)
    axes = figure.add_axes([0, 0, 1, height * scale / 100 / figure.get_figheight()])
    axes.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255,
                interpolation="nearest")
    axes.axis("off")
    if title:
        figure.suptitle(title, fontsize=9, y=0.995)
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return grid


def save_prompt_grid(path: str | os.PathLike, images: np.ndarray | tf.Tensor,
                     prompts: list[str], *, title: str = "") -> None:
    """Write images in [-1, 1] as one PNG, a row per prompt with the prompt written above it:
    `images` holds `len(images) // len(prompts)` samples of each prompt in turn."""
    images = np.asarray(images, dtype=np.float32)
    columns = len(images) // len(prompts)
    height, width = images.shape[1:3]
    scale = max(1.0, 480 / (columns * width)) / 100  # inches per pixel, small images enlarged
    row_inches, text_inches = height * scale, 0.22
    figure = plt.figure(figsize=(columns * width * scale,
                                 len(prompts) * (row_inches + text_inches) + (0.3 if title else 0)),
                        dpi=100)
    top = 1 - (0.3 / figure.get_figheight() if title else 0)
    step = (row_inches + text_inches) / figure.get_figheight()
    for row, prompt in enumerate(prompts):
        grid = to_grid(images[row * columns:(row + 1) * columns], columns=columns)
        bottom = top - (row + 1) * step
        axes = figure.add_axes([0, bottom, 1, row_inches / figure.get_figheight()])
        axes.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0,
                    vmax=255, interpolation="nearest", aspect="auto")
        axes.axis("off")
        axes.set_title(prompt, fontsize=8, pad=2)
    if title:
        figure.suptitle(title, fontsize=9, y=0.995)
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def points_figure(points: np.ndarray | tf.Tensor, mixture: toy.Mixture, *, title: str = ""
                  ) -> "plt.Figure":
    """A scatter of 2D samples over the modes of `mixture` (circles: 3 std)."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    reach = np.abs(mixture.centres).max() + 1.0
    figure, axes = plt.subplots(figsize=(4.2, 4.2), dpi=100)
    for centre in mixture.centres:
        axes.add_patch(plt.Circle(centre, 3 * mixture.std, fill=False, color="tab:red", lw=0.8))
    axes.scatter(points[:, 0], points[:, 1], s=2, alpha=0.4, color="tab:blue", linewidths=0)
    axes.set_xlim(-reach, reach)
    axes.set_ylim(-reach, reach)
    axes.set_aspect("equal")
    axes.tick_params(labelsize=7)
    if title:
        axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def figure_pixels(figure: "plt.Figure") -> np.ndarray:
    """The rendered figure as a uint8 RGB array (and the figure closed)."""
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return pixels


def scalar_curve(workdir: str | os.PathLike, tag: str) -> tuple[list[int], list[float]]:
    """The steps and values of TensorBoard scalar `tag` (e.g. "train/loss") in a run's
    `tensorboard` folder, for plotting a training curve."""
    from tensorboard.backend.event_processing import event_accumulator
    events = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"),
                                                size_guidance={"tensors": 0})
    events.Reload()
    points = events.Tensors(tag)
    return [p.step for p in points], [float(tf.make_ndarray(p.tensor_proto)) for p in points]
