"""Zoo model against the keras-io recipe of its family: the same wall-clock budget, the same FD.

    make compare ARGS="--families=dcgan,vae --budget_seconds=600 --repeats=3"
    python -m experiments.baselines.compare --families=ddim --budget_seconds=1800
    python -m experiments.baselines.compare --quick --families=vae   # a smoke test, ~1 min

For each repeat and family, two trainers run one after the other, each in its own subprocess
(so that its peak RSS is its own; the order alternates between repeats):

- the recipe (`experiments/baselines/<family>.py`) as users copy it: its own input pipeline
  (tf.data autotuner at its default), its own `compile` and `train_step`, `model.fit`;
- the zoo's model of the family (dcgan, vae, ddpm) at its default config, built, compiled and
  fed by the runner's own functions (`Run.build_model`, `model.compile` with the default
  `jit_compile` and steps per execution, `data.batches`), trained by `model.fit`; without the
  runner's checkpoints and TensorBoard logging, which the recipes do not have either.

Both train on `digits`' train split until `--budget_seconds` of training time. The clock starts
when `fit` starts (so it includes tracing) and stops while evaluating: every
`budget / --evaluations` seconds and at the end, `--eval_samples` samples are drawn and their
FD against the test split computed by the zoo's own sample-quality code
(`metrics.sample_quality`: its sampling, the domain classifier's features, its real subset; the
FD of `--mode=eval`, without the other metrics). Reported per family: train images/s after the
first compiled call, the recipe's best FD within the budget, the training time the zoo model
needed to reach that FD (the first evaluation at or below it, so an upper bound by up to one
interval; "not reached" otherwise), and each trainer's peak RSS; medians and ranges over
`--repeats`. The load average (/proc/loadavg) at the start and end of every trainer is recorded:
a loaded machine makes the times meaningless as a speed comparison.

Writes experiments/results/compare/compare_<families>.json and .md, and a figure of FD against
training time per family, docs/images/compare_<family>.png (with --quick: quick_* files next to
the results, docs/images untouched).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import importlib
import json
import os
import pathlib
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results" / "compare"
IMAGES = ROOT / "docs" / "images"
SIDES = ("recipe", "zoo")
# The budget and evaluation size of --quick (a smoke test, not a measurement).
QUICK_BUDGET, QUICK_SAMPLES = 20.0, 100


class TrainerFailed(RuntimeError):
    """A trainer subprocess ended with an error (its last stderr line is the message)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and status 2, as the runner does
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    from experiments.baselines import FAMILIES
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="dcgan,vae,ddim",
                        help=f"comma-separated, of: {','.join(FAMILIES)}")
    parser.add_argument("--budget_seconds", type=float, default=None,
                        help="training time per trainer (default 600; --quick: 20)")
    parser.add_argument("--evaluations", type=int, default=6,
                        help="evaluations: one every budget / this many seconds of "
                             "training, the last at the end")
    parser.add_argument("--eval_samples", type=int, default=None,
                        help="samples per evaluation (default 2000; --quick: 100)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke test: tiny budget")
    parser.add_argument("--data_dir", default=None, help="TFDS data folder of `digits`")
    parser.add_argument("--classifier_dir", default=None, help="domain classifier cache")
    parser.add_argument("--out_dir", default=None, help=f"default {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--figure_dir", default=None,
                        help="default docs/images (--quick: the results folder)")
    parser.add_argument("--cpu_lock", default=None,
                        help="a file to hold an exclusive flock on while measuring")
    parser.add_argument("--from_json", default=None,
                        help="rewrite the table and figures of an earlier run's JSON, no training")
    parser.add_argument("--trainer", default=None, help=argparse.SUPPRESS)  # family:side:seed
    parser.add_argument("--output", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    families = [name.strip() for name in args.families.split(",") if name.strip()]
    unknown = [name for name in families if name not in FAMILIES]
    if unknown or not families:
        parser.error(f"bad value families={args.families!r}: expected some of "
                     f"{', '.join(FAMILIES)}")
    args.families = families
    if args.budget_seconds is None:
        args.budget_seconds = QUICK_BUDGET if args.quick else 600.0
    if args.eval_samples is None:
        args.eval_samples = QUICK_SAMPLES if args.quick else 2000
    for name, least in (("budget_seconds", 1e-9), ("evaluations", 1), ("repeats", 1)):
        if getattr(args, name) < least:
            parser.error(f"bad value {name}={getattr(args, name)}: expected > 0")
    out = pathlib.Path(args.out_dir) if args.out_dir else RESULTS
    args.out_dir = out
    args.figure_dir = pathlib.Path(args.figure_dir) if args.figure_dir else (
        out if args.quick else IMAGES)
    return args


def load_average() -> list[float]:
    with open("/proc/loadavg", encoding="ascii") as file:
        return [float(value) for value in file.read().split()[:3]]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# -- one trainer (runs in its own subprocess) ---------------------------------------------------

def budget_callback(evaluate, *, budget_seconds: float, eval_every: float, batch_size: int):
    """A Keras callback that stops `fit` after `budget_seconds` of training time and calls
    `evaluate()` (-> dict) every `eval_every` seconds of it and at the end, off the clock."""
    import keras

    class Budget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.points, self.paused, self.steps = [], 0.0, 0
            self.first = None  # (seconds, steps) after the first compiled call: its tracing
            self.next_eval = eval_every
            self.start = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.last_step = -1  # Keras reports each call's last step index in the epoch

        def on_train_batch_end(self, batch, logs=None):
            self.steps += batch - self.last_step
            self.last_step = batch
            seconds = time.perf_counter() - self.start - self.paused
            if self.first is None:
                self.first = (seconds, self.steps)
            if seconds >= budget_seconds:
                self._evaluate(seconds)
                self.model.stop_training = True
            elif seconds >= self.next_eval:
                self._evaluate(seconds)
                while self.next_eval <= seconds:
                    self.next_eval += eval_every

        def _evaluate(self, seconds: float) -> None:
            paused = time.perf_counter()
            point = {"train_seconds": seconds, "steps": self.steps,
                     "images": self.steps * batch_size, "peak_rss_mb": peak_rss_mb()}
            point.update(evaluate())
            point["eval_seconds"] = time.perf_counter() - paused
            self.points.append(point)
            print(f"  {seconds:7.1f} s  {self.steps:6d} steps  FD {point['fd']:.3f}", flush=True)
            self.paused += time.perf_counter() - paused

        def rates(self) -> dict[str, float]:
            seconds = self.points[-1]["train_seconds"]
            first_seconds, first_steps = self.first
            steady = ((self.steps - first_steps) * batch_size / (seconds - first_seconds)
                      if self.steps > first_steps and seconds > first_seconds else None)
            return {"images_per_second": steady,
                    "images_per_second_with_trace": self.steps * batch_size / seconds,
                    "first_call_seconds": first_seconds}

    return Budget()


class _RecipeSampler:
    """What `SampleQuality` needs of a model (`conditional`, `generate`), for a recipe."""

    conditional = False

    def __init__(self, recipe, model):
        self._recipe, self._model = recipe, model

    def generate(self, count: int, *, seed: int):
        return self._recipe.generate(self._model, count, seed)


def train_one(args: argparse.Namespace) -> dict[str, Any]:
    """Train one side of one family for the budget; what it measured."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    family, side, seed = args.trainer.split(":")
    seed = int(seed)
    load_start = load_average()
    import numpy as np

    from aigc_zoo import data, registry, request, training
    from aigc_zoo.metrics import distances, sample_quality
    from experiments.baselines import FAMILIES

    module_name, zoo_name = FAMILIES[family]
    quality = sample_quality.SampleQuality(
        "digits", data_dir=args.data_dir,
        options=sample_quality.Options(num_samples=args.eval_samples,
                                       classifier_dir=args.classifier_dir))
    # First, before anything sets TensorFlow's global seed: the real subset's shuffle depends
    # on it, and every trainer must compare with the same real images.
    real = quality.real_features()
    floor = distances.frechet_distance_from_features(real["eval"]["features"],
                                                     real["train"]["features"])
    split, info = data.open_split("digits", "train", data_dir=args.data_dir)
    if side == "recipe":
        recipe = importlib.import_module(module_name)
        images = np.concatenate([batch["image"] for batch in
                                 split.batch(10_000).as_numpy_iterator()])
        model = recipe.build(seed)
        inputs, fit_kwargs = recipe.fit_inputs(images)
        if hasattr(recipe, "prepare"):
            recipe.prepare(model, inputs)
        sampler, batch_size, name = _RecipeSampler(recipe, model), recipe.BATCH_SIZE, module_name
        fit_kwargs.update(epochs=10**6)
    else:
        config = registry.get_model(zoo_name).default_config("digits")
        run = request.Run(model=zoo_name, dataset="digits", config=config, seed=seed)
        steps = training.epoch_length(run, info.num_examples, info.image_shape)
        spe = training.default_steps_per_execution(run, info.image_shape, steps)
        # The stream before the model, as training.train makes them.
        inputs = training.batch_stream(run, split, info)
        model = run.build_model(info.image_shape, info.num_classes)
        model.compile(jit_compile="auto", steps_per_execution=spe)
        sampler, batch_size, name = model, config.batch_size, f"aigc_zoo {zoo_name}"
        fit_kwargs = {"epochs": 10**6, "steps_per_epoch": steps, "shuffle": False}

    def evaluate() -> dict[str, float]:
        # FD exactly as `SampleQuality.evaluate` computes it (its sampling, features and real
        # subset); the other metrics (KID, precision/recall...) are not needed here.
        features, _, _ = quality.sample_features(sampler, seed)
        return {"fd": distances.frechet_distance_from_features(real["eval"]["features"],
                                                               features),
                "fd_real_vs_real": floor}

    budget = budget_callback(evaluate, budget_seconds=args.budget_seconds,
                             eval_every=args.budget_seconds / args.evaluations,
                             batch_size=batch_size)
    rss_before_fit = peak_rss_mb()
    model.fit(inputs, callbacks=[budget], verbose=0, **fit_kwargs)
    return {"family": family, "side": side, "seed": seed, "trainer": name,
            "batch_size": batch_size, "budget_seconds": args.budget_seconds,
            "eval_samples": args.eval_samples, "points": budget.points, **budget.rates(),
            "best_fd": min(point["fd"] for point in budget.points),
            "peak_rss_mb": peak_rss_mb(), "peak_rss_before_fit_mb": rss_before_fit,
            "peak_rss_before_first_eval_mb": budget.points[0]["peak_rss_mb"],
            "load_average_start": load_start, "load_average_end": load_average(),
            # Equal on both sides of a family when they compared with the same real images.
            "reference_checksum": float(np.sum(real["eval"]["features"], dtype=np.float64))}


# -- the comparison (the parent process) --------------------------------------------------------

def run_trainer(args: argparse.Namespace, family: str, side: str, seed: int,
                scratch: pathlib.Path) -> dict[str, Any]:
    output = scratch / f"{family}_{side}_{seed}.json"
    command = [sys.executable, "-m", "experiments.baselines.compare",
               f"--trainer={family}:{side}:{seed}", f"--output={output}",
               f"--budget_seconds={args.budget_seconds}", f"--evaluations={args.evaluations}",
               f"--eval_samples={args.eval_samples}", f"--families={family}"]
    for name in ("data_dir", "classifier_dir"):
        if getattr(args, name):
            command.append(f"--{name}={getattr(args, name)}")
    print(f"{family} {side} (seed {seed}): training for {args.budget_seconds:g} s", flush=True)
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise TrainerFailed(f"the {family} {side} trainer failed (status {result.returncode}): "
                           + (lines[-1] if lines else "no message"))
    measured = json.loads(output.read_text(encoding="utf-8"))
    measured["process_seconds"] = time.perf_counter() - started
    return measured


def _spread(values: list[float | None]) -> dict[str, Any]:
    present = [value for value in values if value is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "values": values}
    return {"median": statistics.median(present), "min": min(present), "max": max(present),
            "values": values}


def time_to_reach(points: list[dict[str, Any]], target: float) -> float | None:
    """Training seconds of the first evaluation with FD at or below `target` (None: never)."""
    return next((point["train_seconds"] for point in points if point["fd"] <= target), None)


def summarize(runs: list[dict[str, Any]], families: list[str]) -> dict[str, Any]:
    """Per family: each side's images/s, best FD and peak RSS over repeats, and the zoo's time
    to the recipe's best FD of the same repeat."""
    summary = {}
    for family in families:
        by_side = {side: sorted((run for run in runs if run["family"] == family
                                 and run["side"] == side), key=lambda run: run["seed"])
                   for side in SIDES}
        row: dict[str, Any] = {}
        for side, chosen in by_side.items():
            row[side] = {key: _spread([run[key] for run in chosen]) for key in
                         ("images_per_second", "images_per_second_with_trace", "best_fd",
                          "peak_rss_mb", "first_call_seconds")}
            row[side]["trainer"] = chosen[0]["trainer"] if chosen else None
        reached = [time_to_reach(zoo["points"], recipe["best_fd"])
                   for recipe, zoo in zip(by_side["recipe"], by_side["zoo"])]
        row["zoo_seconds_to_recipe_best_fd"] = _spread(reached)
        row["zoo_reached"] = sum(value is not None for value in reached)
        row["repeats"] = len(reached)
        summary[family] = row
    return summary


def _fmt(spread: dict[str, Any], digits: int = 0, unit: str = "") -> str:
    if spread["median"] is None:
        return "–"
    text = f"{spread['median']:,.{digits}f}{unit}"
    if sum(value is not None for value in spread["values"]) > 1:
        text += f" ({spread['min']:,.{digits}f}–{spread['max']:,.{digits}f})"
    return text


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Zoo vs keras-io recipes, same wall-clock budget ({report['date']})", "",
        f"`{report['command']}` at commit {report['commit']}, on {report['machine']}; "
        f"{report['budget_seconds']:g} s of training per trainer, "
        f"{report['evaluations']} FD evaluations (the last at the end) on "
        f"{report['eval_samples']:,} samples (domain classifier features), "
        f"{report['repeats']} repeat(s); "
        f"{report['seconds'] / 60:.1f} min in all.", "",
        f"Load average (1, 5, 15 min) at the start: {report['load_average_start']}, at the end: "
        f"{report['load_average_end']}; per trainer in the JSON. "
        + ("**The machine was loaded by other work: these times are not a speed "
           "comparison.**" if report["loaded"] else "The machine was otherwise idle."), "",
        "| family | trainer | batch | train images/s | best FD in budget | zoo's time to the "
        "recipe's best FD | peak RSS (MiB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for family, row in report["summary"].items():
        batches = {run["side"]: run["batch_size"] for run in report["runs"]
                   if run["family"] == family}
        for side in SIDES:
            cell = "–"
            if side == "zoo":
                reached = row["zoo_seconds_to_recipe_best_fd"]
                cell = (_fmt(reached, 0, " s") + (f" ({row['zoo_reached']} of {row['repeats']})"
                                                  if row["zoo_reached"] < row["repeats"] else "")
                        if reached["median"] is not None else "not reached")
            lines.append(
                f"| {family} | {side}: {row[side]['trainer']} | {batches.get(side, '–')} | "
                f"{_fmt(row[side]['images_per_second'])} | {_fmt(row[side]['best_fd'], 3)} | "
                f"{cell} | {_fmt(row[side]['peak_rss_mb'])} |")
    lines += [
        "",
        "Images/s: after the first compiled call (its tracing excluded), evaluation time "
        "excluded. Times: training seconds since `fit` started, evaluations excluded. The "
        "zoo's time is that of its first evaluation at or below the recipe's best FD of the "
        "same repeat, so it is late by up to one interval. Peak RSS: the trainer process's "
        "maximum, evaluation included. Ranges over repeats in brackets.",
    ]
    return "\n".join(lines) + "\n"


def figure(report: dict[str, Any], family: str, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axis = plt.subplots(figsize=(6, 4), dpi=120)
    colours = {"recipe": "tab:orange", "zoo": "tab:blue"}
    for run in report["runs"]:
        if run["family"] != family:
            continue
        seconds = [point["train_seconds"] for point in run["points"]]
        axis.plot(seconds, [point["fd"] for point in run["points"]], "o-", alpha=0.8,
                  color=colours[run["side"]], label=f"{run['side']}: {run['trainer']}"
                  + (f" (seed {run['seed']})" if report["repeats"] > 1 else ""))
    floor = [point["fd_real_vs_real"] for run in report["runs"] if run["family"] == family
             for point in run["points"]]
    if floor:
        axis.axhline(floor[0], color="grey", linestyle=":", label="real vs real")
    axis.set_yscale("log")
    axis.set_xlabel("training time (s; evaluations excluded)")
    axis.set_ylabel(f"FD, {report['eval_samples']:,} samples (classifier features)")
    axis.set_title(f"{family}: zoo vs keras-io recipe, {report['date'][:10]}"
                   + (" (machine loaded)" if report["loaded"] else ""), fontsize=9)
    axis.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            model = next(line.split(":", 1)[1].strip() for line in file
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def _commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True)
    commit = result.stdout.strip() or "unknown"
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
    return commit + (" (with uncommitted changes)" if changed else "")


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Run every trainer and write the results; the report."""
    started = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from aigc_zoo.metrics import classifier
    # Trained once here if missing, so no trainer's time or memory includes it.
    classifier.load("digits", data_dir=args.data_dir, cache_dir=args.classifier_dir)
    load_start = load_average()
    scratch = args.out_dir / "trainers"
    scratch.mkdir(parents=True, exist_ok=True)
    runs = []
    for repeat in range(args.repeats):
        for family in args.families:
            # Alternate who goes first, so a drift of the machine falls on both sides.
            for side in (SIDES if repeat % 2 == 0 else SIDES[::-1]):
                runs.append(run_trainer(args, family, side, repeat, scratch))
    load_end = load_average()
    most = max([*load_start, *load_end] + [value for run in runs for value in
                                           run["load_average_start"] + run["load_average_end"]])
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "experiments.baselines.compare",
                               *sys.argv[1:]]),
        "commit": _commit(), "machine": _machine(), "families": args.families,
        "budget_seconds": args.budget_seconds, "evaluations": args.evaluations,
        "eval_samples": args.eval_samples, "repeats": args.repeats, "quick": args.quick,
        "load_average_start": load_start, "load_average_end": load_end,
        # More runnable work than half a core beside our one trainer counts as loaded.
        "loaded": most > 1.5,
        "seconds": time.perf_counter() - started,
        "summary": summarize(runs, args.families), "runs": runs,
    }
    write(report, args)
    for path in scratch.glob("*.json"):
        path.unlink()
    scratch.rmdir()
    return report


def write(report: dict[str, Any], args: argparse.Namespace) -> None:
    """The JSON, the markdown table and one figure per family of `report`."""
    stem = ("quick_" if report["quick"] else "compare_") + "-".join(report["families"])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n",
                                               encoding="utf-8")
    (args.out_dir / f"{stem}.md").write_text(markdown(report), encoding="utf-8")
    for family in report["families"]:
        figure(report, family, args.figure_dir / f"{'quick' if report['quick'] else 'compare'}_"
                                                 f"{family}.png")
    print(markdown(report))


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from aigc_zoo.errors import UserError
    try:
        if args.from_json:
            try:
                report = json.loads(pathlib.Path(args.from_json).read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise UserError(f"cannot read --from_json={args.from_json}: {error}") from None
            write(report, args)
            return 0
        if args.trainer:
            measured = train_one(args)
            pathlib.Path(args.output).write_text(json.dumps(measured) + "\n", encoding="utf-8")
            return 0
        if args.cpu_lock:
            with open(args.cpu_lock, "a", encoding="utf-8") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                compare(args)
        else:
            compare(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainerFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
