"""Kill and resume: SIGKILL deterministic training runs at random moments, resume each, and
compare the final weights with an uninterrupted run's, bit for bit.

    nice -n 10 python experiments/kill_resume.py                     # 20 kills of each model
    nice -n 10 python experiments/kill_resume.py --models=vae --kills=3 --work=/tmp/kr

For each model (tiny config, `--deterministic`, a 1,024-image split, short epochs and a
checkpoint every few steps) one uninterrupted run gives the reference weights and the length
of its training phase. Then each trial starts the same run in a fresh workdir, waits until
training has written its first checkpoint, and kills it with SIGKILL:
- "random-step" trials at a uniform moment between two saves, after a random one of them
  (earlier versions killed at a uniform moment of the reference's training time, "random",
  which a change of load on a shared machine turned into runs that ended first);
- "save" trials the instant a new checkpoint's files appear before the `checkpoint` index
  names them (a random one of the run's saves), i.e. inside a checkpoint write.
What was on disk at the kill is recorded (the committed checkpoint, unfinished save files);
the run is then rerun with the same command to the end, and every tensor of its final
checkpoint (weights, optimizer slots, step, RNG state) is compared with the reference's, and
every epoch's sample picture must exist. A trial whose run ended before the kill is not
counted and is retried. Writes experiments/results/kill_resume.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "kill_resume.md"
# Per model: epochs x steps per epoch, and a checkpoint every this many steps (many saves, so
# that random kills land between and inside them; the tiny configs train a step in ~10 ms).
SETUPS = {
    "vae": {"epochs": 3, "steps_per_epoch": 120, "checkpoint_every_steps": 8},
    "dcgan": {"epochs": 3, "steps_per_epoch": 120, "checkpoint_every_steps": 8},
    "ddpm": {"epochs": 2, "steps_per_epoch": 40, "checkpoint_every_steps": 4},
}
_RESUMED = re.compile(r"resuming from \S+ at step (\d+) \(epoch (\d+), step (\d+) of (\d+)\)")


def command(model: str, workdir: pathlib.Path, data_dir: str) -> list[str]:
    setup = SETUPS[model]
    return [sys.executable, "-m", "aigc_zoo.run", f"--model={model}", "--config=tiny",
            "--deterministic", f"--data_dir={data_dir}", "--train_split=train[:1024]",
            f"--workdir={workdir}", f"--epochs={setup['epochs']}",
            f"--steps_per_epoch={setup['steps_per_epoch']}",
            f"--checkpoint_every_steps={setup['checkpoint_every_steps']}",
            "--keep_checkpoints=3", "--log_every_steps=10"]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


def checkpoint_values(folder: pathlib.Path) -> dict:
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(folder))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def on_disk(folder: pathlib.Path) -> dict:
    """The committed checkpoint number and the files of an unfinished save in `folder`."""
    index = folder / "checkpoint"
    try:
        text = index.read_text()
        committed = int(re.search(r'model_checkpoint_path: "ckpt-(\d+)"', text).group(1))
    except (OSError, AttributeError, UnicodeDecodeError):
        committed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        names = []
    unfinished = sorted(name for name in names if "_temp" in name or (
        re.match(r"ckpt-(\d+)\.", name) and int(re.match(r"ckpt-(\d+)", name).group(1))
        > committed))
    return {"committed": committed, "unfinished": unfinished}


def wait_for_first_checkpoint(process: subprocess.Popen, index: pathlib.Path,
                              timeout: float = 900) -> float:
    deadline = time.monotonic() + timeout
    while not index.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the run ended (or hung) before its first checkpoint")
        time.sleep(0.002)
    return time.monotonic()


def kill_at_save(process: subprocess.Popen, folder: pathlib.Path, save: int) -> bool:
    """SIGKILL `process` as soon as its `save`-th unfinished save (counted from now) is seen."""
    seen, last = 0, on_disk(folder)["committed"]
    while process.poll() is None:
        state = on_disk(folder)
        if state["unfinished"]:
            if seen == save:
                process.send_signal(signal.SIGKILL)
                return True
            seen += 1
            while process.poll() is None and on_disk(folder)["committed"] == last:
                time.sleep(0.0005)  # let this save commit, then count the next one
            last = on_disk(folder)["committed"]
        time.sleep(0.0005)
    return False


def kill_between_saves(process: subprocess.Popen, folder: pathlib.Path, saves: int,
                       rng: random.Random) -> bool:
    """SIGKILL `process` at a uniform moment between two saves, after a random one of its
    saves: spread over the training whatever the machine's load (unlike a fixed delay)."""
    target = rng.randrange(2, max(saves, 3))
    committed, changed, interval = on_disk(folder)["committed"], time.monotonic(), None
    while process.poll() is None:
        now = on_disk(folder)["committed"]
        if now != committed:
            committed, interval, changed = now, time.monotonic() - changed, time.monotonic()
        if committed >= target and interval is not None:
            time.sleep(rng.uniform(0, interval))
            if process.poll() is not None:
                return False
            process.send_signal(signal.SIGKILL)
            return True
        time.sleep(0.002)
    return False


def trial(model: str, kind: str, work: pathlib.Path, data_dir: str, train_seconds: float,
          saves: int, rng: random.Random) -> dict | None:
    """One killed-and-resumed run; None when the run finished before it could be killed."""
    workdir = work / "trial"
    shutil.rmtree(workdir, ignore_errors=True)
    folder = workdir / "checkpoints"
    with open(work / "killed.log", "w") as log:
        process = subprocess.Popen(command(model, workdir, data_dir), stdout=log,
                                   stderr=subprocess.STDOUT, env=environment(), cwd=ROOT)
        started = wait_for_first_checkpoint(process, folder / "checkpoint")
        if kind == "random":
            delay = rng.uniform(0, train_seconds)
            time.sleep(delay)
            killed = process.poll() is None
            if killed:
                process.send_signal(signal.SIGKILL)
        elif kind == "random-step":
            killed = kill_between_saves(process, folder, saves, rng)
        else:
            killed = kill_at_save(process, folder, rng.randrange(max(saves - 1, 1)))
        process.wait()
    if not killed:
        return None
    at_kill = on_disk(folder)
    at_kill["seconds"] = time.monotonic() - started
    resumed = subprocess.run(command(model, workdir, data_dir), capture_output=True, text=True,
                             env=environment(), cwd=ROOT)
    row = {"kind": kind, **at_kill, "returncode": resumed.returncode}
    match = _RESUMED.search(resumed.stdout)
    row["resumed_at"] = (f"step {match.group(1)} (epoch {match.group(2)}, "
                         f"{match.group(3)}/{match.group(4)})") if match else "-"
    row["mid_epoch"] = bool(match) and match.group(3) != "0"
    if resumed.returncode:
        row["result"] = "resume failed: " + (resumed.stderr.strip().splitlines() or ["?"])[-1]
        return row
    epochs = SETUPS[model]["epochs"]
    pictures = all((workdir / "samples" / f"epoch_{e:04d}.png").exists()
                   for e in range(1, epochs + 1))
    row["result"] = compare(checkpoint_values(work / "reference" / "checkpoints"),
                            checkpoint_values(folder), pictures)
    return row


def compare(expected: dict, got: dict, pictures: bool) -> str:
    import numpy as np
    if expected.keys() != got.keys():
        return "different tensors"
    differ = [name for name in expected if not np.array_equal(expected[name], got[name])]
    if differ:
        return f"{len(differ)} of {len(expected)} tensors differ (e.g. {differ[0]})"
    return "identical" if pictures else "identical weights, a sample picture missing"


def reference(model: str, work: pathlib.Path, data_dir: str) -> tuple[float, int]:
    """Train the uninterrupted run; the seconds from its first checkpoint to its end, and
    how many saves it made in that time."""
    workdir, saved = work / "reference", work / "reference.json"
    if saved.exists():  # a rerun of the harness keeps its finished reference
        return tuple(json.loads(saved.read_text()))
    shutil.rmtree(workdir, ignore_errors=True)
    with open(work / "reference.log", "w") as log:
        process = subprocess.Popen(command(model, workdir, data_dir), stdout=log,
                                   stderr=subprocess.STDOUT, env=environment(), cwd=ROOT)
        started = wait_for_first_checkpoint(process, workdir / "checkpoints" / "checkpoint")
        if process.wait() != 0:
            raise RuntimeError(f"the reference run of {model} failed; see {work}/reference.log")
    setup = SETUPS[model]
    total = setup["epochs"] * setup["steps_per_epoch"]
    measured = (time.monotonic() - started, total // setup["checkpoint_every_steps"] - 1)
    saved.write_text(json.dumps(measured))
    return measured


def run_models(models: list[str], kills: int, work: pathlib.Path, data_dir: str,
               rng: random.Random, results: dict[str, list[dict]], started: float) -> None:
    """Trials of the models in turn (so a stopped harness leaves each with some) until each
    has `kills`; `results` (kept in `work/tally.json`) lets a rerun of the harness continue."""
    references = {}
    for model in models:
        (work / model).mkdir(parents=True, exist_ok=True)
        references[model] = reference(model, work / model, data_dir)
        print(f"{model}: reference trained {references[model][0]:.1f} s after its first "
              "checkpoint", flush=True)
    misses = {model: 0 for model in models}
    while True:
        due = [m for m in models if len(results.setdefault(m, [])) < kills and misses[m] < kills]
        if not due:
            return
        # The models with the fewest kills first, so a stopped harness leaves them even.
        for model in sorted(due, key=lambda m: len(results[m])):
            rows = results[model]
            kind = "random-step" if len(rows) % 2 == 0 else "save"
            row = trial(model, kind, work / model, data_dir, *references[model], rng)
            if row is None:
                misses[model] += 1
                print(f"{model}: the run finished before the kill; not counted", flush=True)
                continue
            rows.append(row)
            print(f"{model} #{len(rows)} {kind}: at ckpt-{row['committed']} "
                  f"unfinished={row['unfinished']} resumed {row['resumed_at']}: "
                  f"{row['result']}", flush=True)
            (work / "tally.json").write_text(json.dumps(results, indent=1))
            write_report(results, time.monotonic() - started)


def prepare_data(work: pathlib.Path) -> str:
    from aigc_zoo.data import digits
    folder = work / "tfds"
    if not (folder / ".prepared").exists():
        digits.Digits(data_dir=str(folder)).download_and_prepare()
        (folder / ".prepared").touch()
    return str(folder)


def write_report(results: dict[str, list[dict]], seconds: float | None) -> None:
    done = "" if seconds is None else f", in progress ({seconds / 60:.0f} min in this session)"
    lines = [
        "# Kill and resume", "",
        f"`nice -n 10 python experiments/kill_resume.py {' '.join(sys.argv[1:])}` on "
        f"{platform.node() or 'this machine'} ({os.cpu_count()} cores), "
        f"{datetime.date.today().isoformat()}{done}.", "",
        "Each run: `--config=tiny --deterministic --train_split=train[:1024]`; per model "
        + "; ".join(f"{m}: {s['epochs']} epochs x {s['steps_per_epoch']} steps, a checkpoint "
                    f"every {s['checkpoint_every_steps']} steps" for m, s in SETUPS.items()
                    if m in results) + ". "
        "A kill is SIGKILL after the first checkpoint: at a uniform moment of the reference "
        "run's training time (random; the first trials, until load changes on the shared "
        "machine made runs end before their kill), at a uniform moment between two saves "
        "after a random save (random-step: the later trials), or inside a checkpoint write "
        "(save: the new checkpoint's files exist, the index does not name them yet); the "
        "rerun of the same command must end with every tensor of the final "
        "checkpoint equal to the uninterrupted run's, and every epoch's sample picture.", "",
        "| model | kills | inside a save | resumed mid-epoch | identical |",
        "|---|---|---|---|---|"]
    for model, rows in results.items():
        lines.append(f"| {model} | {len(rows)} | {sum(bool(r['unfinished']) for r in rows)} | "
                     f"{sum(r['mid_epoch'] for r in rows)} | "
                     f"{sum(r['result'] == 'identical' for r in rows)}/{len(rows)} |")
    lines += ["", "| model | # | kill | seconds after 1st ckpt | committed | unfinished save "
              "files | resumed at | result |", "|---|---|---|---|---|---|---|---|"]
    for model, rows in results.items():
        for number, row in enumerate(rows, 1):
            files = ", ".join(row["unfinished"]) or "-"
            seconds = "-" if row["seconds"] is None else f"{row['seconds']:.2f}"
            lines.append(f"| {model} | {number} | {row['kind']} | {seconds} | "
                         f"ckpt-{row['committed']} | {files} | {row['resumed_at']} | "
                         f"{row['result']} |")
    RESULTS.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vae,dcgan,ddpm")
    parser.add_argument("--kills", type=int, default=20, help="kills per model")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="kill_resume_"))
    rng = random.Random(args.seed)
    data_dir = prepare_data(work)
    # A harness stopped part-way continues from its tally (same --work).
    tally = work / "tally.json"
    results = json.loads(tally.read_text()) if tally.exists() else {}
    models = args.models.split(",")
    # Rows kept under other names (trials set aside, with the reason) stay in the tally.
    results = {**results, **{model: results.get(model, []) for model in models}}
    run_models(models, args.kills, work, data_dir, rng, results, time.monotonic())
    write_report(results, None)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
