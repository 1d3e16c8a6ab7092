"""Sample quality of a trained diffusion run against sampler and number of sampling steps.

    python experiments/diffusion_steps.py runs/ddpm-digits --samplers=ddim,dpmpp_2m,ddpm \
        --steps=5,10,15,20,50 --eval_samples=1000

For each sampler and step count the run's latest checkpoint samples with `generate(...,
sampler=..., steps=...)` (eta and spacing from the run's config) and is measured by
`aigc_zoo.metrics.sample_quality`, the code `--mode=eval` uses (one evaluator, so the real
features are extracted once and every row compares with the same real images and the same
x_T noise). Writes `experiments/results/diffusion_steps.md` (a table under a header with the
date, machine and command) and `docs/images/diffusion_steps.png`.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402
import datetime  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

import evaluate_table  # noqa: E402
from aigc_zoo import device, domains, trained  # noqa: E402
from aigc_zoo.metrics import sample_quality  # noqa: E402

RESULTS = ROOT / "experiments" / "results" / "diffusion_steps.md"
FIGURE = ROOT / "docs" / "images" / "diffusion_steps.png"


SAMPLER_NAMES = {"ddim": "DDIM (eta 0)", "dpmpp_2m": "DPM-Solver++(2M)", "ddpm": "DDPM ancestral"}


class _Sampling:
    """The model as the evaluator sees it, drawing with these sampling options."""

    def __init__(self, model, **options):
        self.model, self.options = model, options
        self.conditional, self.num_classes = model.conditional, model.num_classes

    def generate(self, count, *, seed, **inputs):
        return self.model.generate(count, seed=seed, **inputs, **self.options)


def plot(rows: list[dict], floor: dict, title: str) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for sampler in dict.fromkeys(row["sampler"] for row in rows):
        chosen = [row for row in rows if row["sampler"] == sampler]
        steps = [row["steps"] for row in chosen]
        name = SAMPLER_NAMES.get(sampler, sampler)
        left.plot(steps, [row["results"]["model"]["fd"] for row in chosen], "o-", label=name)
        right.plot(steps, [row["results"]["model"]["precision"] for row in chosen], "o-",
                   label=f"{name}: precision")
        right.plot(steps, [row["results"]["model"]["recall"] for row in chosen], "s--",
                   color=right.lines[-1].get_color(), label=f"{name}: recall")
    steps = sorted({row["steps"] for row in rows})
    left.axhline(floor["fd"], color="gray", linestyle=":", label="real vs real")
    left.set(xscale="log", yscale="log", xlabel="network evaluations per sample",
             ylabel="FD (classifier features) ↓", xticks=steps,
             xticklabels=[str(s) for s in steps])
    left.legend(fontsize=8)
    right.set(xscale="log", xlabel="network evaluations per sample", ylim=(0, 1),
              xticks=steps, xticklabels=[str(s) for s in steps])
    right.legend(fontsize=7)
    for axis in (left, right):  # the step counts alone on a log axis
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(FIGURE, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    parser.add_argument("--samplers", default="ddim,dpmpp_2m,ddpm")
    parser.add_argument("--steps", default="5,10,15,20,50")
    parser.add_argument("--eval_samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()
    run, model = trained.restore(args.workdir)
    evaluator = domains.sample_quality_evaluator(
        run, sample_quality.Options(num_samples=args.eval_samples), data_dir=args.data_dir)
    rows = []
    for sampler in args.samplers.split(","):
        for steps in (int(s) for s in args.steps.split(",")):
            results = evaluator.evaluate(_Sampling(model, sampler=sampler, steps=steps),
                                         seed=args.seed)
            print(f"{sampler}, {steps} steps:\n{sample_quality.format_report(results)}",
                  flush=True)
            rows.append({"sampler": sampler, "steps": steps, "results": results})

    first = rows[0]["results"]
    info = first["extractor_info"]
    config = model.config
    machine = (f"{device.cpu_name()} ({platform.machine()}, {os.cpu_count()} CPUs), "
               f"TensorFlow {tf.__version__}")
    command = "python experiments/diffusion_steps.py " + shlex.join(sys.argv[1:])
    lines = [
        f"# `{run.model}` sample quality against sampler and steps", "",
        f"Measured {datetime.date.today().isoformat()} on {machine} by `{command}` "
        f"({time.perf_counter() - START:.0f} s wall). Checkpoint: `{args.workdir}` at step "
        f"{int(model.global_step.numpy())}; DDIM with eta = {config.sample_eta}, "
        f"`{config.sample_spacing}` spacing for every sampler, EMA "
        f"weights. {first['num_samples']:,} samples "
        f"against {first['num_real']:,} `{first['split']}` images; extractor {info['name']} "
        f"(test accuracy {info.get('test_accuracy', float('nan')):.4f}). KID ×1; see "
        "docs/evaluation.md. `generate s` is the time to draw the samples "
        f"(batches of {evaluator.options.batch_size}).", "",
        "| sampler | steps | FD ↓ | KID ↓ | IS ↑ | precision ↑ | recall ↑ | density "
        "| coverage ↑ | generate s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    floor = first["real_vs_real"]
    for row in [{"sampler": "real vs real", "steps": "–",
                 "results": {"model": floor, "seconds": None}}] + rows:
        values = row["results"]["model"]
        seconds = row["results"]["seconds"]
        cells = [SAMPLER_NAMES.get(row["sampler"], row["sampler"]), str(row["steps"]),
                 evaluate_table._number(values, "fd"),
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
