"""What a trained workdir gives: its model restored, samples (`--mode=sample`) and an
evaluation (`--mode=eval`). The export (`--mode=export`) restores through `restore` too.

    run, model = trained.restore("runs/vae-digits")
    trained.sample(request.SampleRequest("runs/vae-digits", num_samples=16))
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import time
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from aigc_zoo import callbacks, data, domains, files, plots, registry, shards, text
from aigc_zoo import config as config_lib
from aigc_zoo.checkpoints import Checkpointer
from aigc_zoo.errors import UserError
from aigc_zoo.metrics import attributes
from aigc_zoo.models.base import GenerativeModel
from aigc_zoo.request import (DEFAULT_SAMPLES_PER_PROMPT, EvalRequest, Run, SampleRequest,
                              check_held_samples)
from aigc_zoo.workdir import Workdir


def restore(workdir: str, *, expected_model: str | None = None,
            overrides: Sequence[str] = (), mode: str = "sample"
            ) -> tuple[Run, GenerativeModel]:
    """The run saved in `workdir` and its model with the latest checkpoint's weights.

    Args:
        workdir: a trained run's folder.
        expected_model: when given, the model name the workdir must hold.
        overrides: `name=value` changes of the config's sampling fields
            (`config.sampling_field`), which the returned run and model then have.
        mode: the `--mode` asking, for the message when an override is not a sampling field.
    """
    folder = Workdir(workdir)
    record = folder.require()
    if expected_model is not None and record.run.model != expected_model:
        raise UserError(f"{workdir} holds a {record.run.model!r} run, "
                        f"not {expected_model!r}")
    run = record.run
    if overrides:
        run = dataclasses.replace(run, config=config_lib.override_sampling(
            run.config, overrides, mode=mode))
    run.check_sizes(record.image_shape)  # an override may ask for larger evaluation batches
    # Sampling fields do not change the networks, so the checkpoint fits the changed config.
    model = run.build_model(record.image_shape, record.num_classes, record.stages)
    model.compile(jit_compile=False)  # creates the optimizers the checkpoint also holds
    checkpointer = Checkpointer(folder.saved_checkpoints, model)
    checkpointer.restore_latest()
    if checkpointer.restored_path is None:
        raise UserError(f"{workdir} has no checkpoint yet: train there first (--mode=train)")
    return run, model


# The picture of `--mode=sample` shows at most the first this many samples (a 50x50 grid of
# images, or the 2D datasets' usual scatter of 2,500 points); the data files hold them all.
PICTURE_SAMPLES = 2500


def sample(request: SampleRequest) -> dict[str, str]:
    """Write a picture (PNG) of the first samples and all the samples' arrays (`shards`: one
    `.npz`, or a folder of shards with an index); their paths (`png`, `npz`).

    The arrays are `images` and every conditioning input they were drawn with (`labels`; a
    text model's `prompts`, one string per sample, and their `tokens`). A text model draws
    `samples_per_prompt` samples for each prompt (`SampleRequest`), and its picture shows
    each prompt above its row of samples.
    Samples are drawn `config.batch_size` at a time (the batch the run trained on, with its
    gradients, so it fits the device), the first batch with `seed`, batch `b` > 0 with a seed
    derived from `(seed, b)`: the first samples are the same whatever `num_samples` is.
    Memory holds one shard and one batch at a time; a line of progress is printed whenever a
    shard has been written.
    """
    # Prompts are checked first: a bad one is reported without building the model.
    prompts, tokens = _prompts(request, Workdir(request.workdir).require().run)
    run, model = restore(request.workdir, expected_model=request.expected_model,
                         overrides=request.overrides, mode="sample")
    if request.labels is not None and not model.conditional:
        raise UserError(f"{run.model} {_trained_without(run, 'labels')}: it takes no --labels")
    num_samples = request.num_samples if prompts is None else len(prompts)
    if request.labels is not None and not all(0 <= n < model.num_classes for n in request.labels):
        raise UserError(f"bad value labels: labels must be in [0, {model.num_classes})")
    folder = Workdir(request.workdir).output("samples")
    _check_disk_space(folder, num_samples, model.image_shape)
    stem = os.path.join(folder, f"samples_step{int(model.global_step.numpy())}_seed{request.seed}")
    batch = min(run.config.batch_size, num_samples)
    writer = shards.Writer(stem, num_samples, model.image_shape)
    picture, started = [], time.monotonic()
    for index, start in enumerate(range(0, num_samples, batch)):
        count = min(batch, num_samples - start)
        images, labels = _draw_batch(request, model, tokens, index, start, count)
        arrays = {} if labels is None else {"labels": np.asarray(labels, np.int32)}
        if prompts is not None:
            arrays.update(prompts=np.asarray(prompts[start:start + count]),
                          tokens=tokens[start:start + count])
        writer.add(images, arrays)
        if start < PICTURE_SAMPLES:
            picture.append(images[:PICTURE_SAMPLES - start])
        done = start + count
        if writer.sharded and (done // writer.shard_size > start // writer.shard_size
                               or done == num_samples):  # a shard was written
            seconds = time.monotonic() - started
            print(f"sampled {done:,}/{num_samples:,} in {seconds:.0f} s, about "
                  f"{seconds * (num_samples - done) / done:.0f} s left", flush=True)
    path = writer.close()
    _save_sample_picture(stem + ".png", np.concatenate(picture), request, run, model, prompts)
    return {"png": stem + ".png", "npz": path}


def _draw_batch(request: SampleRequest, model: GenerativeModel, tokens: np.ndarray | None,
                index: int, start: int, count: int) -> tuple[np.ndarray, list[int] | None]:
    """Batch `index` of the samples, `count` from sample `start` on, and its labels (or None)."""
    labels = request.labels_for(start, start + count, model.num_classes
                                if model.conditional else None)
    # The first batch draws with the seed itself: up to a batch, the samples are
    # `generate(n, seed=seed)`'s, the export's and those of earlier versions.
    seed = request.seed if index == 0 else int(
        np.random.SeedSequence([request.seed, index]).generate_state(1)[0])
    try:
        images = model.generate(count, seed=seed, labels=labels, tokens=None if tokens is None
                                else tokens[start:start + count]).numpy()
    except ValueError as error:  # a sampling option's value
        raise UserError(str(error)) from None
    return images, labels


def _save_sample_picture(path: str, shown: np.ndarray, request: SampleRequest, run: Run,
                         model: GenerativeModel, prompts: list[str] | None) -> None:
    """Save the picture of `--mode=sample`: a text model's prompts above their rows."""
    title = f"{run.model} on {run.dataset}, seed {request.seed}"
    if prompts is None:
        domains.for_dataset(run.dataset).save_picture(path, shown, title=title)
    else:
        per_prompt = request.samples_per_prompt or DEFAULT_SAMPLES_PER_PROMPT
        plots.save_prompt_grid(path, shown, prompts[:len(shown):per_prompt],
                               title=title + (f", guidance {model.config.guidance:g}"
                                              if hasattr(model.config, "guidance") else ""))


def _trained_without(run: Run, what: str) -> str:
    """"is unconditional" or "was trained with conditioning=...", for the error of a
    conditioning input the run's model does not take."""
    conditioning = getattr(run.config, "conditioning", None)
    if conditioning is None:
        return f"takes no {what}" if what == "prompts" else "is unconditional"
    return f"was trained with conditioning={conditioning}"


def _prompts(request: SampleRequest, run: Run) -> tuple[list[str] | None, np.ndarray | None]:
    """A text model's prompt for each sample (each of the request's prompts, or of the
    default ones, `samples_per_prompt` times) and their tokens; (None, None) for another
    model, which may not be given prompts."""
    prompted = request.prompts is not None or request.samples_per_prompt is not None
    if not registry.get_model(run.model).takes_text(run.config):
        if prompted:
            flag = "--prompt" if request.prompts is not None else "--samples_per_prompt"
            raise UserError(f"{run.model} {_trained_without(run, 'prompts')}: it takes no "
                            f"{flag} (text prompts are for text-conditional models)")
        return None, None
    from aigc_zoo import training  # the default prompts are the per-epoch picture's
    tokenizer = text.load_for(request.workdir, run.config)
    per_prompt = request.samples_per_prompt or DEFAULT_SAMPLES_PER_PROMPT
    given = list(request.prompts) if request.prompts is not None else training.default_prompts(
        run, tokenizer, max(1, request.num_samples // per_prompt), data_dir=request.data_dir)
    rows = [prompt for prompt in given for _ in range(per_prompt)]
    # An unknown word or an over-long prompt is one line here, before anything is drawn.
    return rows, tokenizer.encode(rows)


def _check_disk_space(folder: str, num_samples: int, sample_shape: Sequence[int]) -> None:
    """`UserError` before anything is drawn when the samples' float32 arrays (an upper bound
    of the compressed files) would not fit the free space of `folder`'s file system."""
    needed = 4 * num_samples * int(np.prod(sample_shape, dtype=np.int64))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing) or "."
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise UserError(f"{num_samples:,} samples need up to {needed / 2**30:.1f} GiB and "
                        f"{existing} has {free / 2**30:.1f} GiB free; ask for fewer "
                        "(--num_samples) or free space")


def evaluation_data(run: Run, model: GenerativeModel, workdir: str, *,
                    data_dir: str | None = None) -> tuple[Any, int]:
    """The eval split as a model's own evaluation (`evaluate_model`) reads it, in batches of
    100, and how many examples were left out: a text model's examples carry their caption as
    `tokens` (so a likelihood is given the caption), those whose caption has a word outside
    the run's tokenizer left out; other models' are `data.load`'s (with the model's task)."""
    knobs = model.knobs(model.config, model.image_shape)
    if not model.takes_text(model.config):
        dataset, _ = data.load(run.dataset, run.eval_split, batch_size=100, training=False,
                               data_dir=data_dir, image_size=run.image_size, task=knobs.task)
        return dataset, 0
    tokenizer = text.load_for(workdir, run.config)
    split, info = data.open_captioned(run.dataset, run.eval_split, data_dir=data_dir,
                                      image_size=run.image_size)
    encodable = np.array([tokenizer.encodes(caption) for caption in
                          data.captions(run.dataset, run.eval_split, data_dir=data_dir)], bool)
    if not encodable.any():
        raise UserError(f"no caption of {run.dataset} split {run.eval_split!r} fits this "
                        "model's vocabulary")
    mask = tf.constant(encodable)
    split = split.enumerate().filter(lambda i, _: mask[i]).map(lambda _, example: example)
    info = dataclasses.replace(info, num_examples=int(encodable.sum()))
    dataset = data.batches(data.with_tokens(split, text.GraphTokenizer(tokenizer)), info,
                           split=run.eval_split, batch_size=100, training=False)
    return dataset, int((~encodable).sum())


def evaluate(request: EvalRequest) -> dict[str, Any]:
    """Evaluate the latest checkpoint; write `metrics.json` and TensorBoard (`tensorboard/eval`).

    The request's `overrides` change the config's sampling and evaluation fields
    (`config.sampling_field`), such as `eval_importance_samples=400` or `sample_steps=50`.

    Returns:
        What `metrics.json` holds: the run, split, seed, step and date, `metrics` (the model's
        own `evaluate_model`, e.g. likelihoods) and what the dataset's domain measures
        (`sample_quality` for images, `mode_coverage` for 2D points; `Domain.report`).
    """
    run, model = restore(request.workdir, expected_model=request.expected_model,
                         overrides=request.overrides, mode="eval")
    run = dataclasses.replace(run, eval_split=request.eval_split or run.eval_split)
    knobs = model.knobs(model.config, model.image_shape)
    quality = None if request.quality is None else request.quality.sized(knobs.sampling_cost)
    if quality is not None:
        check_held_samples(quality.num_samples, model.image_shape)
    # The evaluator first: a missing extractor (no labels, no Inception weights offline) fails
    # before the model's own evaluation has run.
    evaluator = domains.for_dataset(run.dataset, task=knobs.task, target=knobs.target).evaluator(
        run, quality, data_dir=request.data_dir)
    if evaluator is None and not knobs.evaluates:
        raise UserError(f"{run.model} has no evaluation of its own; measure sample quality "
                        "with --eval_samples > 0")
    # A text-conditional model's samples are drawn for the eval captions, and its prompt
    # agreement measured; the attribute probe too is loaded (or trained) before anything runs.
    agreement = attributes.prepare(run, model, request.workdir, quality, evaluator,
                                   data_dir=request.data_dir)
    step = int(model.global_step.numpy())
    results = {
        "model": run.model, "dataset": run.dataset, "split": run.eval_split,
        "seed": request.seed, "step": step, **({"task": knobs.task} if knobs.task else {}),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "metrics": {},
    }
    if knobs.evaluates:
        dataset, skipped = evaluation_data(run, model, request.workdir, data_dir=request.data_dir)
        results["metrics"] = model.evaluate_model(dataset, seed=request.seed)
        if skipped:
            results["metrics"]["skipped_captions"] = skipped
    scalars = {name: value for name, value in results["metrics"].items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    if evaluator is not None:
        entries, values = evaluator.evaluate(model, seed=request.seed)
        results.update(entries)
        scalars.update(values)
    if agreement is not None:
        results["prompt_agreement"] = agreement.evaluate(model, seed=request.seed)
        scalars.update(attributes.scalars(results["prompt_agreement"]))
    workdir = Workdir(request.workdir)
    files.write_json(workdir.metrics_path, results)
    callbacks.write_scalars(os.path.join(workdir.output("tensorboard"), "eval"), step,
                            {f"eval/{name}": value for name, value in scalars.items()})
    return results
