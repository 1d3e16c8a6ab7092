"""Where a train step's time goes: dcgan and ddpm with one part removed or changed at a time.

    python experiments/step_breakdown.py     # prints a markdown table (about 6 min on 2 cores)

For each model, every variant of its default config is built in one process and traced, then
timed in interleaved rounds: each round runs one `model.fit` of `--steps` steps per variant,
in turn, on one real digits batch held in memory (graph mode, steps_per_execution 1, float32).
A variant's time is its median over the rounds. Interleaving matters: separate timings of the
same setting minutes apart differed by about 10% here, while variants timed round by round
compare within a few percent. FLOPs come from `aigc_zoo.flops`; MFU is against the float32
matmul peak measured at the start.

Variants that change no config field patch the model for this experiment only: "no EMA update"
makes `after_update` a no-op; "GroupNorm -> identity" builds the U-Net with its group norm
layers replaced by identities.
"""

import argparse
import contextlib
import dataclasses
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from aigc_zoo import benchmark, data, flops, registry, request  # noqa: E402

VARIANTS = {
    "dcgan": [("default", {}, None), ("no EMA update", {}, "no_ema"),
              ("no batch norm in G", {"generator_batch_norm": False}, None),
              ("batch 256", {"batch_size": 256}, None)],
    "ddpm": [("default", {}, None), ("no EMA update", {}, "no_ema"),
             ("no gradient clipping", {"gradient_clip": 0.0}, None),
             ("no attention", {"attention": False}, None),
             ("GroupNorm -> identity", {}, "no_groupnorm"),
             ("widths 32,64,128", {"widths": (32, 64, 128)}, None),
             ("batch 256", {"batch_size": 256}, None)],
}


_REPLACEMENTS = {
    "no_groupnorm": ("GroupNormalization", lambda *args, **kwargs: keras.layers.Identity()),
}


@contextlib.contextmanager
def _patched(name: str | None):
    """The networks built inside use the replacement of `name` for one normalisation class."""
    if name not in _REPLACEMENTS:
        yield
        return
    attribute, replacement = _REPLACEMENTS[name]
    original = getattr(keras.layers, attribute)
    setattr(keras.layers, attribute, replacement)
    try:
        yield
    finally:
        setattr(keras.layers, attribute, original)


def build_variant(model_name: str, changes: dict, patch: str | None):
    """(model, run) of one variant, compiled for graph mode, float32, steps_per_execution 1."""
    model_class = registry.get_model(model_name)
    config = dataclasses.replace(model_class.default_config("digits"), **changes)
    run = request.Run(model=model_name, dataset="digits", config=config)
    info = data.open_split("digits", "train")[1]
    with _patched(patch):
        model = run.build_model(info.image_shape, info.num_classes)
    if patch == "no_ema":
        model.after_update = lambda group: None
    model.compile(jit_compile=False, steps_per_execution=1)
    return model, run


def measure_model(model_name: str, peak: float, *, rounds: int, steps: int) -> list[dict]:
    """Rows of every variant of `model_name`, timed in interleaved rounds."""
    variants = []
    for label, changes, patch in VARIANTS[model_name]:
        model, run = build_variant(model_name, changes, patch)
        batch_size = run.config.batch_size
        pipeline, _ = data.load("digits", "train", batch_size=batch_size, training=True)
        batch = next(iter(pipeline))
        in_memory = data.with_fixed_tuning(tf.data.Dataset.from_tensors(batch).repeat())
        step_flops = flops.train_step_flops(model, batch)
        model.fit(in_memory, epochs=1, steps_per_epoch=3, verbose=0)  # trace and warm up
        variants.append({"label": label, "model": model, "data": in_memory, "seconds": [],
                         "batch_size": batch_size, "flops": step_flops})
    for _ in range(rounds):
        for variant in variants:
            start = time.perf_counter()
            variant["model"].fit(variant["data"], epochs=1, steps_per_epoch=steps, verbose=0)
            variant["seconds"].append((time.perf_counter() - start) / steps)
    rows = []
    for variant in variants:
        seconds = float(np.median(variant["seconds"]))
        rows.append({"model": model_name, "variant": variant["label"],
                     "ms_per_step": seconds * 1e3,
                     "images_per_second": variant["batch_size"] / seconds,
                     "gflop_per_image": variant["flops"] / variant["batch_size"] / 1e9,
                     "mfu": variant["flops"] / seconds / 1e9 / peak,
                     "spread": (min(variant["seconds"]) * 1e3, max(variant["seconds"]) * 1e3)})
    keras.backend.clear_session()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=0,
                        help="steps per fit call (default: about 2 s of the default config)")
    args = parser.parse_args()
    peak = benchmark.matmul_peak("float32")["gflops"]
    print(f"float32 matmul peak: {peak:.0f} GFLOP/s\n")
    print("| model | variant | ms / step | fastest-slowest round | images/s | GFLOP / image "
          "| MFU |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for model_name in VARIANTS:
        steps = args.steps or {"dcgan": 50, "ddpm": 6}.get(model_name, 10)
        for r in measure_model(model_name, peak, rounds=args.rounds, steps=steps):
            print(f"| {r['model']} | {r['variant']} | {r['ms_per_step']:.0f} | "
                  f"{r['spread'][0]:.0f}-{r['spread'][1]:.0f} | {r['images_per_second']:,.0f} | "
                  f"{r['gflop_per_image']:.3f} | {r['mfu']:.0%} |", flush=True)
    print(f"\nfloat32 matmul peak at the end: {benchmark.matmul_peak('float32')['gflops']:.0f} "
          "GFLOP/s")


if __name__ == "__main__":
    main()
