"""Figure of a trained PixelCNN from its workdir: samples, the training NLL curve (read from
its TensorBoard events), and sampling time with and without the sampler's caches, measured here.

    python -m aigc_zoo.run --model=pixelcnn --workdir=runs/pixelcnn-digits  # the default run
    python experiments/plot_pixelcnn.py --workdir=runs/pixelcnn-digits    # docs/images/

It also times 1,000 cached samples in one `generate` call (after a warm-up call that traces) and
writes the timings to experiments/results/pixelcnn_sampling.md.
"""

import argparse
import datetime
import pathlib
import platform
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aigc_zoo import device, plots, trained  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def timed(model, count: int, *, cache: bool) -> float:
    model.generate(min(count, 8), seed=1, cache=cache).numpy()  # traces
    start = time.perf_counter()
    model.generate(count, seed=0, cache=cache).numpy()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/pixelcnn-digits")
    parser.add_argument("--output", default=str(ROOT / "docs" / "images" / "pixelcnn.png"))
    parser.add_argument("--results", default=str(ROOT / "experiments" / "results"
                                                 / "pixelcnn_sampling.md"))
    parser.add_argument("--uncached_samples", type=int, default=8)
    args = parser.parse_args()

    run, model = trained.restore(args.workdir)
    samples = model.generate(64, seed=0).numpy()
    cached_1000 = timed(model, 1000, cache=True)
    count = args.uncached_samples
    cached, uncached = timed(model, count, cache=True), timed(model, count, cache=False)
    machine = device.describe()["name"]
    date = datetime.date.today().isoformat()
    lines = [
        f"# PixelCNN sampling time ({run.model}, {date}, {machine}, {platform.machine()})",
        "",
        f"`python experiments/plot_pixelcnn.py --workdir={args.workdir}`",
        "",
        "| samples | sampler | seconds | images/s |",
        "| ---: | --- | ---: | ---: |",
        f"| 1000 | cached | {cached_1000:.1f} | {1000 / cached_1000:.1f} |",
        f"| {count} | cached | {cached:.2f} | {count / cached:.1f} |",
        f"| {count} | uncached (whole network per pixel) | {uncached:.2f} | "
        f"{count / uncached:.2f} |",
        "",
    ]
    pathlib.Path(args.results).write_text("\n".join(lines))
    print("\n".join(lines))

    figure, axes = plt.subplots(1, 3, figsize=(13, 4.2), dpi=110,
                                gridspec_kw={"width_ratios": [1, 1.2, 1]})
    axes[0].imshow(plots.to_grid(samples, columns=8)[..., 0], cmap="gray", vmin=0, vmax=255,
                   interpolation="nearest")
    axes[0].set_title("samples (seed 0)", fontsize=10)
    axes[0].axis("off")
    steps, loss = plots.scalar_curve(args.workdir, "train/loss")
    axes[1].plot(steps, loss)
    axes[1].set(xlabel="train step", ylabel="NLL (nats per image)",
                ylim=(min(loss) * 0.95, np.percentile(loss, 95)))
    axes[1].set_title("training NLL (running mean over the epoch)", fontsize=10)
    bars = axes[2].bar(["cached", "uncached"], [count / cached, count / uncached],
                       color=["tab:blue", "tab:gray"])
    axes[2].bar_label(bars, fmt="%.1f")
    axes[2].set(ylabel="images/s", yscale="log")
    axes[2].set_title(f"sampling speed, {count} samples\n(1,000 cached: {cached_1000:.0f} s)",
                      fontsize=10)
    step = int(model.global_step.numpy())
    figure.suptitle(f"{run.model} on {run.dataset} ({run.config.likelihood}): "
                    f"{run.config.epochs} epoch(s), {step} steps, {run.config.layers} gated "
                    f"layers of {run.config.filters} channels; {machine}, {date}", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    figure.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
