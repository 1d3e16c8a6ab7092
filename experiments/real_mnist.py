"""The default models on real MNIST digits next to the embedded `digits`: one table.

    python experiments/real_mnist.py                                   # every model below
    python experiments/real_mnist.py --models=dcgan,ddpm --mnist_dir=~/mnist

Each model trains with its default config twice: on `digits` (`train`; measured against
`test`) and on real MNIST digits, 9,000 / 1,000 of the IDX test files in `--mnist_dir`
(`idx:<dir>`, `test[:9000]` / `test[9000:]`: the shared copy holds only MNIST's test files).
Both runs take the same number of train steps, the digits run's (`--steps_per_epoch` of the
MNIST run set to the digits run's epoch length), so a model gets the training time of its
default run on either dataset. Each run is then measured with the zoo's sample-quality
evaluator (the code of `--mode=eval`, its own dataset's domain classifier): `--eval_samples`
samples (default 1,000, as many as MNIST's held-out images) against the eval split, next to the
real-vs-real floor at the same count, with FD, KID, precision/recall, the classifier's mean
confidence on the samples, class balance (the most frequent predicted class over the rarest)
and, for conditional models, label accuracy.

    python experiments/real_mnist.py --models=ddpm --set sample_eta=1.0
    python experiments/real_mnist.py --models=dcgan --train_set r1_gamma=1.0

Results: experiments/results/real_mnist.md (the table) and .json (every number, and the date,
machine, commit and command of each row). A rerun replaces the rows it measures again and keeps
the others, so variants stand beside the defaults: measured with `--set` (sampling fields
changed at evaluation, as `--mode=eval --set` does) or trained with `--train_set` (config
fields, each variant in its own workdir, for the same steps as the default digits run).
docs/images/real_mnist_samples.png shows samples of every run of an invocation without `--set`
or `--train_set`, digits beside MNIST. Runs live under
`--workroot`; a run whose training time is recorded in `<workroot>/train_seconds.json` is not
trained again (delete its entry or its workdir to retrain), so a rerun only measures. A run
trained elsewhere can be copied in with its entry set to null (its time shows as "–").
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import aigc_zoo  # noqa: E402
from aigc_zoo import device, domains, files, plots, registry, trained  # noqa: E402
from aigc_zoo.metrics import sample_quality  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The models that train from images alone (no first stage, no captions, no paired task).
MODELS = ("vae", "cvae", "dcgan", "cgan", "wgan_gp", "sngan", "ddpm", "cddpm", "pixelcnn",
          "cpixelcnn")
DATASETS = ("digits", "mnist")
COLUMNS = (("fd", "FD ↓", 3), ("kid", "KID ↓", 4), ("precision", "precision ↑", 3),
           ("recall", "recall ↑", 3), ("confidence", "confidence ↑", 3),
           ("class_balance", "class balance ↓", 2), ("label_accuracy", "label accuracy ↑", 3))
SHOWN_SAMPLES = 10
RESULTS_JSON = ROOT / "experiments" / "results" / "real_mnist.json"


def data_flags(dataset: str, args: argparse.Namespace) -> dict:
    if dataset == "digits":
        return {"dataset": "digits", "train_split": "train", "eval_split": "test"}
    return {"dataset": f"idx:{pathlib.Path(args.mnist_dir).expanduser().resolve()}",
            "train_split": "test[:9000]", "eval_split": "test[9000:]"}


def train_once(model: str, dataset: str, args: argparse.Namespace, times: dict,
               steps_per_epoch: int | None) -> pathlib.Path:
    """The run's workdir, trained now unless `times` records that it was."""
    changes = dict(change.split("=", 1) for change in args.train_set)
    suffix = "".join(f"-{name}={value}" for name, value in changes.items())
    workdir = pathlib.Path(args.workroot) / f"{model}-{dataset}{suffix}"
    if str(workdir) not in times:
        started = time.perf_counter()
        aigc_zoo.train(model, workdir=str(workdir), steps_per_epoch=steps_per_epoch,
                       data_dir=args.data_dir, config=args.config, **data_flags(dataset, args),
                       **changes)
        times[str(workdir)] = time.perf_counter() - started
        files.write_json(str(pathlib.Path(args.workroot) / "train_seconds.json"), times)
    return workdir


def digits_epoch_length(model: str, args: argparse.Namespace) -> int:
    """Train steps per epoch of the model's digits run: its record when it exists, else what
    the default config gives on digits' 60,000 train images."""
    record = pathlib.Path(args.workroot) / f"{model}-digits" / "config.json"
    if record.exists():
        return json.loads(record.read_text())["epoch_steps"]
    config = registry.get_model(model).default_config("digits")
    return config.steps_per_epoch or 60_000 // config.batch_size


def measure(workdir: pathlib.Path, args: argparse.Namespace) -> tuple[dict, np.ndarray]:
    """The sample-quality results of the workdir's last checkpoint, and a few samples."""
    run, model = trained.restore(str(workdir), overrides=args.set)
    options = sample_quality.Options(num_samples=args.eval_samples)
    results = domains.sample_quality_evaluator(run, options, data_dir=args.data_dir).evaluate(
        model, seed=args.seed)
    inputs = ({"labels": np.arange(SHOWN_SAMPLES, dtype=np.int32) % model.num_classes}
              if model.conditional else {})
    shown = np.asarray(model.generate(SHOWN_SAMPLES, seed=args.seed, **inputs))
    results["steps"] = int(model.global_step.numpy())
    return results, shown


def _minutes(seconds: float | None) -> str:
    # None: a run trained elsewhere and put under --workroot by hand, its time not recorded.
    return "–" if seconds is None else f"{seconds / 60:.1f}"


def _cell(row: dict, key: str, digits: int) -> str:
    return f"{row[key]:.{digits}f}" if key in row else "–"


def merged_runs(entries: list[dict], provenance: dict) -> list[dict]:
    """The runs of `RESULTS_JSON` with this invocation's rows in place of those they measure
    again (same name and dataset), each row with the invocation that measured it."""
    old = json.loads(RESULTS_JSON.read_text())["runs"] if RESULTS_JSON.exists() else []
    new = [{**{key: value for key, value in entry.items() if key != "shown"}, **provenance}
           for entry in entries]
    measured = {(run["name"], run["dataset"]) for run in new}
    runs = [run for run in old if (run["name"], run["dataset"]) not in measured] + new
    return sorted(runs, key=lambda run: (MODELS.index(run["model"]), run["name"] != run["model"],
                                         run["name"], DATASETS.index(run["dataset"])))


def write_results(entries: list[dict], args: argparse.Namespace) -> str:
    provenance = {"date": datetime.date.today().isoformat(),
                  "machine": device.describe()["name"],
                  "commit": device.git_commit() or "unknown",
                  "command": "python experiments/real_mnist.py " + shlex.join(sys.argv[1:])}
    runs = merged_runs(entries, provenance)
    header = ("| model | data | steps | train min | samples | " + " | ".join(c[1] for c in COLUMNS)
              + " | FD / floor |")
    lines = ["# The default models on digits and on real MNIST digits", "",
             "Samples of each run (seed 0, as many as the `samples` column says) against the "
             "eval split, with that dataset's domain classifier; the floor rows put as many "
             "train images in place of samples, and FD / floor divides by the run's own floor. "
             "digits: `train` / `test`; MNIST: `test[:9000]` / `test[9000:]` of the IDX files, "
             "trained for as many steps as the digits run. KID is ×1. Class balance: the most "
             "frequent predicted class's count over the rarest's (a class never predicted "
             "counts as one). A name with `name=value` was trained (`--train_set`) or measured "
             "(`--set`, sampling fields) with that field changed; its command below says which. "
             "\"–\" train min: a run trained before and copied in. Binary samples (pixelcnn, "
             "cpixelcnn) are measured against real images binarised by a fixed draw, and "
             "divided by the binarised floor. See docs/evaluation.md; "
             "every row's numbers and command are in real_mnist.json.", "", header,
             "| --- | --- | ---: | ---: | ---: | " + "---: | " * len(COLUMNS) + "---: |"]
    floors = {}
    for run in runs:  # binary samples (pixelcnn's) are measured against binarised digits
        binary = run["results"].get("binarised_reals", False)
        floors.setdefault((run["dataset"], binary), run["results"]["real_vs_real"])
    for (dataset, binary), floor in sorted(
            floors.items(), key=lambda item: (DATASETS.index(item[0][0]), item[0][1])):
        name = "binarised real vs real" if binary else "real vs real"
        lines.append(f"| {name} | {dataset} | – | – | – | "
                     + " | ".join(_cell(floor, key, digits) for key, _, digits in COLUMNS)
                     + " | 1.00 |")
    for run in runs:
        row, floor = run["results"]["model"], run["results"]["real_vs_real"]
        lines.append(f"| {run['name']} | {run['dataset']} | {run['results']['steps']} | "
                     f"{_minutes(run['train_seconds'])} | {run['results']['num_samples']:,} | "
                     + " | ".join(_cell(row, key, digits) for key, _, digits in COLUMNS)
                     + f" | {row['fd'] / floor['fd']:.2f} |")
    invocations = sorted({(run["date"], run["machine"], run["commit"], run["command"])
                          for run in runs})
    lines += ["", "Measured by:", "", *(f"- {date}, {machine}, commit {commit}: `{command}`"
                                       for date, machine, commit, command in invocations)]
    text = "\n".join(lines) + "\n"
    RESULTS_JSON.with_suffix(".md").write_text(text)
    files.write_json(str(RESULTS_JSON), {"runs": runs})
    return text


def draw_samples(entries: list[dict], path: pathlib.Path) -> None:
    models = list(dict.fromkeys(entry["model"] for entry in entries))
    datasets = list(dict.fromkeys(entry["dataset"] for entry in entries))
    figure, axes = plt.subplots(len(models), len(datasets), squeeze=False,
                                figsize=(4.2 * len(datasets), 0.62 * len(models) + 0.6))
    for entry in entries:
        axis = axes[models.index(entry["model"]), datasets.index(entry["dataset"])]
        axis.imshow(plots.to_grid(entry["shown"], columns=SHOWN_SAMPLES).squeeze(), cmap="gray",
                    vmin=0, vmax=255, interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
    for row, model in enumerate(models):
        axes[row, 0].set_ylabel(model, rotation=0, ha="right", va="center")
    for column, dataset in enumerate(datasets):
        axes[0, column].set_title(dataset)
    figure.suptitle(f"samples of the default runs, seed 0; {device.describe()['name']}, "
                    f"{datetime.date.today().isoformat()}", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--mnist_dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--workroot", default="runs/real_mnist")
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir of `digits`")
    parser.add_argument("--eval_samples", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change a sampling field when measuring (repeatable), e.g. "
                        "sample_steps=50; the row's name says so")
    parser.add_argument("--train_set", action="append", default=[], metavar="NAME=VALUE",
                        help="change a config field for training (repeatable): a variant "
                        "trained in its own workdir, its row named by the changes")
    parser.add_argument("--config", default="default", choices=("default", "tiny"),
                        help="tiny: a quick check of this script, not a result")
    args = parser.parse_args()
    models, datasets = args.models.split(","), args.datasets.split(",")
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(datasets) - set(DATASETS))
    if unknown:
        sys.exit(f"error: unknown {', '.join(unknown)}: expected models among "
                 f"{', '.join(MODELS)} and datasets among {', '.join(DATASETS)}")
    times_path = pathlib.Path(args.workroot) / "train_seconds.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    entries = []
    for model in models:
        # digits first: its epoch length is the MNIST run's, so both take as many steps.
        for dataset in sorted(datasets, key=DATASETS.index):
            steps_per_epoch = None if dataset == "digits" else digits_epoch_length(model, args)
            workdir = train_once(model, dataset, args, times, steps_per_epoch)
            results, shown = measure(workdir, args)
            name = " ".join([model, *args.train_set, *args.set])
            entries.append({"name": name, "model": model, "dataset": dataset,
                            "workdir": str(workdir), "eval_samples": args.eval_samples,
                            "train_seconds": times[str(workdir)], "results": results,
                            "shown": shown})
            print(f"{workdir}:\n{sample_quality.format_report(results)}", flush=True)
    print(write_results(entries, args))
    if not args.set and not args.train_set:  # the picture shows the defaults
        draw_samples(entries, ROOT / "docs" / "images" / "real_mnist_samples.png")


if __name__ == "__main__":
    main()
