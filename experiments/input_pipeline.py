"""Input pipeline throughput against the train step's, for a model on its default dataset.

    python experiments/input_pipeline.py --model=vae     # prints and writes experiments/results/

The pipeline is timed alone (iterating `data.load(...)` as training does); the train step is
timed on one batch held in memory, so neither waits for the other. The pipeline should deliver
many times what the step consumes (DESIGN.md §6).
"""

import argparse
import datetime
import os
import pathlib
import platform
import time

from aigc_zoo import data, registry, request

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pipeline_images_per_second(dataset, batch_size: int, batches: int) -> float:
    iterator = iter(dataset)
    for _ in range(20):  # warm-up: fills the cache and the prefetch buffer
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def train_step_images_per_second(model, batch, batch_size: int, steps: int) -> float:
    import tensorflow as tf
    in_memory = data.with_fixed_tuning(tf.data.Dataset.from_tensors(batch).repeat())
    model.fit(in_memory, epochs=1, steps_per_epoch=10, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(in_memory, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vae")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()

    model_class = registry.get_model(args.model)
    config = model_class.default_config()
    run = request.Run(model=args.model, dataset=args.dataset or model_class.default_dataset,
                      config=config)
    dataset, info = data.load(run.dataset, run.train_split, batch_size=config.batch_size,
                              training=True, data_dir=args.data_dir)
    pipeline = pipeline_images_per_second(dataset, config.batch_size, args.batches)
    model = run.build_model(info.image_shape, info.num_classes)
    model.compile(jit_compile="auto")
    step = train_step_images_per_second(model, next(iter(dataset)), config.batch_size, args.steps)

    machine = " ".join(filter(None, [platform.machine(), platform.processor(),
                                     f"{os.cpu_count()} cores"]))
    date = datetime.date.today().isoformat()
    lines = [
        f"Measured {date} on {machine} by "
        f"`python experiments/input_pipeline.py --model={args.model}`",
        "",
        "| model | dataset | batch | input pipeline (images/s) | train step (images/s) | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {run.model} | {run.dataset} | {config.batch_size} | {pipeline:,.0f} | {step:,.0f} "
        f"| {pipeline / step:.1f}x |",
    ]
    print("\n".join(lines))
    output = ROOT / "experiments" / "results" / f"input_pipeline_{run.model}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    print(f"wrote {output.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
