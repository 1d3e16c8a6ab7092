"""What DiffAugment and ADA cost a dcgan train step, timed together in interleaved rounds.

    python experiments/augment_cost.py [--windows=7] [--window_seconds=2]

`make benchmark` measures `dcgan`, `dcgan+augment=diffaugment` and `dcgan+augment=ada` as
separate entries, each in its own rounds; this times the three at the runner's default setting
(graph mode, 4 steps per call, float32) in the same interleaved rounds, with the benchmark's
own functions, so their ratio is taken under the same conditions. It reports the CPU time per
image too (all of this process's threads): on a machine shared with other jobs the wall time
follows their load, the CPU time much less (docs/gans.md).
"""

import argparse
import time

import numpy as np

from aigc_zoo import benchmark, data

ENTRIES = ("dcgan", "dcgan+augment=diffaugment", "dcgan+augment=ada")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=7)
    parser.add_argument("--window_seconds", type=float, default=2.0)
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()
    runs = [benchmark.entry_run(entry) for entry in ENTRIES]
    pipeline, info = data.load("digits", runs[0].train_split, batch_size=runs[0].config.batch_size,
                               training=True, data_dir=args.data_dir)
    batch = next(iter(pipeline))
    prepared = [benchmark._prepare(run, info, batch, jit=False, spe=4, precision="float32",
                                   window_seconds=args.window_seconds) for run in runs]
    wall, cpu = time_rounds(prepared, args.windows)
    print("| variant | images/s (median, wall) | share | windows | CPU ms per image | share |")
    for index, (entry, run) in enumerate(zip(ENTRIES, runs)):
        speed, cost = run.config.batch_size / np.median(wall[index]), np.median(cpu[index])
        spread = [run.config.batch_size / t for t in wall[index]]
        print(f"| {entry} | {speed:,.0f} | {np.median(wall[0]) / np.median(wall[index]):.2f} | "
              f"{min(spread):,.0f}-{max(spread):,.0f} | {1000 * cost / run.config.batch_size:.3f}"
              f" | {cost / np.median(cpu[0]):.2f} |", flush=True)


def time_rounds(prepared: list[dict], windows: int) -> tuple[list[list[float]], ...]:
    """Wall and CPU (this process's, all threads) seconds per train step of each setting, one
    window each per round after an untimed round, the order rotating (as the benchmark)."""
    wall, cpu = [[] for _ in prepared], [[] for _ in prepared]
    for round_ in range(-1, windows):
        order = list(range(len(prepared)))
        shift = max(round_, 0) % len(prepared)
        for index in order[shift:] + order[:shift]:
            steps = (prepared[index]["calls_per_window"]
                     * prepared[index]["row"]["steps_per_execution"])
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            prepared[index]["model"].fit(prepared[index]["data"], epochs=1,
                                         steps_per_epoch=steps, verbose=0, shuffle=False)
            if round_ >= 0:
                wall[index].append((time.perf_counter() - wall_start) / steps)
                cpu[index].append((time.process_time() - cpu_start) / steps)
    return wall, cpu


if __name__ == "__main__":
    main()
