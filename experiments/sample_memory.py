"""Peak memory of `--mode=sample` against the number of samples: bounded, not growing with N.

    nice -n 10 python experiments/sample_memory.py                       # 1k, 20k, 100k samples
    nice -n 10 python experiments/sample_memory.py --counts=1000000 --append   # the million

Trains the default `vae` for a few steps (sampling costs the same whatever the weights), then
runs `python -m aigc_zoo.run --mode=sample --num_samples=N` for each N in a fresh process and
reads its peak resident set size from the kernel (`wait4`'s `ru_maxrss`), with the wall time
and what it wrote (files, bytes). Writes experiments/results/sample_memory.md (`--append`
adds rows to it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "sample_memory.md"


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


def train(workdir: pathlib.Path, data_dir: str) -> None:
    if (workdir / "checkpoints" / "checkpoint").exists():
        return
    subprocess.run([sys.executable, "-m", "aigc_zoo.run", "--model=vae", f"--workdir={workdir}",
                    f"--data_dir={data_dir}", "--train_split=train[:1024]", "--epochs=1",
                    "--steps_per_epoch=8", "--sample_every_epochs=0"],
                   check=True, env=environment(), cwd=ROOT, capture_output=True)


def measure(workdir: pathlib.Path, count: int) -> dict:
    """Peak RSS (MiB), seconds and output of one `--mode=sample --num_samples=count`."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "aigc_zoo.run", f"--workdir={workdir}", "--mode=sample",
         f"--num_samples={count}", f"--seed={count % 1000}"],
        env=environment(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if process.returncode:
        raise RuntimeError(f"--num_samples={count} failed:\n{output[-2000:]}")
    written = output.strip().splitlines()[-1].split(" and ")[-1]
    paths = [pathlib.Path(written)]
    if paths[0].is_dir():
        paths = sorted(paths[0].iterdir())
    return {"count": count, "peak_mib": usage.ru_maxrss / 1024, "seconds": seconds,
            "files": len(paths), "bytes": sum(p.stat().st_size for p in paths),
            "progress_lines": output.count("sampled ")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1000,20000,100000")
    parser.add_argument("--work", default="/tmp/sample_memory")
    parser.add_argument("--data_dir", default=None, help="a prepared digits TFDS folder")
    parser.add_argument("--append", action="store_true", help="add rows to the results file")
    args = parser.parse_args()
    work = pathlib.Path(args.work)
    data_dir = args.data_dir or str(work / "tfds")
    if args.data_dir is None and not (work / "tfds" / "digits").exists():
        from aigc_zoo.data import digits
        digits.Digits(data_dir=data_dir).download_and_prepare()
    train(work / "vae", data_dir)
    rows = []
    for count in (int(text) for text in args.counts.split(",")):
        rows.append(measure(work / "vae", count))
        print(rows[-1], flush=True)
    lines = [] if args.append and RESULTS.exists() else [
        "# Memory of --mode=sample", "",
        "The default `vae` (batch 128, trained 8 steps), `python -m aigc_zoo.run --mode=sample "
        "--num_samples=N` in a fresh process each; peak RSS from the kernel (`wait4`), "
        "including TensorFlow itself.", "",
        "| samples | peak RSS (MiB) | seconds | files | bytes on disk | progress lines | "
        "command, machine, date |", "|---|---|---|---|---|---|---|"]
    when = (f"`nice -n 10 python experiments/sample_memory.py {' '.join(sys.argv[1:])}`, "
            f"{platform.node() or 'this machine'} ({os.cpu_count()} cores), "
            f"{datetime.date.today().isoformat()}")
    for row in rows:
        lines.append(f"| {row['count']:,} | {row['peak_mib']:,.0f} | {row['seconds']:,.0f} | "
                     f"{row['files']} | {row['bytes']:,} | {row['progress_lines']} | {when} |")
    text = (RESULTS.read_text() if args.append and RESULTS.exists() else "")
    RESULTS.write_text(text + "\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
