"""Figure of trained GANs side by side: 64 samples (seed 0) from each workdir's latest checkpoint.

    python -m aigc_zoo.run --model=dcgan           # and the other variants' default runs
    python experiments/plot_gans.py runs/gan-digits runs/dcgan-digits runs/wgan_gp-digits \
        runs/sngan-digits runs/cgan-digits         # writes docs/images/gans_digits.png

Conditional models draw the labels 0, 1, ..., 9 cycling along the rows' reading order.
"""

import argparse
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from aigc_zoo import plots, trained  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--output", default=str(ROOT / "docs" / "images" / "gans_digits.png"))
    args = parser.parse_args()

    figure, axes = plt.subplots(1, len(args.workdirs), squeeze=False,
                                figsize=(3.0 * len(args.workdirs), 3.5), dpi=110)
    for ax, workdir in zip(axes[0], args.workdirs):
        run, model = trained.restore(workdir)
        columns = 10 if model.conditional else 8
        count = 80 if model.conditional else 64
        grid = plots.to_grid(model.generate(count, seed=0).numpy(), columns=columns)
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0,
                  vmax=255, interpolation="nearest")
        ax.set_title(f"{run.model}: {run.config.epochs} epochs,\n"
                     f"{int(model.global_step.numpy()):,} generator steps", fontsize=9)
        ax.axis("off")
    figure.tight_layout()
    figure.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
