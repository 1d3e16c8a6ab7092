"""Figures of docs/diffusion.md from a trained diffusion run: a sample grid and a trajectory.

    python experiments/plot_diffusion.py runs/ddpm-digits --steps=50

Writes `docs/images/diffusion_grid.png` (64 samples, seed 0, DDIM with `--steps` steps and the
run's eta and spacing, EMA weights) and `docs/images/diffusion_trajectory.png` (x_t of 8
samples as t goes from T - 1 to 0 along the same sampler, at 10 of its steps).
"""

import argparse
import pathlib

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from aigc_zoo import plots, samplers, trained  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"


def plot_trajectory(trajectory: np.ndarray, visited: np.ndarray, path: pathlib.Path,
                    columns: int = 10) -> None:
    """trajectory: [steps + 1, N, H, W, 1] (x_T first); visited: the steps' timesteps."""
    steps = len(visited)
    picks = np.unique(np.round(np.linspace(0, steps, columns)).astype(int))
    count = trajectory.shape[1]
    figure, axes = plt.subplots(count, len(picks), figsize=(len(picks) * 0.9, count * 0.9 + 0.4))
    for column, index in enumerate(picks):
        # Entry i is x after i steps: x_T, then x at the timestep after visited[i - 1].
        label = "x_T" if index == 0 else (
            "x_0" if index == steps else f"t={visited[index]}")
        for row in range(count):
            axis = axes[row, column]
            axis.imshow(np.clip(trajectory[index, row, ..., 0], -1, 1), cmap="gray",
                        vmin=-1, vmax=1, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(label, fontsize=8)
    figure.tight_layout(pad=0.2)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run, model = trained.restore(args.workdir)
    step = int(model.global_step.numpy())
    IMAGES.mkdir(parents=True, exist_ok=True)
    samples = model.generate(64, seed=args.seed, steps=args.steps).numpy()
    plots.save_grid(IMAGES / "diffusion_grid.png", samples,
                    title=f"{run.model} on {run.dataset}, step {step}, {args.steps} DDIM "
                          f"steps, seed {args.seed}")
    _, trajectory = model.generate(8, seed=args.seed, steps=args.steps, return_trajectory=True)
    visited = samplers.timesteps(model.config.timesteps, args.steps, model.config.sample_spacing)
    plot_trajectory(trajectory.numpy(), visited, IMAGES / "diffusion_trajectory.png")
    print(f"wrote {IMAGES / 'diffusion_grid.png'} and {IMAGES / 'diffusion_trajectory.png'}")


if __name__ == "__main__":
    main()
