"""Mode coverage of every GAN variant on the 2D toy datasets: a table and a figure.

    python experiments/gan_modes.py                      # every variant on ring8 and grid25
    python experiments/gan_modes.py --models=wgan_gp --datasets=ring8

For each pair, trains the default config (`python -m aigc_zoo.run --model=M --dataset=D
--workdir=runs/M-D`, timed into the workdir's `train_seconds.txt`; a workdir that is already
trained is only evaluated) and
evaluates it with `python -m aigc_zoo.run --mode=eval` (2,500 samples from the weight average,
seed 0; `aigc_zoo.metrics.modes`). Writes `experiments/results/gan_modes.md` (date, machine,
command) and `docs/images/gan_modes.png` (the evaluated samples over the modes).
"""

import argparse
import datetime
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

from aigc_zoo import device  # noqa: E402

GANS = ("gan", "dcgan", "wgan_gp", "sngan", "cgan")
DATASETS = ("ring8", "grid25")


def _runner(*flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "aigc_zoo.run", *flags], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"runner failed: {' '.join(flags)}\n{result.stderr[-2000:]}")
    return result


def measure(model: str, dataset: str, runs: pathlib.Path) -> dict:
    """Train (unless trained) and evaluate one variant; the eval's metrics plus train time."""
    workdir = runs / f"{model}-{dataset}"
    start = time.perf_counter()
    output = _runner(f"--model={model}", f"--dataset={dataset}", f"--workdir={workdir}",
                     "--log_every_steps=100").stdout
    timing = workdir / "train_seconds.txt"  # kept, so a rerun that only evaluates reports it
    if "already trained" not in output:
        timing.write_text(f"{time.perf_counter() - start:.1f}\n")
    seconds = float(timing.read_text()) if timing.exists() else None
    _runner("--mode=eval", f"--workdir={workdir}")
    metrics = json.loads((workdir / "metrics.json").read_text())
    _runner("--mode=sample", f"--workdir={workdir}", "--num_samples=2500")
    step = metrics["step"]
    samples = np.load(workdir / "samples" / f"samples_step{step}_seed0.npz")["images"]
    return {"model": model, "dataset": dataset, "step": step, "seconds": seconds,
            "coverage": metrics["mode_coverage"], "samples": samples}


def figure(results: list[dict], path: pathlib.Path) -> None:
    from aigc_zoo.data import toy
    datasets = sorted({r["dataset"] for r in results}, key=DATASETS.index)
    models = sorted({r["model"] for r in results}, key=GANS.index)
    fig, axes = plt.subplots(len(datasets), len(models), squeeze=False,
                             figsize=(2.4 * len(models), 2.5 * len(datasets)), dpi=110)
    for result in results:
        ax = axes[datasets.index(result["dataset"])][models.index(result["model"])]
        mixture = toy.MIXTURES[result["dataset"]]
        reach = abs(mixture.centres).max() + 1.0
        for centre in mixture.centres:
            ax.add_patch(plt.Circle(centre, 3 * mixture.std, fill=False, color="tab:red",
                                    lw=0.6))
        points = result["samples"]
        ax.scatter(points[:, 0], points[:, 1], s=1.5, alpha=0.35, color="tab:blue",
                   linewidths=0)
        ax.set_xlim(-reach, reach)
        ax.set_ylim(-reach, reach)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        coverage = result["coverage"]
        ax.set_title(f"{result['model']} on {result['dataset']}\n{coverage['modes_covered']}/"
                     f"{coverage['num_modes']} modes, "
                     f"{100 * coverage['high_quality_share']:.0f}% HQ", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(GANS))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--runs", default=str(ROOT / "runs"))
    args = parser.parse_args()
    results = [measure(model, dataset, pathlib.Path(args.runs))
               for dataset in args.datasets.split(",") for model in args.models.split(",")]
    lines = [
        "# Mode coverage of the GAN variants on the 2D toy datasets",
        "",
        f"Measured {datetime.date.today().isoformat()} on {device.cpu_name()} "
        f"({os.cpu_count()} logical CPUs), by",
        f"`python experiments/gan_modes.py {shlex.join(sys.argv[1:])}`".replace(" `", "`"),
        "",
        "Default toy config of each variant (`default_config(dataset)`), seed 0; 2,500 samples "
        "from the generator's weight average. A sample is high quality (HQ) within 3 std of "
        "its nearest mode; a mode is covered with at least 20 HQ samples; mode KL is "
        "KL(HQ histogram || uniform) in nats.",
        "",
        "| variant | dataset | modes covered | HQ samples | mode KL | generator steps "
        "| train time |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        c = r["coverage"]
        seconds = "(trained earlier)" if r["seconds"] is None else f"{r['seconds']:.0f} s"
        lines.append(f"| {r['model']} | {r['dataset']} | {c['modes_covered']}/{c['num_modes']} "
                     f"| {100 * c['high_quality_share']:.1f}% | {c['mode_kl']:.3f} | "
                     f"{r['step']:,} | {seconds} |")
    out = ROOT / "experiments" / "results" / "gan_modes.md"
    out.write_text("\n".join(lines) + "\n")
    figure(results, ROOT / "docs" / "images" / "gan_modes.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
