"""Sampling images/s of `ldm` (on a `klae`'s 7x7x4 latents, decode included) against pixel-space
`ddpm`, both in their default configs, unconditional, by DDIM at the same number of steps.

Untrained weights (the speed does not depend on them; `stages.untrained` gives the default
`klae`). Each model's sampler is traced and run once before the timed repeats.

    nice -n 10 python experiments/ldm_sampling_speed.py [--samples=64 --steps=20 --repeats=3]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from aigc_zoo import registry, stages

IMAGE_SHAPE = (28, 28, 1)


def build(name: str):
    model_class = registry.get_model(name)
    config = model_class.default_config()
    if name == "ldm":
        config = dataclasses.replace(config, conditioning="none")
    return model_class(config, image_shape=IMAGE_SHAPE, num_classes=10,
                       stages=stages.untrained(config, IMAGE_SHAPE, 10))


def images_per_second(model, samples: int, steps: int, repeats: int) -> float:
    model.generate(samples, seed=0, steps=steps)  # trace
    best = float("inf")
    for repeat in range(repeats):
        start = time.perf_counter()
        model.generate(samples, seed=repeat + 1, steps=steps)
        best = min(best, time.perf_counter() - start)
    return samples / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rates = {}
    for name in ("ddpm", "ldm"):
        model = build(name)
        rates[name] = images_per_second(model, args.samples, args.steps, args.repeats)
        parameters = sum(int(v.shape.num_elements()) for v in model.unet.trainable_weights)
        print(f"{name}: {rates[name]:.1f} images/s (best of {args.repeats}, {args.samples} "
              f"samples, {args.steps} DDIM steps; U-Net {parameters:,} parameters)", flush=True)
    print(f"ldm / ddpm: {rates['ldm'] / rates['ddpm']:.2f}x")


if __name__ == "__main__":
    main()
