"""Guidance sweep, sampling speed and figure of a trained `vqgpt` from its workdir.

    python -m aigc_zoo.run --model=vqvae --workdir=runs/vqvae-digits
    python -m aigc_zoo.run --model=vqgpt --workdir=runs/vqgpt-digits \
        --set autoencoder=runs/vqvae-digits
    python experiments/plot_vqgpt.py --workdir=runs/vqgpt-digits         # docs/images/

For each classifier-free guidance scale it draws `--samples` images (labels 0..9 cycling) and
measures them with the zoo's sample-quality evaluator (the digits domain classifier's features:
FD against the test split, precision, recall, label agreement); guidance 0 is the unconditional
model, for which it also counts the digits the classifier sees. It times `generate` with and
without the key/value cache, and the default `ddpm`'s DDIM-20 sampler at the same count (an
untrained ddpm: its speed does not depend on its weights). Results go to
experiments/results/vqgpt.md and docs/images/vqgpt.png.
"""

import argparse
import datetime
import pathlib
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aigc_zoo import device, domains, plots, registry, request, trained  # noqa: E402
from aigc_zoo.metrics import sample_quality  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def images_per_second(model, count: int, **options) -> float:
    model.generate(min(count, 8), seed=1, **options).numpy()  # traces
    start = time.perf_counter()
    model.generate(count, seed=0, **options).numpy()
    return count / (time.perf_counter() - start)


def ddpm_ddim20(count: int, image_shape) -> float:
    """images/s of the default ddpm's DDIM sampler with 20 steps (untrained weights)."""
    run = request.Run(model="ddpm", dataset="digits",
                      config=registry.get_model("ddpm").default_config())
    model = run.build_model(image_shape, 10)
    return images_per_second(model, count, steps=20)


def guidance_sweep(run, model, scales, samples: int, data_dir):
    evaluator = domains.sample_quality_evaluator(
        run, sample_quality.Options(num_samples=samples), data_dir=data_dir)
    rows = []
    for scale in scales:
        model.config.guidance = scale  # the sampling default the evaluator's generate uses
        results = evaluator.evaluate(model, seed=0)
        row = {"guidance": scale, **results["model"]}
        if scale == 0.0:  # unconditional: which digits does the classifier see?
            _, probabilities, _ = evaluator.sample_features(model, seed=0)
            counts = np.bincount(np.argmax(probabilities, 1), minlength=10)
            row["digit_counts"] = counts.tolist()
        rows.append(row)
        print(row, flush=True)
    return rows, results["real_vs_real"]


def draw_figure(args, run, model, rows, speeds, machine: str, date: str) -> None:
    """Samples per label and unconditional ones, the guidance sweep and the speeds."""
    figure, axes = plt.subplots(1, 4, figsize=(17, 4.4), dpi=110,
                                gridspec_kw={"width_ratios": [1.25, 1, 1.1, 1]})
    # The figure's conditional samples at the scale whose samples follow their labels best.
    best = max((r for r in rows if r["guidance"] > 0), key=lambda r: r["label_accuracy"])
    labels = np.repeat(np.arange(10), 8)
    guided = model.generate(80, seed=0, labels=labels, guidance=best["guidance"]).numpy()
    grid = plots.to_grid(guided.reshape(10, 8, *guided.shape[1:]).transpose(
        1, 0, 2, 3, 4).reshape(80, *guided.shape[1:]), columns=10)
    axes[0].imshow(grid[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axes[0].set_title(f"columns: labels 0-9, guidance {best['guidance']:g}", fontsize=10)
    unconditional = model.generate(64, seed=0, guidance=0.0).numpy()
    axes[1].imshow(plots.to_grid(unconditional, columns=8)[..., 0], cmap="gray", vmin=0,
                   vmax=255, interpolation="nearest")
    axes[1].set_title("unconditional (guidance 0)", fontsize=10)
    for axis in axes[:2]:
        axis.axis("off")
    conditional = [r for r in rows if r["guidance"] > 0]
    axes[2].plot([r["guidance"] for r in conditional], [r["fd"] for r in conditional], "o-",
                 label="FD")
    axes[2].set(xlabel="guidance scale", ylabel="FD (classifier features)")
    twin = axes[2].twinx()
    twin.plot([r["guidance"] for r in conditional],
              [r["label_accuracy"] for r in conditional], "s--", color="tab:orange",
              label="label agreement")
    twin.set(ylabel="label agreement", ylim=(0, 1))
    axes[2].set_title(f"guidance sweep, {args.samples} samples each", fontsize=10)
    bars = axes[3].bar(list(speeds), list(speeds.values()),
                       color=["tab:blue", "tab:gray", "tab:green"])
    axes[3].bar_label(bars, fmt="%.1f")
    axes[3].set(ylabel="images/s", yscale="log")
    axes[3].set_title(f"sampling speed, {args.speed_samples} samples", fontsize=10)
    axes[3].tick_params(axis="x", labelsize=8)
    step = int(model.global_step.numpy())
    figure.suptitle(f"vqgpt on {run.dataset}: {run.config.layers} blocks of width "
                    f"{run.config.width}, {step} steps; {machine}, {date}", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    figure.savefig(args.output)
    print(f"wrote {args.output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/vqgpt-digits")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--scales", default="0,1,1.5,2,3")
    parser.add_argument("--speed_samples", type=int, default=64)
    parser.add_argument("--output", default=str(ROOT / "docs" / "images" / "vqgpt.png"))
    parser.add_argument("--results", default=str(ROOT / "experiments" / "results" / "vqgpt.md"))
    args = parser.parse_args()

    run, model = trained.restore(args.workdir)
    scales = [float(s) for s in args.scales.split(",")]
    started = time.perf_counter()
    rows, floor = guidance_sweep(run, model, scales, args.samples, args.data_dir)
    sweep_seconds = time.perf_counter() - started
    model.config.guidance = run.config.guidance
    count = args.speed_samples
    speeds = {"vqgpt, cache": images_per_second(model, count, cache=True),
              "vqgpt, no cache": images_per_second(model, count, cache=False),
              "ddpm, DDIM-20": ddpm_ddim20(count, model.image_shape)}
    thousand = 1000 / images_per_second(model, 1000, cache=True)

    machine, date = device.describe()["name"], datetime.date.today().isoformat()
    lines = [f"# vqgpt ({date}, {machine})", "",
             f"`python experiments/plot_vqgpt.py --workdir={args.workdir}` "
             f"(sweep: {sweep_seconds:.0f} s)", "",
             f"Sample quality, {args.samples} samples per scale, labels 0-9 cycling (domain "
             "classifier features; real vs real: FD "
             f"{floor['fd']:.2f}, label agreement {floor.get('label_accuracy', float('nan')):.3f})",
             "", "| guidance | FD | precision | recall | label agreement | digits seen |",
             "| ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        seen = row.get("digit_counts")
        lines.append(f"| {row['guidance']:g} | {row['fd']:.2f} | {row['precision']:.3f} | "
                     f"{row['recall']:.3f} | "
                     + (f"{row['label_accuracy']:.3f}" if row["guidance"] else "(unconditional)")
                     + f" | {seen if seen else ''} |")
    lines += ["", f"Sampling speed, {count} samples per call (after a tracing call):", "",
              "| sampler | images/s |", "| --- | ---: |"]
    lines += [f"| {name} | {value:.2f} |" for name, value in speeds.items()]
    lines += ["", f"1,000 cached samples in one call: {thousand:.1f} s", ""]
    pathlib.Path(args.results).write_text("\n".join(lines))
    print("\n".join(lines))

    draw_figure(args, run, model, rows, speeds, machine, date)


if __name__ == "__main__":
    main()
