"""Sample-quality tables: evaluates trained workdirs and writes one markdown table per dataset.

    python experiments/evaluate_table.py runs/vae-digits runs/cvae-digits --seeds=0,1

Each workdir's latest checkpoint is evaluated with `aigc_zoo.metrics.sample_quality` (the same
code as `--mode=eval`; the model's own likelihood metrics are not run, and nothing is written
into the workdirs) once per seed. The table for a dataset goes to
`experiments/results/<prefix><dataset>.md` (`--prefix`, default empty) under a header with the
date, the machine, the command and the extractor (with the domain classifier's test
accuracy), and shows:

- a real-vs-real row per seed: train-split images in place of samples, the floor;
- a row per workdir and seed, with the seconds that evaluation took (real features, sampling,
  sample features and metrics; not TensorFlow's start-up nor loading the classifier);
- for a workdir evaluated with two or more seeds, how far the first two seeds' numbers are
  apart next to the spread each metric reports (KID over subsets, IS over splits).
"""

import time

START = time.perf_counter()  # the reported wall time includes importing TensorFlow

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
import tensorflow as tf  # noqa: E402

from aigc_zoo import device, domains, trained  # noqa: E402
from aigc_zoo.metrics import sample_quality  # noqa: E402

RESULTS = ROOT / "experiments" / "results"


def _number(row: dict, key: str, spread: str | None = None, digits: int = 3) -> str:
    if key not in row:
        return "–"
    text = f"{row[key]:.{digits}f}"
    return text + (f" ± {row[spread]:.{digits}f}" if spread and spread in row else "")


def table_row(name: str, step: str, seed: int, count: int, row: dict, seconds: str) -> str:
    cells = [name, step, str(seed), f"{count:,}", _number(row, "fd"),
             _number(row, "kid", "kid_std", 4), _number(row, "is", "is_std"),
             _number(row, "precision"), _number(row, "recall"), _number(row, "density"),
             _number(row, "coverage"), _number(row, "confidence"),
             _number(row, "class_balance", digits=2), _number(row, "label_accuracy", digits=4),
             seconds]
    return "| " + " | ".join(cells) + " |"


def seed_comparison(name: str, first: dict, second: dict) -> list[str]:
    a, b = first["model"], second["model"]
    lines = [f"| {name} | FD | {a['fd']:.4f} | {b['fd']:.4f} | {abs(a['fd'] - b['fd']):.4f} "
             "| (none reported) |"]
    for key, spread in (("kid", "kid_std"), ("is", "is_std")):
        if key in a:
            difference = abs(a[key] - b[key])
            verdict = "smaller" if difference < min(a[spread], b[spread]) else "NOT smaller"
            lines.append(f"| {name} | {key.upper()} | {a[key]:.4f} | {b[key]:.4f} | "
                         f"{difference:.4f} | {a[spread]:.4f} / {b[spread]:.4f} ({verdict}) |")
    return lines


def write_table(dataset: str, entries: list[dict], args: argparse.Namespace,
                wall_seconds: float) -> str:
    first = entries[0]["results"]
    info = first["extractor_info"]
    extractor = f"{info['name']} features ({info['feature_dim']}-D)"
    if "test_accuracy" in info:
        extractor += (f"; domain classifier test accuracy {info['test_accuracy']:.4f} on the "
                      f"{info['test_split']!r} split, weights {info['path']}")
    machine = (f"{device.cpu_name()} ({platform.machine()}, {os.cpu_count()} CPUs, "
               f"{platform.system()}), TensorFlow {tf.__version__}")
    command = "python experiments/evaluate_table.py " + shlex.join(sys.argv[1:])
    date = datetime.date.today().isoformat()
    lines = [
        f"# Sample quality on `{dataset}`", "",
        f"Measured {date} on {machine} by `{command}` ({wall_seconds:.0f} s wall, "
        "including TensorFlow's start-up and loading every checkpoint).", "",
        f"Extractor: {extractor}. Real images: {first['num_real']:,} of the "
        f"{first['split']!r} split (a fixed random subset when the split is larger, the same "
        f"for every seed); the real-vs-real rows put {first['num_reference']:,} "
        f"{first['reference_split']!r} images in place of samples, so only KID's subsets change "
        "with the seed there. KID is ×1 (not ×1000), ± its standard deviation over "
        f"{sample_quality.KID_SUBSETS} subsets of up to {sample_quality.KID_SUBSET_SIZE}; IS ± "
        f"its standard deviation over {sample_quality.IS_SPLITS} splits; precision / recall "
        f"with k = {sample_quality.PRECISION_RECALL_K}, density / coverage with k = "
        f"{sample_quality.DENSITY_COVERAGE_K}. See docs/evaluation.md.", "",
        "| model | step | seed | samples | FD ↓ | KID ↓ | IS ↑ | precision ↑ | recall ↑ | "
        "density | coverage ↑ | confidence ↑ | class balance ↓ | label accuracy ↑ | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
        "| --- |",
    ]
    floors = {}
    for entry in entries:
        floors.setdefault(entry["seed"], entry["results"])
    for seed, results in floors.items():
        lines.append(table_row(f"real vs real ({results['reference_split']} vs "
                               f"{results['split']})", "–", seed, results["num_reference"],
                               results["real_vs_real"], "–"))
    for entry in entries:
        results = entry["results"]
        lines.append(table_row(f"{entry['model']} (`{entry['workdir']}`)", str(entry["step"]),
                               entry["seed"], results["num_samples"], results["model"],
                               f"{results['seconds']['total']:.1f}"))
    by_workdir = collections.defaultdict(list)
    for entry in entries:
        by_workdir[entry["workdir"]].append(entry["results"])
    comparisons = [line for workdir, runs in by_workdir.items() if len(runs) >= 2
                   for line in seed_comparison(f"`{workdir}`", runs[0], runs[1])]
    if comparisons:
        lines += ["", f"Seed to seed (seeds {args.seeds[0]} and {args.seeds[1]}): the "
                  "difference between two evaluations of one checkpoint against the spread "
                  "each metric reports.", "",
                  "| workdir | metric | first seed | second seed | difference | reported std |",
                  "| --- | --- | --- | --- | --- | --- |", *comparisons]
    text = "\n".join(lines) + "\n"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset).strip("_")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.prefix}{name}.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", help="trained run folders")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1")
    parser.add_argument("--eval_samples", type=int, default=10_000)
    parser.add_argument("--extractor", default="classifier",
                        choices=sample_quality.EXTRACTORS)
    parser.add_argument("--inception_weights", default=None)
    parser.add_argument("--classifier_dir", default=None)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--prefix", default="", help="prefix of the results file name, e.g. "
                        "gans_ writes experiments/results/gans_digits.md")
    args = parser.parse_args()
    args.seeds = [int(seed) for seed in args.seeds.split(",")]
    options = sample_quality.Options(num_samples=args.eval_samples, extractor=args.extractor,
                                     inception_weights=args.inception_weights,
                                     classifier_dir=args.classifier_dir)

    by_dataset = collections.defaultdict(list)
    for workdir in args.workdirs:
        run, model = trained.restore(workdir)
        for seed in args.seeds:
            # A fresh evaluator per evaluation, so each row's seconds include its real features.
            evaluator = domains.sample_quality_evaluator(run, options, data_dir=args.data_dir)
            results = evaluator.evaluate(model, seed=seed)
            print(f"{workdir} seed {seed}:\n{sample_quality.format_report(results)}", flush=True)
            by_dataset[run.dataset].append({
                "workdir": workdir, "model": run.model, "step": int(model.global_step.numpy()),
                "seed": seed, "results": results})
    wall_seconds = time.perf_counter() - START
    for dataset, entries in by_dataset.items():
        print(write_table(dataset, entries, args, wall_seconds))


if __name__ == "__main__":
    main()
