"""Figure of a trained VAE: prior samples and test reconstructions, from a run's workdir.

    python -m aigc_zoo.run --model=vae                     # the default run (about 4 min)
    python experiments/plot_vae.py --workdir=runs/vae-digits   # writes docs/images/vae.png
"""

import argparse
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from aigc_zoo import data, plots, trained  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/vae-digits")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--output", default=str(ROOT / "docs" / "images" / "vae.png"))
    args = parser.parse_args()

    run, model = trained.restore(args.workdir)
    samples = model.generate(64, seed=0).numpy()
    dataset, _ = data.load(run.dataset, run.eval_split, batch_size=32, training=False,
                           data_dir=args.data_dir, image_size=run.image_size)
    batch = next(iter(dataset))
    originals = batch["image"].numpy()
    labels = batch.get("label")
    labels = labels if model.conditional else None
    reconstructions = model.reconstruct(batch["image"], labels).numpy()
    pairs = plots.interleave_rows(originals, reconstructions)  # 8 originals, then theirs

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 4.9), dpi=110)
    for axes, images, title in [
        (left, samples, "samples from the prior (seed 0)"),
        (right, pairs, f"{run.eval_split} images (odd rows)\nand reconstructions (even rows)"),
    ]:
        axes.imshow(plots.to_grid(images, columns=8)[..., 0], cmap="gray", vmin=0, vmax=255,
                    interpolation="nearest")
        axes.set_title(title, fontsize=10)
        axes.axis("off")
    step = int(model.global_step.numpy())
    figure.suptitle(f"{run.model} on {run.dataset}: {run.config.epochs} epochs, {step} steps, "
                    f"latent {run.config.latent_dim}, {run.config.likelihood} likelihood",
                    fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.94))
    figure.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
