"""Issue 17's two text-to-image recipes side by side: a trained `ldm` (on a `klae`) and a
trained `dalle` (on a `vqvae`), each already evaluated by `--mode=eval`, in one table.

    python experiments/text_to_image_table.py --ldm=W/ldm --dalle=W/dalle [--samples=64]

From each workdir: the sample quality and prompt agreement its `metrics.json` holds (what
`--mode=eval` measured), the prior's trainable parameters (text encoder included) and the
frozen first stage's weights, the training time of both stages read from their TensorBoard
event files (the first to the last training event: the runner's start-up and data
preparation are not included). Measured here:
sampling images/s of `generate` for the first `--samples` test captions with each model's
default sampling options (XLA as `jit_compile=auto` picks here), after a traced call, the
median of `--rounds` rounds that alternate the two models. Writes
experiments/results/text_to_image_<dataset>.md.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import pathlib
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from aigc_zoo import data, device, text, trained  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
# (column, where in metrics.json, digits shown)
QUALITY = (("FD ↓", ("sample_quality", "model", "fd"), 2),
           ("KID ↓", ("sample_quality", "model", "kid"), 3),
           ("precision", ("sample_quality", "model", "precision"), 3),
           ("recall", ("sample_quality", "model", "recall"), 3),
           ("confidence", ("sample_quality", "model", "confidence"), 3))


def training_seconds(workdir: str) -> float:
    """Seconds from the first to the last event of the workdir's training TensorBoard log."""
    times = []
    for path in glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            times.append(event.wall_time)
    if not times:
        raise SystemExit(f"{workdir} has no TensorBoard training events")
    return max(times) - min(times)


def size(variables) -> int:
    return sum(int(np.prod(variable.shape)) for variable in variables)


def load(workdir: str, samples: int) -> dict:
    metrics_path = pathlib.Path(workdir) / "metrics.json"
    if not metrics_path.exists():  # before the restore, which takes seconds
        raise SystemExit(f"{workdir} has no metrics.json: run --mode=eval there first")
    run, model = trained.restore(workdir)
    metrics = json.loads(metrics_path.read_text())
    tokenizer = text.load_for(workdir, run.config)
    captions = data.captions(run.dataset, "test")[:samples]
    stage = model.autoencoder
    return {"name": run.model, "workdir": workdir, "model": model, "metrics": metrics,
            "tokens": tokenizer.encode(captions), "seconds": [],
            "prior_parameters": size(model.trainable_weights),
            "stage_parameters": size(v for v in stage.weights if "global_step" not in v.path),
            "stage_name": stage.name,
            "train_seconds": training_seconds(workdir),
            "stage_seconds": training_seconds(run.config.autoencoder)}


def measure(entries: list[dict], samples: int, rounds: int) -> None:
    for entry in entries:  # trace (and compile) at the timed size first
        entry["model"].generate(samples, seed=0, tokens=entry["tokens"]).numpy()
    for round_index in range(rounds):
        order = entries if round_index % 2 == 0 else entries[::-1]
        for entry in order:
            start = time.perf_counter()
            entry["model"].generate(samples, seed=round_index + 1, tokens=entry["tokens"]).numpy()
            entry["seconds"].append(time.perf_counter() - start)


def _get(metrics: dict, path: tuple[str, ...]) -> float:
    for key in path:
        metrics = metrics[key]
    return float(metrics)


def agreement_rows(entries: list[dict]) -> list[str]:
    """One row per set, group and attribute: the probe on real images, then each model."""
    first = entries[0]["metrics"]["prompt_agreement"]
    real = first["probe"]["test_scores"]
    rows = []
    for name in ("test_captions", "held_out"):
        for group, block in (first.get(name) or {}).items():
            if not block["count"]:
                continue
            keys = [("all attributes", None)] + [(attribute, attribute)
                                                 for attribute in block["per_attribute"]]
            for label, attribute in keys:
                cells = [_share(real[group], attribute)]
                for entry in entries:
                    cells.append(_share(entry["metrics"]["prompt_agreement"][name][group],
                                        attribute, bold=attribute is None))
                where = f"{name.replace('_', ' ')} / {group} ({block['count']})"
                rows.append(f"| {where}: {label} | " + " | ".join(cells) + " |")
    return rows


def _share(block: dict, attribute: str | None, bold: bool = False) -> str:
    value = block["all_attributes"] if attribute is None else block["per_attribute"][attribute]
    text = f"{100 * value:.1f}%"
    return f"**{text}**" if bold else text


def report(entries: list[dict], samples: int, rounds: int, command: str) -> str:
    machine = device.describe()["name"]
    date = datetime.date.today().isoformat()
    first = entries[0]["metrics"]
    header = (["model"] + [name for name, _, _ in QUALITY]
              + ["samples/s", "prior parameters", "first stage weights (frozen)",
                 "training minutes (prior + first stage)"])
    lines = [f"# Text to image on `{first['dataset']}`: `ldm` and `dalle` side by side "
             f"({machine}, {platform.machine()}, {date})", "",
             f"`{command}`", "",
             "Quality and prompt agreement: each workdir's `metrics.json` (`--mode=eval`, "
             f"{first['sample_quality']['num_samples']} samples for the first test captions, "
             "the domain classifier's features). Samples/s: measured now, "
             f"`generate({samples})` for the first {samples} test captions with the model's "
             f"default sampling options, median of {rounds} alternating rounds after a traced "
             "call. Training minutes: first to last TensorBoard training event of each stage.",
             "", "| " + " | ".join(header) + " |",
             "| --- |" + " ---: |" * (len(header) - 1)]
    floor = [f"{_get(first, ('sample_quality', 'real_vs_real') + path[2:]):.{digits}f}"
             for _, path, digits in QUALITY]
    lines.append("| real vs real | " + " | ".join(floor) + " | | | | |")
    for entry in entries:
        rate = samples / float(np.median(entry["seconds"]))
        cells = ([f"{_get(entry['metrics'], path):.{digits}f}" for _, path, digits in QUALITY]
                 + [f"{rate:.1f}", f"{entry['prior_parameters']:,}",
                    f"{entry['stage_parameters']:,} ({entry['stage_name']})",
                    f"{entry['train_seconds'] / 60:.1f} + {entry['stage_seconds'] / 60:.1f}"])
        lines.append(f"| `{entry['name']}` | " + " | ".join(cells) + " |")
    held_out = ", ".join(first["prompt_agreement"]["held_out_combinations"]) or "none"
    lines += ["", f"Prompt agreement (share of samples whose probed attributes match their "
              f"caption; in brackets the captions; held out of training: {held_out}):", "",
              "| captions: attribute | the probe on real test images | "
              + " | ".join(f"`{entry['name']}`" for entry in entries) + " |",
              "| --- |" + " ---: |" * (1 + len(entries))]
    lines += agreement_rows(entries)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ldm", required=True, help="a trained, evaluated text ldm workdir")
    parser.add_argument("--dalle", required=True, help="a trained, evaluated dalle workdir")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default=None,
                        help="default: experiments/results/text_to_image_<dataset>.md")
    args = parser.parse_args()
    entries = [load(args.ldm, args.samples), load(args.dalle, args.samples)]
    if len({entry["metrics"]["dataset"] for entry in entries}) != 1:
        raise SystemExit("the two workdirs were evaluated on different datasets")
    measure(entries, args.samples, args.rounds)
    command = ("python experiments/text_to_image_table.py --ldm=<ldm workdir> "
               f"--dalle=<dalle workdir> --samples={args.samples} --rounds={args.rounds}")
    result = report(entries, args.samples, args.rounds, command)
    dataset = entries[0]["metrics"]["dataset"]
    output = args.output or str(ROOT / f"experiments/results/text_to_image_{dataset}.md")
    pathlib.Path(output).write_text(result)
    print(result)


if __name__ == "__main__":
    main()
