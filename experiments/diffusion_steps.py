"""Sample quality of a trained diffusion run against the number of DDIM sampling steps.

    python experiments/diffusion_steps.py runs/ddpm-digits --steps=10,25,50,100 --eval_samples=2000

For each step count the run's latest checkpoint samples with `sample_steps` set to it (DDIM,
eta and spacing from the run's config) and is measured by `aigc_zoo.metrics.sample_quality`, the
code `--mode=eval` uses (one evaluator, so the real features are extracted once and every row
compares with the same real images). Writes `experiments/results/diffusion_steps.md` (a table
under a header with the date, machine and command) and `docs/images/diffusion_steps.png`.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import tensorflow as tf  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

import evaluate_table  # noqa: E402
from aigc_zoo import device, domains, trained  # noqa: E402
from aigc_zoo.metrics import sample_quality  # noqa: E402

RESULTS = ROOT / "experiments" / "results" / "diffusion_steps.md"
FIGURE = ROOT / "docs" / "images" / "diffusion_steps.png"


def plot(rows: list[dict], floor: dict, title: str) -> None:
    steps = [row["steps"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(steps, [row["results"]["model"]["fd"] for row in rows], "o-", label="samples")
    left.axhline(floor["fd"], color="gray", linestyle="--", label="real vs real")
    left.set(xscale="log", xlabel="DDIM steps", ylabel="FD (classifier features) ↓",
             xticks=steps, xticklabels=[str(s) for s in steps])
    left.legend()
    for key, style in (("precision", "o-"), ("recall", "s-"), ("coverage", "^-")):
        right.plot(steps, [row["results"]["model"][key] for row in rows], style, label=key)
    right.set(xscale="log", xlabel="DDIM steps", ylim=(0, 1), xticks=steps,
              xticklabels=[str(s) for s in steps])
    right.legend()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(FIGURE, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    parser.add_argument("--steps", default="10,25,50,100")
    parser.add_argument("--eval_samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()
    run, model = trained.restore(args.workdir)
    evaluator = domains.sample_quality_evaluator(
        run, sample_quality.Options(num_samples=args.eval_samples), data_dir=args.data_dir)
    rows = []
    for steps in (int(s) for s in args.steps.split(",")):
        model.config = dataclasses.replace(model.config, sample_steps=steps)
        results = evaluator.evaluate(model, seed=args.seed)
        print(f"{steps} steps:\n{sample_quality.format_report(results)}", flush=True)
        rows.append({"steps": steps, "results": results})

    first = rows[0]["results"]
    info = first["extractor_info"]
    config = model.config
    machine = (f"{device.cpu_name()} ({platform.machine()}, {os.cpu_count()} CPUs), "
               f"TensorFlow {tf.__version__}")
    command = "python experiments/diffusion_steps.py " + shlex.join(sys.argv[1:])
    lines = [
        f"# `{run.model}` sample quality against DDIM steps", "",
        f"Measured {datetime.date.today().isoformat()} on {machine} by `{command}` "
        f"({time.perf_counter() - START:.0f} s wall). Checkpoint: `{args.workdir}` at step "
        f"{int(model.global_step.numpy())}; DDIM with eta = {config.sample_eta}, "
        f"`{config.sample_spacing}` spacing, EMA weights. {first['num_samples']:,} samples "
        f"against {first['num_real']:,} `{first['split']}` images; extractor {info['name']} "
        f"(test accuracy {info.get('test_accuracy', float('nan')):.4f}). KID ×1; see "
        "docs/evaluation.md. `generate s` is the time to draw the samples "
        f"(batches of {evaluator.options.batch_size}).", "",
        "| DDIM steps | FD ↓ | KID ↓ | IS ↑ | precision ↑ | recall ↑ | density | coverage ↑ "
        "| generate s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    floor = first["real_vs_real"]
    for row in [{"steps": "real vs real", "results": {"model": floor, "seconds": None}}] + rows:
        values = row["results"]["model"]
        seconds = row["results"]["seconds"]
        cells = [str(row["steps"]), evaluate_table._number(values, "fd"),
                 evaluate_table._number(values, "kid", "kid_std", 4),
                 evaluate_table._number(values, "is", "is_std"),
                 *(evaluate_table._number(values, key)
                   for key in ("precision", "recall", "density", "coverage")),
                 "–" if seconds is None else f"{seconds['generate']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    plot(rows, floor, f"{run.model} on {run.dataset}, step {int(model.global_step.numpy())}, "
                      f"{first['num_samples']:,} samples")
    print(text)


if __name__ == "__main__":
    main()
