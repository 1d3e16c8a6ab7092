"""Keras's Adam against the zoo's fused Adam (aigc_zoo/optimizers.py), per model: trace time
and train-step speed at the runner's default setting, timed in the same interleaved rounds.

    python experiments/fused_adam.py [--models=vae,dcgan,ddpm,pixelcnn,vqgpt] [--windows=7]
    python experiments/fused_adam.py --variants=per_variable,fused --models=ddpm,vqgpt

`--variants` names the two compared, the first as the baseline: `keras` (Keras's Adam),
`fused` (the zoo's) and `per_variable` (the zoo's kernel with its scalar inputs, the step's
bias-correction powers and casts, made again for every variable, as before 2026-12-07).

Each model is built twice from its default config, once while the models' `optimizers.Adam`
and `optimizers.AdamW` are Keras's own classes and once with the zoo's; everything else (the
network, its batch, the step) is the same. The trace time is the first `fit` call's excess
over a step (one trace each, so noisier than the speeds); the speeds are medians of windows
timed round by round (experiments/augment_cost.py), with the CPU time per image, which
follows other jobs on the machine much less than the wall time does.
"""

import argparse

import keras
import numpy as np

from augment_cost import time_rounds

from aigc_zoo import benchmark, data, optimizers

def _per_variable(cls):
    def apply(self, grads, trainable_variables=None):
        self._step_scalars = None  # no sharing: `_scalars` makes them for each variable
        return super(optimizers._FusedUpdate, self).apply(grads, trainable_variables)
    return type(f"PerVariable{cls.__name__}", (cls,), {"apply": apply})


VARIANTS = {"keras": (keras.optimizers.Adam, keras.optimizers.AdamW),
            "fused": (optimizers.Adam, optimizers.AdamW),
            "per_variable": (_per_variable(optimizers.Adam), _per_variable(optimizers.AdamW))}


def _prepared(entry: str, variant: str, *, window_seconds: float, data_dir) -> dict:
    run = benchmark.entry_run(entry)
    split, info = data.open_split(run.dataset, run.train_split, data_dir=data_dir)
    batch = next(iter(data.batches(split, info, split=run.train_split,
                                   batch_size=run.config.batch_size, training=True,
                                   task=run.knobs(info.image_shape).task)))
    setting = benchmark.default_setting(run, info, accelerator=False)
    zoo_classes = optimizers.Adam, optimizers.AdamW
    optimizers.Adam, optimizers.AdamW = VARIANTS[variant]  # what the models construct
    try:
        prepared = benchmark._prepare(run, info, batch, jit=setting["jit_compile"],
                                      spe=setting["steps_per_execution"], precision="float32",
                                      window_seconds=window_seconds)
    finally:
        optimizers.Adam, optimizers.AdamW = zoo_classes
    prepared["batch_size"] = run.config.batch_size
    return prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vae,dcgan,ddpm,pixelcnn,vqgpt")
    parser.add_argument("--windows", type=int, default=7)
    parser.add_argument("--window_seconds", type=float, default=2.0)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--variants", default="keras,fused")
    args = parser.parse_args()
    base, new = args.variants.split(",")
    print(f"| model | trace s, {base} | trace s, {new} | images/s, {base} | images/s, {new} | "
          f"speed-up (wall) | CPU ms per image, {base} | {new} |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for index, entry in enumerate(args.models.split(",")):
        # Alternate which variant traces first: the first trace of a model pays some warm-up.
        order = (base, new) if index % 2 == 0 else (new, base)
        prepared = {variant: _prepared(entry, variant, window_seconds=args.window_seconds,
                                       data_dir=args.data_dir) for variant in order}
        settings = [prepared[base], prepared[new]]
        wall, cpu = time_rounds(settings, args.windows)
        size = settings[0]["batch_size"]
        speeds = [size / np.median(w) for w in wall]
        costs = [1000 * np.median(c) / size for c in cpu]
        traces = [s["row"]["trace_seconds"] for s in settings]
        print(f"| {entry} | {traces[0]:.1f} | {traces[1]:.1f} | {speeds[0]:,.0f} | "
              f"{speeds[1]:,.0f} | {speeds[1] / speeds[0]:.2f} | {costs[0]:.3f} | "
              f"{costs[1]:.3f} |", flush=True)
        del prepared, settings
        keras.backend.clear_session()


if __name__ == "__main__":
    main()
