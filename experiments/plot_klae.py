"""Figure of a trained `klae` from its workdir: test reconstructions, the four latent channels of
a few test images, and decoded N(0, I) latents (why a second stage is needed).

    python -m aigc_zoo.run --model=klae --workdir=runs/klae-digits     # the first stage
    python experiments/plot_klae.py --workdir=runs/klae-digits        # docs/images/klae.png
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
    parser.add_argument("--workdir", default="runs/klae-digits")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--output", default=str(ROOT / "docs" / "images" / "klae.png"))
    args = parser.parse_args()

    run, model = trained.restore(args.workdir)
    dataset, _ = data.load(run.dataset, run.eval_split, batch_size=32, training=False,
                           data_dir=args.data_dir, image_size=run.image_size)
    originals = next(iter(dataset))["image"]
    reconstructions = model.reconstruct(originals).numpy()
    latents = model.encode(originals[:6])[0].numpy()  # [6, h, w, channels]
    originals = originals.numpy()
    pairs = plots.interleave_rows(originals, reconstructions)  # 8 originals, then theirs
    samples = model.generate(32, seed=0).numpy()

    figure = plt.figure(figsize=(13, 4.4), dpi=110)
    grid = figure.add_gridspec(1, 3, width_ratios=[1, 0.8, 1])
    for column, images, title in [
        (0, pairs, f"{run.eval_split} images (odd rows)\nand reconstructions (even rows)"),
        (2, samples, "decoded z ~ N(0, I): the prior alone\n(not a sampler: see the docs)"),
    ]:
        ax = figure.add_subplot(grid[column])
        ax.imshow(plots.to_grid(images, columns=8)[..., 0], cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    channels = latents.shape[-1]
    inner = grid[1].subgridspec(len(latents), channels + 1, wspace=0.05, hspace=0.05)
    limit = float(np.abs(latents).max())
    for row, (image, latent) in enumerate(zip(originals, latents)):
        ax = figure.add_subplot(inner[row, 0])
        ax.imshow(image[..., 0], cmap="gray", vmin=-1, vmax=1)
        ax.axis("off")
        for channel in range(channels):
            ax = figure.add_subplot(inner[row, channel + 1])
            ax.imshow(latent[..., channel], cmap="RdBu", vmin=-limit, vmax=limit)
            ax.axis("off")
            if row == 0:
                ax.set_title(f"z[{channel}]", fontsize=8)
    step = int(model.global_step.numpy())
    figure.suptitle(f"{run.model} on {run.dataset}: {run.config.epochs} epochs, {step} steps, "
                    "latent {}x{}x{}, KL weight {}".format(*model.latent_shape,
                                                           run.config.kl_weight), fontsize=11)
    figure.savefig(args.output, bbox_inches="tight")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
