"""The benchmark's outputs: a markdown table, a chart and the JSON, from the results dict.

`aigc_zoo.benchmark` measures; this module only formats, so a saved JSON can be re-rendered,
with the default settings of the code as it is now marked:

    python -m aigc_zoo.benchmark --rerender=experiments/benchmarks/<file>.json
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

# The MFU targets (share of the float32 matmul peak), by model family.
MFU_TARGETS = {"dcgan": 0.8, "wgan_gp": 0.8, "sngan": 0.8, "cgan": 0.8, "ddpm": 0.6,
               "cddpm": 0.6}


def _setting(row: dict[str, Any]) -> str:
    return (f"{'XLA' if row['jit_compile'] else 'graph'}, spe {row['steps_per_execution']}, "
            f"{row['precision']}")


def fastest(model: dict[str, Any], precision: str | None = None) -> dict[str, Any] | None:
    """The model's fastest measured train-step setting (of one precision, when given)."""
    rows = [r for r in model["train"] if "images_per_second" in r
            and (precision is None or r["precision"] == precision)]
    return max(rows, key=lambda r: r["images_per_second"], default=None)


# Settings within this share of the fastest count as equally fast: interleaved rounds of one
# setting spread by a few percent (see each row's window_images_per_second).
NOISE = 0.05


def default_row(model: dict[str, Any]) -> dict[str, Any] | None:
    """The measured row of the setting the runner uses by default (None if not measured)."""
    default = model.get("default_setting")  # absent from runs before 2026-11-29 20:10 UTC
    if not default:
        return None
    return next((r for r in model["train"] if "images_per_second" in r
                 and all(r[key] == value for key, value in default.items())), None)


def _memory(row: dict[str, Any]) -> str:
    text = f"{row['peak_memory_mib']:,.0f}"
    if "resident_before_mib" in row:  # absent from runs before 2026-11-29 17:15 UTC
        text += f" (+{row['peak_memory_mib'] - row['resident_before_mib']:,.0f})"
    return text


def measured(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's models that were measured (a model whose benchmark failed holds its error)."""
    return [model for model in results["models"] if "error" not in model]


def _failures(results: dict[str, Any]) -> list[str]:
    failed = [model for model in results["models"] if "error" in model]
    return (["**Not measured** (the benchmark failed on them): "
             + "; ".join(f"{model['model']}: {model['error']}" for model in failed), ""]
            if failed else [])


def _of_ceiling(row: dict[str, Any]) -> str:
    """The step's GFLOP/s over its layers' own (absent from runs before 2026-12-07)."""
    return f"{row['share_of_ceiling']:.0%}" if "share_of_ceiling" in row else "–"


def _ceiling(model: dict[str, Any]) -> str:
    ceiling = model.get("layer_ceiling")
    if not ceiling or not ceiling["gflops_per_second"]:
        return "–"
    return f"{ceiling['gflops_per_second']:.0f}"


def _train_table(results: dict[str, Any]) -> list[str]:
    lines = ["| model | batch | GFLOP / image | setting | images/s | first call extra (s) | "
             "peak RSS, MiB (+ over the RSS before) | GFLOP/s | MFU | of the layer ceiling |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for model in measured(results):
        best = fastest(model)
        for row in model["train"]:
            cells = [model["model"], str(model["batch_size"]),
                     f"{model['flops_per_image'] / 1e9:.3f}", _setting(row)]
            if "error" in row:
                cells += [f"failed: {row['error'][:80]}", "", "", "", "", ""]
            else:
                marks = [name for name, chosen in (("fastest", best), ("default",
                                                                        default_row(model)))
                         if row is chosen]
                mark = f" **({', '.join(marks)})**" if marks else ""
                cells += [f"{row['images_per_second']:,.0f}{mark}", f"{row['trace_seconds']:.1f}",
                          _memory(row), f"{row['gflops_per_second']:.1f}",
                          f"{row['mfu']:.0%}", _of_ceiling(row)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _summary_table(results: dict[str, Any]) -> list[str]:
    lines = ["| model | fastest setting | images/s | MFU | fastest float32 setting | float32 "
             "MFU | target | layer ceiling, GFLOP/s | float32 share of it | default setting | "
             "default's share of the fastest |",
             "| --- | --- | ---: | ---: | --- | ---: | --- | ---: | ---: | --- | ---: |"]
    for model in measured(results):
        best, best32 = fastest(model), fastest(model, "float32")
        if best is None or best32 is None:
            continue
        target = MFU_TARGETS.get(model["model"])
        verdict = ("–" if target is None else
                   f">= {target:.0%}: {'met' if best32['mfu'] >= target else 'NOT met'}")
        default = default_row(model)
        if default is None:
            default_cells = "– | –"
        else:
            share = default["images_per_second"] / best["images_per_second"]
            share32 = default["images_per_second"] / best32["images_per_second"]
            default_cells = (f"{_setting(default)} | {share:.0%} (float32: {share32:.0%})"
                             f"{'' if share32 >= 1 - NOISE else ' **slower**'}")
        lines.append(f"| {model['model']} | {_setting(best)} | {best['images_per_second']:,.0f} "
                     f"| {best['mfu']:.0%} | {_setting(best32)} | {best32['mfu']:.0%} | "
                     f"{verdict} | {_ceiling(model)} | {_of_ceiling(best32)} | "
                     f"{default_cells} |")
    return lines


def _sampling_table(results: dict[str, Any]) -> list[str]:
    lines = ["| model | sampling steps | XLA | samples | images/s | seconds | first call (s) |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for model in measured(results):
        default_xla = model["sampling"][0].get("jit_compile")  # the first row is the default's
        for row in model["sampling"]:
            steps = row.get("steps", 1)
            if "cache" in row:
                steps = "one per position, " + ("cached" if row["cache"] else "uncached")
            xla = {None: "–", True: "on", False: "off"}[row.get("jit_compile")]
            if row.get("jit_compile") is not None and row["jit_compile"] != default_xla:
                xla += " (not the default)"
            speed = (f"{row['images_per_second']:,.1f} | {row['seconds']:.2f} | "
                     f"{row['first_call_seconds']:.1f}" if "error" not in row
                     else f"fails: {row['error'][:60]} | – | –")
            lines.append(f"| {model['model']} | {steps} | {xla} | {row['num_samples']} | "
                         f"{speed} |")
    return lines


def _pipeline_table(results: dict[str, Any]) -> list[str]:
    lines = ["| dataset | batch | pipeline images/s | fastest train step on it (images/s) | "
             "ratio |", "| --- | ---: | ---: | ---: | ---: |"]
    for row in results["input_pipelines"]:
        steps = [fastest(m) for m in measured(results) if m["dataset"] == row["dataset"]]
        steps = [s["images_per_second"] for s in steps if s]
        consumed = f"{max(steps):,.0f}" if steps else "– (no default model trains on it)"
        ratio = f"{row['images_per_second'] / max(steps):.0f}x" if steps else "–"
        lines.append(f"| {row['dataset']} | {row['batch_size']} | "
                     f"{row['images_per_second']:,.0f} | {consumed} | {ratio} |")
    return lines


PHASES = ("setup", "layer_ceiling", "sampling", "train")


def _time_table(results: dict[str, Any]) -> list[str]:
    """Seconds each model's measurement took, by phase (absent from runs before 2026-12-07
    12:30 UTC): what the benchmark's 30-minute budget is spent on."""
    models = [model for model in measured(results) if "seconds" in model]
    if not models:
        return []
    lines = ["## Where the run's time went (seconds)", "",
             "| model | setup (build, FLOP count) | layer ceiling | sampling | train settings | "
             "total |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for model in models:
        cells = [f"{model['seconds'].get(phase, 0):.0f}" for phase in PHASES]
        lines.append(f"| {model['model']} | {' | '.join(cells)} | "
                     f"{sum(model['seconds'].values()):.0f} |")
    return lines + [""]


def markdown(results: dict[str, Any]) -> str:
    """Every table of the run, under a header naming the machine, date and command."""
    machine = results["device"]
    peaks = ", ".join(f"{p['dtype']} {p['gflops']:.0f} GFLOP/s" for p in results["matmul_peaks"])
    size = results["matmul_peaks"][0]["size"]
    after = ", ".join(f"{p['dtype']} {p['gflops']:.0f}" for p in results["matmul_peaks_after"])
    drift = results["matmul_peaks_after"][0]["gflops"] / results["matmul_peaks"][0]["gflops"] - 1
    lines = [
        f"# Benchmark: {machine['name']}", "",
        f"Measured {results['date']} with TensorFlow {machine['tensorflow']}, Keras "
        f"{machine['keras']}, by `{results['command']}` ({results['total_seconds'] / 60:.1f} "
        f"min{', quick' if results['quick'] else ''}; settings grid `{results['grid']}`"
        f"{', commit ' + results['commit'] if results.get('commit') else ''}).", "",
        *([f"Default settings marked as the code of commit {results['defaults_from']} chooses "
           "them (set from this run's measurements, after it).", ""]
          if results.get("defaults_from") else []),
        f"Matmul peak ({size}x{size}, median): {peaks}; at the end of the run: {after} "
        f"(float32 {drift:+.0%}{'; the machine was not quiet' if abs(drift) > 0.1 else ''}). "
        "MFU = model FLOPs per step (TF profiler "
        "count, a multiply-add is 2 FLOPs) x steps/s / the float32 peak at the start. Train "
        "steps run "
        "`model.fit` on one real batch held in memory; a model's settings are built and traced "
        "first, then timed in interleaved rounds of one window each, and images/s is the median "
        "of a setting's windows. Peak RSS is the process's peak while the setting was built and "
        "traced. The layer ceiling is what the model's trained convolutions and dense layers "
        "reach alone (forward and both gradients, at the step's shapes, each layer once); a "
        "step's share of it is the part of the layers' own speed it keeps with everything else "
        "it does (an approximate bound: a GAN step runs some networks twice).", "",
        *_failures(results), "## Summary", "", *_summary_table(results), "",
        "## Train step", "", *_train_table(results), "",
        "## Sampling (`generate()`, float32)", "", *_sampling_table(results), "",
        "## Input pipelines (`data.load`, training pipeline, alone)", "",
        *_pipeline_table(results), "", *_time_table(results)]
    return "\n".join(lines)


def chart(results: dict[str, Any], path: str) -> None:
    """Bars of train images/s per model and setting, and float32 MFU against the targets."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = measured(results)
    settings = sorted({_setting(r) for m in models for r in m["train"] if "error" not in r})
    figure, (speed, mfu) = plt.subplots(1, 2, figsize=(14, 5),
                                        gridspec_kw={"width_ratios": [3, 1.4]})
    width = 0.8 / max(1, len(settings))
    for i, setting in enumerate(settings):
        values = [next((r["images_per_second"] for r in m["train"] if "error" not in r
                        and _setting(r) == setting), 0) for m in models]
        speed.bar([j + i * width for j in range(len(models))], values, width, label=setting)
    speed.set_xticks([j + 0.4 - width / 2 for j in range(len(models))],
                     [m["model"] for m in models])
    speed.set_yscale("log")
    speed.set_ylabel("train images/s (log)")
    speed.legend(fontsize=7, ncol=2)
    speed.set_title(f"train step, {results['device']['name']}")
    shares = [(fastest(m, "float32") or {}).get("mfu", 0) for m in models]
    mfu.barh([m["model"] for m in models], shares, color="tab:blue")
    for j, m in enumerate(models):
        if m["model"] in MFU_TARGETS:
            mfu.plot([MFU_TARGETS[m["model"]]] * 2, [j - 0.4, j + 0.4], color="tab:red")
    mfu.set_xlabel("MFU of the fastest float32 setting (red: target)")
    mfu.set_xlim(0, 1)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(results: dict[str, Any], output_dir: str, *, chart_copy: str = "") -> list[str]:
    """`<slug>_<date>.json`, `.md` and `.png` in `output_dir` (+ a copy of the chart)."""
    os.makedirs(output_dir, exist_ok=True)
    stem = os.path.join(output_dir,
                        f"{results['device']['slug']}_{results['date'][:10]}"
                        + ("_quick" if results["quick"] else ""))
    with open(stem + ".json", "w") as handle:
        json.dump(results, handle, indent=1)
        handle.write("\n")
    with open(stem + ".md", "w") as handle:
        handle.write(markdown(results))
    chart(results, stem + ".png")
    paths = [stem + ".json", stem + ".md", stem + ".png"]
    if chart_copy:
        os.makedirs(os.path.dirname(chart_copy) or ".", exist_ok=True)
        shutil.copyfile(stem + ".png", chart_copy)
        paths.append(chart_copy)
    return paths
