"""Does tf.data's autotuner slow whole `fit` calls down? Times many short `fit` calls.

    python experiments/input_autotune.py                      # dcgan, 30 calls each way (~1 min)
    python experiments/input_autotune.py --model=ddpm --calls=16

One model is built once; then `--calls` calls of `model.fit(pipeline, steps_per_epoch=--steps)`
are timed with the digits training pipeline as `data.load` makes it (autotuner off), and as many
with the same pipeline with the autotuner switched back on, alternating. Each call also records
the process's CPU time, so a call that ran on one core shows about 100% instead of about 190%.
A call is counted as slow when it took over 1.5x the median of the autotuner-off calls.

Found on the 2-core VM (2026-11-29): with the autotuner on, 11 of 30 calls ran at half speed on
one core for the whole call; with it off, none. Writes
experiments/results/input_autotune_<model>.md.
"""

import argparse
import datetime
import os
import pathlib
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from aigc_zoo import data, device, registry, request  # noqa: E402


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_fit(model, dataset, steps: int) -> tuple[float, float]:
    """(seconds per step, CPU utilisation in cores) of one `fit` call."""
    cpu, start = _cpu_seconds(), time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    wall = time.perf_counter() - start
    return wall / steps, (_cpu_seconds() - cpu) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dcgan")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()

    model_class = registry.get_model(args.model)
    config = model_class.default_config("digits")
    run = request.Run(model=args.model, dataset="digits", config=config)
    fixed, info = data.load("digits", "train", batch_size=config.batch_size, training=True)
    options = tf.data.Options()
    options.autotune.enabled = True
    autotuned = fixed.with_options(options)
    model = run.build_model(info.image_shape, info.num_classes)
    model.compile(jit_compile=False)
    model.fit(fixed, epochs=1, steps_per_epoch=info.num_examples // config.batch_size,
              verbose=0)  # traces, and fills the pipeline's cache
    results: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    for _ in range(args.calls):
        results["off"].append(timed_fit(model, fixed, args.steps))
        results["on"].append(timed_fit(model, autotuned, args.steps))

    normal = float(np.median([seconds for seconds, _ in results["off"]]))
    machine = f"{device.describe()['name']}, TensorFlow {tf.__version__}"
    lines = [f"Measured {datetime.date.today().isoformat()} on {machine}, by "
             f"`python experiments/input_autotune.py --model={args.model} --calls={args.calls} "
             f"--steps={args.steps}`", "",
             "| tf.data autotuner | fit calls | slow calls (> 1.5x the median with it off) | "
             "median ms / step | slowest ms / step | CPU cores used: normal calls / slow calls |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for name, rows in results.items():
        seconds = np.array([s for s, _ in rows])
        cores = np.array([c for _, c in rows])
        slow = seconds > 1.5 * normal
        slow_cores = f"{cores[slow].mean():.2f}" if slow.any() else "–"
        lines.append(f"| {name} | {len(rows)} | {int(slow.sum())} | {np.median(seconds) * 1e3:.1f}"
                     f" | {seconds.max() * 1e3:.1f} | {cores[~slow].mean():.2f} / {slow_cores} |")
    lines += ["", "Per call, ms / step (CPU cores used):"]
    for name, rows in results.items():
        lines.append(f"- {name}: " + ", ".join(f"{s * 1e3:.0f} ({c:.1f})" for s, c in rows))
    print("\n".join(lines))
    output = ROOT / "experiments" / "results" / f"input_autotune_{args.model}.md"
    output.write_text("\n".join(lines) + "\n")
    print(f"wrote {output.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
