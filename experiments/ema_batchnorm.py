"""Why the averaged generator needs its own batch-norm statistics: mode coverage three ways.

    python -m aigc_zoo.run --model=wgan_gp --dataset=ring8     # a trained toy run
    python experiments/ema_batchnorm.py runs/wgan_gp-ring8

For each workdir (a GAN trained on `ring8` or `grid25`), 2,500 samples (seed 0) from
1. the live generator (its own moving statistics),
2. the weight average with the live generator's moving statistics (what a plain EMA gives),
3. the weight average with recomputed ("standing") statistics, what `generate()` uses.
"""

import argparse

from aigc_zoo import trained
from aigc_zoo.metrics import modes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    args = parser.parse_args()
    for workdir in args.workdirs:
        run, model = trained.restore(workdir)
        average = model.generator_average
        if average is None or not average.batch_norms:
            print(f"{workdir}: no weight average with batch norm")
            continue

        step = int(model.global_step.numpy())
        print(f"{workdir} ({run.model} on {run.dataset}, step {step})")
        # The checkpoint restored the live statistics into the average (update() copies them),
        # so the second row comes before the third recomputes them.
        for label, options in [("live generator", {"average": False}),
                               ("average, live batch-norm statistics", {"standing": False}),
                               ("average, standing statistics (default)", {})]:
            points = model.generate(modes.DEFAULT_NUM_SAMPLES, seed=0, **options).numpy()
            report = modes.format_report(modes.mode_coverage(points, run.dataset))
            print(f"  {label + ':':41s}{report}")


if __name__ == "__main__":
    main()
