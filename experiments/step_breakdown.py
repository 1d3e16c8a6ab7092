"""Where a train step's time goes: dcgan and ddpm with one part removed or changed at a time.

    python experiments/step_breakdown.py            # prints a markdown table (about 3 min)

Each row is the benchmark's own measurement (`aigc_zoo.benchmark.train_throughput`: `model.fit`
on one real digits batch held in memory, graph mode, steps_per_execution 1, float32, median of 3
windows) and FLOP count (`aigc_zoo.flops`) for a variant of the default config. Variants that
change no config field patch the model for this experiment only: "no EMA update" makes
`after_update` a no-op; "GroupNorm -> identity" builds the U-Net with its GroupNormalization
layers replaced by identities. MFU is against the float32 matmul peak measured first.
"""

import contextlib
import dataclasses
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import keras  # noqa: E402

from aigc_zoo import benchmark, data, flops, registry, train  # noqa: E402

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


@contextlib.contextmanager
def _patched(name: str | None):
    if name != "no_groupnorm":
        yield
        return
    original = keras.layers.GroupNormalization
    keras.layers.GroupNormalization = lambda *args, **kwargs: keras.layers.Identity()
    try:
        yield
    finally:
        keras.layers.GroupNormalization = original


def measure(model_name: str, changes: dict, patch: str | None, peak: float) -> dict:
    model_class = registry.get_model(model_name)
    config = dataclasses.replace(model_class.default_config("digits"), **changes)
    run = train.Run(model=model_name, dataset="digits", config=config)
    pipeline, info = data.load("digits", "train", batch_size=config.batch_size, training=True)
    batch = next(iter(pipeline))
    original_build = benchmark._build

    def build(*args, **kwargs):
        with _patched(patch):
            model = original_build(*args, **kwargs)
        if patch == "no_ema":
            model.after_update = lambda group: None
        return model

    benchmark._build = build
    try:
        step_flops = flops.train_step_flops(build(run, info, jit=False, spe=1,
                                                  precision="float32"), batch)
        row = benchmark.train_throughput(run, info, batch, jit=False, spe=1,
                                         precision="float32", window_seconds=1.0, windows=3)
    finally:
        benchmark._build = original_build
    per_image = step_flops / config.batch_size
    return {"images_per_second": row["images_per_second"], "gflop_per_image": per_image / 1e9,
            "mfu": per_image * row["images_per_second"] / 1e9 / peak,
            "ms_per_step": row["seconds_per_step"] * 1e3}


def main() -> None:
    peak = benchmark.matmul_peak("float32")["gflops"]
    print(f"float32 matmul peak: {peak:.0f} GFLOP/s\n")
    print("| model | variant | ms / step | images/s | GFLOP / image | MFU |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for model_name, variants in VARIANTS.items():
        for label, changes, patch in variants:
            r = measure(model_name, changes, patch, peak)
            print(f"| {model_name} | {label} | {r['ms_per_step']:.0f} | "
                  f"{r['images_per_second']:,.0f} | {r['gflop_per_image']:.3f} | "
                  f"{r['mfu']:.0%} |", flush=True)
    print(f"\nfloat32 matmul peak at the end: {benchmark.matmul_peak('float32')['gflops']:.0f} "
          "GFLOP/s")


if __name__ == "__main__":
    main()
