"""Figure of a trained VQ-VAE from its workdir: test reconstructions, samples of the no-prior
baseline, and code usage and perplexity during training (read from its TensorBoard events).

    python -m aigc_zoo.run --model=vqvae --workdir=runs/vqvae-digits   # the default run
    python experiments/plot_vqvae.py --workdir=runs/vqvae-digits      # docs/images/vqvae.png
"""

import argparse
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aigc_zoo import data, plots, trained  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/vqvae-digits")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--output", default=str(ROOT / "docs" / "images" / "vqvae.png"))
    args = parser.parse_args()

    run, model = trained.restore(args.workdir)
    dataset, _ = data.load(run.dataset, run.eval_split, batch_size=32, training=False,
                           data_dir=args.data_dir, image_size=run.image_size)
    originals = next(iter(dataset))["image"]
    reconstructions = model.reconstruct(originals).numpy()
    originals = originals.numpy()
    pairs = plots.interleave_rows(originals, reconstructions)  # 8 originals, then theirs
    samples = model.generate(32, seed=0).numpy()

    figure, axes = plt.subplots(1, 3, figsize=(13, 4.2), dpi=110,
                                gridspec_kw={"width_ratios": [1, 1, 1.3]})
    for ax, images, title in [
        (axes[0], pairs, f"{run.eval_split} images (odd rows)\nand reconstructions (even rows)"),
        (axes[1], samples, "codes drawn independently from\ntheir frequencies (no prior)"),
    ]:
        ax.imshow(plots.to_grid(images, columns=8)[..., 0], cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    steps, used = plots.scalar_curve(args.workdir, "train/codes_used")
    _, perplexity = plots.scalar_curve(args.workdir, "train/perplexity")
    size = run.config.codebook_size
    axes[2].plot(steps, used, label="share of codes used in the batch")
    axes[2].plot(steps, np.asarray(perplexity) / size, label=f"perplexity / K (K = {size})")
    axes[2].set(xlabel="train step", ylim=(0, 1.05))
    axes[2].legend(fontsize=9)
    axes[2].set_title("code usage while training", fontsize=10)
    step = int(model.global_step.numpy())
    figure.suptitle(f"{run.model} on {run.dataset}: {run.config.epochs} epochs, {step} steps, "
                    f"{model.grid_shape[0]}x{model.grid_shape[1]} codes, K = {size}, "
                    f"{run.config.codebook_update} codebook", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    figure.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
