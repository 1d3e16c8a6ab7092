"""Sampling images/s with XLA on and off on this machine: what `Knobs.sampling_xla_on_cpu` rests on.

    python experiments/sampling_xla.py                       # the default models below
    python experiments/sampling_xla.py --models=pixelcnn --samples=256 --rounds=5

Each model is built with its default config and untrained weights (the cost of sampling does
not depend on the weights; staged models get untrained default first stages). Both variants
of every entry are traced first; then the variants are timed in interleaved rounds, the order
rotating each round, and the median is reported. Writes experiments/results/sampling_xla.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from aigc_zoo import device, registry, stages  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
# (model, sampling options): the sequential samplers next to single-pass and diffusion ones.
ENTRIES = {
    "pixelcnn": ("pixelcnn", {}),
    "vqgpt": ("vqgpt", {}),
    "vqgpt guidance 1": ("vqgpt", {"guidance": 1.0}),
    "ddpm DDIM-20": ("ddpm", {"steps": 20}),
    "vae": ("vae", {}),
    "dcgan": ("dcgan", {}),
}


def build(name: str):
    model_class = registry.get_model(name)
    config = model_class.default_config("digits")
    model = model_class(config, image_shape=(28, 28, 1), num_classes=10, seed=0,
                        stages=stages.untrained(config, (28, 28, 1), 10, tiny=False))
    model.compile(jit_compile=False)
    return model


def variants(entries: list[str]) -> list[dict]:
    """Every entry with XLA on and off, each a separate model (own cached functions)."""
    built = []
    for entry in entries:
        name, options = ENTRIES[entry]
        for xla in (False, True):
            model = build(name)
            model.sampling_jit_compile = xla
            declared = model.knobs(model.config, model.image_shape).sampling_xla_on_cpu
            built.append({"entry": entry, "xla": xla, "model": model, "options": options,
                          "default": xla == declared, "seconds": []})
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
    lines = [f"# Sampling with and without XLA ({machine}, {platform.machine()}, {date})", "",
             f"`python experiments/sampling_xla.py --samples={samples} --rounds={rounds}`: "
             f"images/s of `generate({samples})`, median of {rounds} interleaved rounds after "
             "a traced call; untrained default configs. **bold**: what `jit_compile=auto` "
             "picks on a CPU (`Knobs.sampling_xla_on_cpu`).", "",
             "| model | graph mode | XLA | XLA / graph |", "| --- | ---: | ---: | ---: |"]
    for entry in dict.fromkeys(variant["entry"] for variant in built):
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
    parser.add_argument("--output", default=str(ROOT / "experiments/results/sampling_xla.md"))
    args = parser.parse_args()
    entries = [entry.strip() for entry in args.models.split(",") if entry.strip()]
    unknown = [entry for entry in entries if entry not in ENTRIES]
    if unknown:
        parser.error(f"unknown entries {unknown}; choose from {list(ENTRIES)}")
    built = variants(entries)
    measure(built, args.samples, args.rounds)
    text = report(built, args.samples, args.rounds)
    pathlib.Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
