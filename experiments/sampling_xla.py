"""Sampling images/s with XLA on and off on this machine: what `Knobs.sampling_xla_on_cpu` rests on.

    python experiments/sampling_xla.py                       # the default models below
    python experiments/sampling_xla.py --models=pixelcnn --samples=256 --rounds=5

Each model is built with its default config and untrained weights (the cost of sampling does
not depend on the weights; staged models get untrained default first stages). Both variants
of every entry are traced first; then the variants are timed in interleaved rounds, the order
rotating each round, and the median is reported. Writes
experiments/results/sampling_xla_<machine>.md (the machine's slug, as the benchmark names
its files).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import pathlib
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from aigc_zoo import device, registry, stages  # noqa: E402
from aigc_zoo.models import base  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
# (model, sampling options, config changes): the sequential samplers next to single-pass and
# diffusion ones. The unconditional ldm is the one issue 17 compares with ddpm (decode included),
# also with a U-Net half as wide.
ENTRIES = {
    "pixelcnn": ("pixelcnn", {}, {}),
    "vqgpt": ("vqgpt", {}, {}),
    "vqgpt guidance 1": ("vqgpt", {"guidance": 1.0}, {}),
    "ddpm DDIM-20": ("ddpm", {"steps": 20}, {}),
    "cddpm DDIM-20": ("cddpm", {"steps": 20}, {}),
    "ldm DDIM-20": ("ldm", {"steps": 20}, {"conditioning": "none"}),
    "ldm DDIM-20 widths 32-64": ("ldm", {"steps": 20}, {"conditioning": "none",
                                                        "widths": (32, 64)}),
    "ldm DDIM-20 labels guidance 2": ("ldm", {"steps": 20}, {}),
    "vae": ("vae", {}, {}),
    "dcgan": ("dcgan", {}, {}),
}


def build(name: str, changes: dict):
    model_class = registry.get_model(name)
    config = dataclasses.replace(model_class.default_config("digits"), **changes)
    model = model_class(config, image_shape=(28, 28, 1), num_classes=10, seed=0,
                        stages=stages.untrained(config, (28, 28, 1), 10, tiny=False))
    model.compile(jit_compile=False)
    return model


def variants(entries: list[str]) -> list[dict]:
    """Every entry with XLA on and off, each a separate model (own cached functions)."""
    built = []
    for entry in entries:
        name, options, changes = ENTRIES[entry]
        for xla in (False, True):
            model = build(name, changes)
            model.sampling_jit_compile = xla
            declared = model.knobs(model.config, model.image_shape).sampling_xla_on_cpu
            built.append({"entry": entry, "xla": xla, "model": model, "options": options,
                          "default": xla == base.xla_on_this_cpu(declared), "seconds": []})
    return built


def measure(built: list[dict], samples: int, rounds: int) -> None:
    for variant in built:  # trace (and compile) at the timed size first
        variant["model"].generate(samples, seed=0, **variant["options"]).numpy()
    for round_index in range(rounds):
        shift = round_index % len(built)
        for variant in built[shift:] + built[:shift]:
            start = time.perf_counter()
            variant["model"].generate(samples, seed=round_index + 1,
                                      **variant["options"]).numpy()
            variant["seconds"].append(time.perf_counter() - start)


def report(built: list[dict], samples: int, rounds: int) -> str:
    machine = device.describe()["name"]
    date = datetime.date.today().isoformat()
    entries = list(dict.fromkeys(variant["entry"] for variant in built))
    models = "" if entries == list(ENTRIES) else f' --models="{",".join(entries)}"'
    lines = [f"# Sampling with and without XLA ({machine}, {platform.machine()}, {date})", "",
             f"`python experiments/sampling_xla.py{models} --samples={samples} "
             f"--rounds={rounds}`: "
             f"images/s of `generate({samples})`, median of {rounds} interleaved rounds after "
             "a traced call; untrained default configs. **bold**: what `jit_compile=auto` "
             "picks on a CPU (`Knobs.sampling_xla_on_cpu`).", "",
             "| model | graph mode | XLA | XLA / graph |", "| --- | ---: | ---: | ---: |"]
    for entry in entries:
        rates = {}
        for variant in built:
            if variant["entry"] == entry:
                rate = samples / float(np.median(variant["seconds"]))
                rates[variant["xla"]] = f"**{rate:.1f}**" if variant["default"] else f"{rate:.1f}"
                rates[f"raw{variant['xla']}"] = rate
        lines.append(f"| {entry} | {rates[False]} | {rates[True]} | "
                     f"{rates['rawTrue'] / rates['rawFalse']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ENTRIES),
                        help=f"comma-separated entries of {list(ENTRIES)}")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default=None,
                        help="default: experiments/results/sampling_xla_<machine>.md")
    args = parser.parse_args()
    entries = [entry.strip() for entry in args.models.split(",") if entry.strip()]
    unknown = [entry for entry in entries if entry not in ENTRIES]
    if unknown:
        parser.error(f"unknown entries {unknown}; choose from {list(ENTRIES)}")
    built = variants(entries)
    measure(built, args.samples, args.rounds)
    text = report(built, args.samples, args.rounds)
    output = args.output or str(
        ROOT / f"experiments/results/sampling_xla_{device.describe()['slug']}.md")
    pathlib.Path(output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
