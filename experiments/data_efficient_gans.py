"""Data-efficient GANs: FD against data size without augmentation, with DiffAugment and with ADA.

    python experiments/data_efficient_gans.py                       # the full grid (hours)
    python experiments/data_efficient_gans.py --models=dcgan --fractions=1,100 --seeds=0 \\
        --images=50000                                              # a reduced run

Trains each model on `train[:F%]` of `digits` for each fraction F, with `augment=none`,
`diffaugment` and `ada`, once per seed, all for the same number of real images seen
(`--images`, as epochs x steps_per_epoch x batch_size; not epochs, which would give the small
splits fewer steps). Each run is then measured with the zoo's sample-quality evaluator (the
code of `--mode=eval`): FD, KID, precision and recall of `--eval_samples` samples against the
test split. Every run is measured with the same features, the domain classifier of the whole
train split, so the numbers compare across data sizes. Results go to
experiments/results/data_efficient_gans.md (mean and spread over seeds, and every run) and
docs/images/data_efficient_gans.png (FD against data size). A rerun resumes finished runs
from their workdirs under `--workroot` instead of training them again.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import pathlib  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import aigc_zoo  # noqa: E402
from aigc_zoo import device, domains, registry, trained  # noqa: E402
from aigc_zoo.metrics import sample_quality  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
METRICS = ("fd", "kid", "precision", "recall")
FULL = {"models": "dcgan,sngan", "fractions": "1,10,100", "modes": "none,diffaugment,ada",
        "seeds": "0,1,2"}


def train_and_measure(model: str, fraction: int, mode: str, seed: int,
                      args: argparse.Namespace) -> dict:
    """Train one run (or resume it when finished) and measure its samples."""
    batch_size = registry.get_model(model).default_config("digits").batch_size
    steps = max(1, args.images // batch_size)
    steps_per_epoch = min(args.steps_per_epoch, steps)
    epochs = max(1, steps // steps_per_epoch)
    workdir = pathlib.Path(args.workroot) / f"{model}-{fraction}pct-{mode}-seed{seed}"
    started = time.perf_counter()
    aigc_zoo.train(model, dataset="digits", train_split=f"train[:{fraction}%]",
                   workdir=str(workdir), epochs=epochs, steps_per_epoch=steps_per_epoch,
                   seed=seed, data_dir=args.data_dir, augment=mode)
    train_seconds = time.perf_counter() - started
    run, trained_model = trained.restore(str(workdir))
    # The whole train split's classifier and reference for every run, whatever it trained on.
    evaluator = domains.sample_quality_evaluator(
        dataclasses.replace(run, train_split="train"),
        sample_quality.Options(num_samples=args.eval_samples), data_dir=args.data_dir)
    results = evaluator.evaluate(trained_model, seed=0)["model"]
    row = {"model": model, "fraction": fraction, "mode": mode, "seed": seed,
           "images": epochs * steps_per_epoch * batch_size,
           "steps": int(trained_model.global_step.numpy()), "train_seconds": train_seconds,
           **{key: float(results[key]) for key in METRICS}}
    if mode == "ada":
        row["ada_p"] = float(trained_model.ada_p.numpy())
    print(row, flush=True)
    return row


def _summary(rows: list[dict]) -> list[str]:
    lines = ["| model | data | augment | runs | FD ↓ | KID ↓ | precision ↑ | recall ↑ | "
             "final p |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["fraction"], row["mode"]), []).append(row)
    for (model, fraction, mode), group in groups.items():
        cells = [model, f"{fraction}%", mode, str(len(group))]
        for key in METRICS:
            values = np.array([r[key] for r in group])
            spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.3f}{spread}")
        cells.append(", ".join(f"{r['ada_p']:.2f}" for r in group) if mode == "ada" else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_results(rows: list[dict], args: argparse.Namespace) -> None:
    machine, date = device.describe()["name"], datetime.date.today().isoformat()
    command = "python experiments/data_efficient_gans.py " + shlex.join(sys.argv[1:])
    reduced = any(getattr(args, name) != value for name, value in FULL.items())
    lines = [f"# Data-efficient GANs on digits ({date})", "",
             f"Measured on {machine} by `{command}` ({time.perf_counter() - START:.0f} s wall).",
             "",
             *(["**A reduced run**, not the full grid (models " + FULL["models"] + ", data "
                + FULL["fractions"] + "%, augment " + FULL["modes"] + ", seeds "
                + FULL["seeds"] + "): read it as a smoke test, not as a result.", ""]
               if reduced else []),
             f"Each run saw {rows[0]['images']:,} real images (with repetition) whatever its "
             f"data size; {args.eval_samples:,} samples against the test split, the digits "
             "domain classifier's features (trained on the whole train split). KID is ×1; "
             "± is the standard deviation over seeds.", "", *_summary(rows), "",
             "Every run:", "",
             "| model | data | augment | seed | steps | train s | FD | KID | precision | "
             "recall |", "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['fraction']}% | {r['mode']} | {r['seed']} | "
                     f"{r['steps']} | {r['train_seconds']:.0f} | {r['fd']:.3f} | "
                     f"{r['kid']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} |")
    path = pathlib.Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    title = (f"{'reduced run; ' if reduced else ''}{rows[0]['images']:,} images seen per run; "
             f"{machine}, {date}")
    draw_figure(rows, args.figure, title=title)


def draw_figure(rows: list[dict], path: str, *, title: str) -> None:
    """FD (mean over seeds, bars: min to max) against the share of the train split."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    series: dict[tuple, dict[int, list[float]]] = {}
    for row in rows:
        series.setdefault((row["model"], row["mode"]), {}).setdefault(
            row["fraction"], []).append(row["fd"])
    for (model, mode), points in sorted(series.items()):
        fractions = sorted(points)
        means = [np.mean(points[f]) for f in fractions]
        low = [m - min(points[f]) for m, f in zip(means, fractions)]
        high = [max(points[f]) - m for m, f in zip(means, fractions)]
        axis.errorbar(fractions, means, yerr=[low, high], marker="o", capsize=3,
                      linestyle="-" if model == "dcgan" else "--", label=f"{model}, {mode}")
    axis.set_xscale("log")
    axis.set_xlabel("share of the digits train split (%)")
    axis.set_ylabel("FD ↓ (domain classifier features)")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in FULL.items():
        parser.add_argument(f"--{name}", default=value, help=f"comma list (default {value})")
    parser.add_argument("--images", type=int, default=200_000,
                        help="real images seen per run (steps = images / batch size)")
    parser.add_argument("--steps_per_epoch", type=int, default=200)
    parser.add_argument("--eval_samples", type=int, default=10_000)
    parser.add_argument("--workroot", default="runs/data_efficient")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--results",
                        default=str(ROOT / "experiments" / "results" / "data_efficient_gans.md"))
    parser.add_argument("--figure", default=str(ROOT / "docs" / "images" /
                                                "data_efficient_gans.png"))
    args = parser.parse_args()
    rows = [train_and_measure(model, int(fraction), mode, int(seed), args)
            for model in args.models.split(",") for fraction in args.fractions.split(",")
            for mode in args.modes.split(",") for seed in args.seeds.split(",")]
    write_results(rows, args)


if __name__ == "__main__":
    main()
