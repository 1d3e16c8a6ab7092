"""Build everything from a run description and train, sample or evaluate; no model-specific code.

A run's workdir holds `config.json` (this `Run`), `checkpoints/`, `tensorboard/`, `samples/` and
`metrics.json`. Training in a workdir that already has the same run resumes from its latest
checkpoint; a different run there is refused unless `overwrite=True`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import tempfile
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from aigc_zoo import callbacks
from aigc_zoo import config as config_lib
from aigc_zoo import data
from aigc_zoo import distribute
from aigc_zoo import registry
from aigc_zoo.checkpoints import Checkpointer
from aigc_zoo.data import toy
from aigc_zoo.errors import TrainingDiverged, UserError
from aigc_zoo.metrics import modes
from aigc_zoo.metrics import sample_quality
from aigc_zoo.models.base import GenerativeModel

# Fields that may change between invocations in one workdir: training longer is resuming.
# `epoch_steps` is derived (from the config, the split and the code's defaults) and recorded so
# that a resume keeps the epoch length the run started with.
_RESUMABLE_FIELDS = {"epochs", "epoch_steps"}
# Config fields that only affect evaluation or sampling (e.g. the diffusion models'
# `sample_steps`), so `--mode=eval --set` may change them after training.
_EVAL_TIME_PREFIXES = ("eval_", "sample_")
# Mid-epoch checkpoints by default: a save of the default models took 11-114 ms on a 2-core
# CPU (docs/design.md), against 1,000 steps of tens of ms, so a crash loses at most 1,000 steps
# for well under 1% of the time; short runs (tests, tiny configs) save only at epoch ends.
DEFAULT_CHECKPOINT_EVERY_STEPS = 1000
# The runner's precision: float32 on every device, so that a command trains the same run on
# any machine (docs/performance.md on bfloat16, faster on some CPUs). Steps per compiled call
# and XLA on a CPU are per model (`default_steps_per_execution`, `xla_on_cpu`).
DEFAULT_PRECISION = "float32"


@dataclasses.dataclass
class Run:
    """Everything that defines a training run (and so its workdir).

    Args:
        model: registered model name.
        dataset: dataset name (see `data.list_datasets`).
        config: the model's config.
        seed: seeds weights, data order and the model's random draws.
        train_split / eval_split: dataset splits for training and for `--mode=eval`.
        image_size: resize images to this square size (None: the dataset's own size).
        precision: Keras dtype policy (`distribute.PRECISIONS`). Part of the run's identity:
            under `mixed_float16` every optimizer carries loss-scale state, so its checkpoints
            fit only a model of the same precision. (The strategy is not: a run may resume on
            another number of devices.)
    """

    model: str
    dataset: str
    config: config_lib.TrainConfig
    seed: int = 0
    train_split: str = "train"
    eval_split: str = "test"
    image_size: int | None = None
    precision: str = DEFAULT_PRECISION

    def to_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["config"] = config_lib.to_dict(self.config)
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "Run":
        model_class = registry.get_model(values["model"])
        config = config_lib.from_dict(model_class.config_class, values["config"])
        return cls(**{**values, "config": config})


def _paths(workdir: str) -> dict[str, str]:
    names = ("config.json", "checkpoints", "tensorboard", "samples", "metrics.json")
    return {name: os.path.join(workdir, name) for name in names}


def build_model(run: Run, image_shape: tuple[int, ...], num_classes: int | None) -> GenerativeModel:
    """The run's model with freshly initialised weights (seeded by `run.seed`).

    Built in `run.precision`; Keras' global dtype policy is restored afterwards, so one run's
    policy never leaks into models built later in the same process. Build it under a
    strategy's `scope()` to distribute it.
    """
    keras.utils.set_random_seed(run.seed)
    model_class = registry.get_model(run.model)
    previous = keras.mixed_precision.global_policy()
    distribute.set_precision(run.precision)
    try:
        return model_class(run.config, image_shape=image_shape, num_classes=num_classes,
                           seed=run.seed)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _write_json(path: str, values: dict[str, Any]) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(values, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, path)  # atomic: a crash never leaves half a file


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}") from None


def _saved_run(workdir: str) -> dict[str, Any] | None:
    """The workdir's `config.json`, or None when it has none."""
    config_path = _paths(workdir)["config.json"]
    return _read_json(config_path) if os.path.exists(config_path) else None


def prepare_workdir(workdir: str, saved: dict[str, Any], *, previous: dict[str, Any] | None
                    ) -> None:
    """Create `workdir` for the run `saved` (a `config.json` dict), or check that it resumes
    the run `previous` (the workdir's `config.json`; None for a new run or with --overwrite).

    Nothing is deleted here: with `overwrite`, `train` clears the previous run's outputs only
    once the new run has been built, so a mistake in the new command loses nothing.
    """
    if previous is not None:
        # Runs saved before `precision` existed were float32.
        differences = _differences({"precision": "float32", **previous}, saved)
        if differences:
            raise UserError(f"{workdir} holds a different run ({'; '.join(differences[:3])}); "
                            "pass --overwrite to replace it, or choose another --workdir")
    make_writable_folder(workdir, what="workdir")


def make_writable_folder(path: str, *, what: str) -> None:
    """Create the folder `path` if needed; a `UserError` naming `what` if it is not writable."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {what} {path}: {error.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{what} {path} is not writable")


def _clear_outputs(workdir: str) -> None:
    paths = _paths(workdir)
    for name in ("checkpoints", "tensorboard", "samples", "metrics.json"):
        if os.path.isdir(paths[name]):
            shutil.rmtree(paths[name])
        elif os.path.exists(paths[name]):
            os.remove(paths[name])


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(old) | set(new)):
        if key in _RESUMABLE_FIELDS:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} there, {b!r} now")
    return found


def train(run: Run, *, workdir: str, data_dir: str | None = None, overwrite: bool = False,
          jit_compile: str | bool = "auto", steps_per_execution: int | None = None,
          log_every_steps: int = 50,
          verbose: str | int = "auto", eval_every_epochs: int = 0,
          quality: sample_quality.Options = sample_quality.DEFAULT_OPTIONS, eval_seed: int = 0,
          checkpoint_every_steps: int = DEFAULT_CHECKPOINT_EVERY_STEPS, keep_checkpoints: int = 3,
          deterministic: bool = False, strategy: tf.distribute.Strategy | None = None
          ) -> GenerativeModel:
    """Train `run` in `workdir`, resuming from its latest checkpoint; returns the model.

    With `eval_every_epochs` > 0, sample quality (`quality`, seed `eval_seed`) is measured
    every that many epochs and written to `tensorboard/eval`. Checkpoints are written at every
    epoch end and, with `checkpoint_every_steps` > 0, also inside epochs; the newest
    `keep_checkpoints` are kept. A run resumes at the checkpoint's step, mid-epoch included.
    `deterministic` turns on TensorFlow's op determinism (needed for bitwise-equal resumes on
    accelerators; see docs/design.md).

    `steps_per_execution` None means the model's `default_steps_per_execution`, or the
    largest divisor of the steps per epoch below it (1 on a multi-worker strategy).

    `strategy` (default: the current one) holds the model, its optimizers, trackers and
    checkpoint; `fit` splits each global batch of `run.config.batch_size` between its
    replicas. On a multi-worker strategy every worker restores from `workdir`, but only the
    chief writes there: the others write their checkpoints, summaries and samples (which they
    must still produce, as saving reads variables collectively) to a temporary folder that is
    deleted at the end.
    """
    strategy = strategy or tf.distribute.get_strategy()
    chief = distribute.is_chief(strategy)
    scratch = None if chief else tempfile.mkdtemp(prefix="aigc_zoo_worker_")
    try:
        with strategy.scope():
            return _train(run, workdir=workdir, outputs=scratch or workdir, data_dir=data_dir,
                          overwrite=overwrite, jit_compile=jit_compile,
                          steps_per_execution=steps_per_execution,
                          log_every_steps=log_every_steps, verbose=verbose,
                          eval_every_epochs=eval_every_epochs, quality=quality,
                          eval_seed=eval_seed, checkpoint_every_steps=checkpoint_every_steps,
                          keep_checkpoints=keep_checkpoints, deterministic=deterministic,
                          replicas=strategy.num_replicas_in_sync,
                          multi_worker=isinstance(
                              strategy, tf.distribute.MultiWorkerMirroredStrategy))
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _train(run: Run, *, workdir: str, outputs: str, data_dir: str | None, overwrite: bool,
           jit_compile: str | bool, steps_per_execution: int | None, log_every_steps: int,
           verbose: str | int, eval_every_epochs: int, quality: sample_quality.Options,
           eval_seed: int, checkpoint_every_steps: int, keep_checkpoints: int,
           deterministic: bool, replicas: int, multi_worker: bool) -> GenerativeModel:
    """`train` under the strategy's scope; writes to `outputs` (the workdir on the chief)."""
    chief = outputs == workdir
    run.config.validate()
    if eval_every_epochs < 0:
        raise UserError(f"bad value eval_every_epochs={eval_every_epochs}: expected >= 0")
    _check_checkpoint_options(checkpoint_every_steps, keep_checkpoints)
    if deterministic:
        # Seeds: build_model seeds Python, NumPy and TensorFlow; the data order is seeded.
        tf.config.experimental.enable_op_determinism()
    dataset, info = _training_data(run, data_dir)
    # Checked before anything in the workdir changes (--overwrite clears it further down).
    previous = None if overwrite else _saved_run(workdir)
    steps_per_epoch = epoch_length(run, info.num_examples, previous=previous)
    if steps_per_execution is None:
        # Keras' loop of several steps per call failed under MultiWorkerMirroredStrategy here
        # ("You must feed a value for placeholder tensor ...while/cond/Placeholder"), so
        # multi-worker runs take one step per call unless told otherwise.
        steps_per_execution = (1 if multi_worker
                               else default_steps_per_execution(run, steps_per_epoch))
    _check_steps_per_execution(steps_per_epoch, steps_per_execution)
    saved = {**run.to_json(), "image_shape": list(info.image_shape),
             "num_classes": info.num_classes, "epoch_steps": steps_per_epoch}
    prepare_workdir(workdir, saved, previous=previous)
    paths = _paths(outputs)
    model = build_model(run, info.image_shape, info.num_classes)
    model.compile(jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    quality_callback = None
    if eval_every_epochs and not toy.is_toy(run.dataset):  # toy datasets: mode coverage
        quality_callback = callbacks.SampleQualityEvery(
            sample_quality_evaluator(run, quality, data_dir=data_dir),
            os.path.join(paths["tensorboard"], "eval"), every_epochs=eval_every_epochs,
            seed=eval_seed)
    if overwrite and chief:
        _clear_outputs(workdir)
    # Every worker resumes from the chief's checkpoint (after --overwrite there is none) and
    # saves to its own outputs. Every worker makes both Checkpointers, even when they share a
    # folder: a multi-worker strategy creates each variable collectively, in the same order.
    # (The chief restores through the Checkpointer that saves, which continues its numbering.)
    restorer = Checkpointer(_paths(workdir)["checkpoints"], model, max_to_keep=keep_checkpoints)
    checkpointer = Checkpointer(paths["checkpoints"], model, max_to_keep=keep_checkpoints)
    source = checkpointer if chief else restorer
    if chief or not overwrite:
        source.restore_latest()
    start_step = int(model.global_step.numpy())
    # The position comes from the step count, so a checkpoint written inside an epoch
    # resumes inside it.
    initial_epoch, offset = divmod(start_step, steps_per_epoch)
    if initial_epoch >= run.config.epochs:
        print(f"{workdir}: already trained {initial_epoch} epochs (asked for "
              f"{run.config.epochs}); raise --epochs to continue")
        return model
    if offset % steps_per_execution:
        raise UserError(f"{source.restored_path} is at step {start_step}, {offset} steps "
                        f"into an epoch, which --steps_per_execution={steps_per_execution} "
                        "does not divide; resume with the value of the run that wrote it "
                        "(1 if it was not given before 2026-11-29)")
    if chief:
        _write_json(paths["config.json"], saved)
    if start_step:
        print(f"resuming from {source.restored_path} at step {start_step} (epoch "
              f"{initial_epoch + 1}, step {offset} of {steps_per_epoch})", flush=True)
    hparams = {"model": run.model, "dataset": run.dataset, "seed": run.seed,
               "precision": run.precision, "replicas": replicas,
               **{k: v if isinstance(v, (int, float, str, bool)) else str(v)
                  for k, v in config_lib.to_dict(run.config).items()}}
    stop = callbacks.StopOnNonFinite()
    epoch_callbacks = [stop]
    if checkpoint_every_steps:
        epoch_callbacks.append(callbacks.CheckpointEverySteps(
            checkpointer, every_steps=checkpoint_every_steps, steps_per_epoch=steps_per_epoch))
    epoch_callbacks.append(callbacks.CheckpointEveryEpoch(checkpointer))
    if toy.is_toy(run.dataset):
        epoch_callbacks.append(callbacks.ModeCoverageEvery(
            run.dataset, os.path.join(paths["tensorboard"], "eval"), seed=eval_seed))
    if quality_callback:
        # Before TensorBoardLogger, which restarts its images/s clock after its own epoch end,
        # so evaluation time is not counted as training time.
        epoch_callbacks.append(quality_callback)
    all_callbacks = [*epoch_callbacks,
                     callbacks.TensorBoardLogger(paths["tensorboard"], hparams=hparams,
                                                 batch_size=run.config.batch_size,
                                                 log_every_steps=log_every_steps,
                                                 samples_dir=paths["samples"],
                                                 dataset=run.dataset)]
    # The seeded stream is replayed up to where the checkpoint left it, so a resumed run sees
    # the batches an uninterrupted one would (about a second per 4,000 batches of digits).
    # An interrupted epoch is finished by its own `fit` of the remaining steps, so Keras'
    # epoch-end callbacks (checkpoint, samples, evaluations) run for it as they would have;
    # the second `fit` replays the stream again from the next epoch's first batch, since every
    # `fit` starts a new iterator. It needs a new dataset too: the iterators of one shuffled
    # dataset share its seed generator, so a second iterator would draw another order.
    for number, (first_epoch, last_epoch, epoch_steps) in enumerate(_fit_segments(
            initial_epoch, offset, run.config.epochs, steps_per_epoch)):
        if number:
            dataset, _ = _training_data(run, data_dir)
            tf.random.set_seed(run.seed)  # as build_model left it
        skipped = first_epoch * steps_per_epoch + steps_per_epoch - epoch_steps
        model.fit(distribute.distribute_options(dataset.skip(skipped)),
                  epochs=last_epoch, initial_epoch=first_epoch, steps_per_epoch=epoch_steps,
                  verbose=verbose, shuffle=False,  # shuffled in data.load
                  callbacks=all_callbacks)
        if stop.diverged or model.stop_training:
            break
    if stop.diverged:
        raise TrainingDiverged(_diverged_message(stop.diverged, checkpointer))
    return model


def _training_data(run: Run, data_dir: str | None) -> tuple[Any, data.DatasetInfo]:
    # The shuffle order depends on TensorFlow's global seed as well as on its own, so the
    # global seed is cleared first: every stream of a run (a resume makes two) then has the
    # same order, in any process.
    tf.random.set_seed(None)
    return data.load(run.dataset, run.train_split, batch_size=run.config.batch_size,
                     training=True, seed=run.seed, data_dir=data_dir, image_size=run.image_size)


def _check_checkpoint_options(every_steps: int, keep: int) -> None:
    if every_steps < 0:
        raise UserError(f"bad value checkpoint_every_steps={every_steps}: expected >= 0 "
                        "(0: at epoch ends only)")
    if keep < 1:
        raise UserError(f"bad value keep_checkpoints={keep}: expected an integer >= 1")


def epoch_length(run: Run, num_examples: int, *, previous: dict[str, Any] | None = None
                 ) -> int:
    """Train steps per epoch: the config's, else one pass over the split, rounded down to a
    multiple of the model's default steps per execution (the data repeats, so the rounding
    drops no example, it only moves the epoch boundary by a few steps).

    A resumed run keeps the length in its `config.json` (`previous`); runs saved before it was
    recorded had whole-split epochs of `num_examples // batch_size` steps.
    """
    if run.config.steps_per_epoch:
        return run.config.steps_per_epoch
    steps = num_examples // run.config.batch_size
    if previous is not None:
        return int(previous.get("epoch_steps", steps))
    spe = registry.get_model(run.model).default_steps_per_execution
    return steps - steps % spe if steps >= spe else steps


def default_steps_per_execution(run: Run, steps_per_epoch: int) -> int:
    """The model's default steps per compiled call, or the largest divisor of the epoch below
    it (a tiny epoch of 3 steps runs 3 per call, dcgan's 937-step epochs of older runs 1)."""
    spe = registry.get_model(run.model).default_steps_per_execution
    return next(n for n in range(spe, 0, -1) if steps_per_epoch % n == 0)


def _check_steps_per_execution(steps_per_epoch: int, steps_per_execution: int) -> None:
    # Keras runs whole compiled calls, so an epoch that `steps_per_execution` does not divide
    # would run more steps than asked and the data position would drift.
    if steps_per_epoch % steps_per_execution:
        raise UserError(f"steps per epoch ({steps_per_epoch}) is not a multiple of "
                        f"--steps_per_execution={steps_per_execution}; change one of them "
                        "(--steps_per_epoch sets the first)")


def _fit_segments(initial_epoch: int, offset: int, epochs: int, steps_per_epoch: int
                  ) -> list[tuple[int, int, int]]:
    """`(initial_epoch, epochs, steps_per_epoch)` of each `fit` call: the rest of an
    interrupted epoch first (when `offset` > 0), then whole epochs."""
    segments = []
    if offset:
        segments.append((initial_epoch, initial_epoch + 1, steps_per_epoch - offset))
        initial_epoch += 1
    if initial_epoch < epochs:
        segments.append((initial_epoch, epochs, steps_per_epoch))
    return segments


def _diverged_message(diverged: dict[str, Any], checkpointer: Checkpointer) -> str:
    steps = (f"step {diverged['step']}" if diverged["first_step"] >= diverged["step"]
             else f"steps {diverged['first_step']}-{diverged['step']}")
    values = ", ".join(f"{name}={value:.4g}" for name, value in diverged["values"].items())
    kept = checkpointer.latest
    return (f"training diverged: non-finite loss at {steps} ({values}); "
            + (f"the last good checkpoint, {kept}, is kept" if kept else
               "no checkpoint was written") + "; lower the learning rate and rerun")


def restore(workdir: str, *, expected_model: str | None = None
            ) -> tuple[Run, GenerativeModel]:
    """The run saved in `workdir` and its model with the latest checkpoint's weights.

    Args:
        workdir: a trained run's folder.
        expected_model: when given, the model name the workdir must hold.
    """
    paths = _paths(workdir)
    if not os.path.exists(paths["config.json"]):
        raise UserError(f"{workdir} has no config.json: train there first (--mode=train)")
    saved = _read_json(paths["config.json"])
    if expected_model is not None and saved.get("model") != expected_model:
        raise UserError(f"{workdir} holds a {saved.get('model')!r} run, "
                        f"not {expected_model!r}")
    try:
        run = Run.from_json({k: v for k, v in saved.items()
                             if k not in ("image_shape", "num_classes", "epoch_steps")})
        image_shape, num_classes = tuple(saved["image_shape"]), saved["num_classes"]
    except (KeyError, TypeError) as error:
        raise UserError(f"{paths['config.json']} is not an aigc_zoo run config "
                        f"({type(error).__name__}: {error})") from None
    model = build_model(run, image_shape, num_classes)
    model.compile(jit_compile=False)  # creates the optimizers the checkpoint also holds
    checkpointer = Checkpointer(paths["checkpoints"], model)
    checkpointer.restore_latest()
    if checkpointer.restored_path is None:
        raise UserError(f"{workdir} has no checkpoint yet: train there first (--mode=train)")
    return run, model


def sample(workdir: str, *, num_samples: int = 64, seed: int = 0,
           expected_model: str | None = None) -> dict[str, str]:
    """Write a PNG grid and an `.npz` of `num_samples` samples from the latest checkpoint."""
    if num_samples < 1:
        raise UserError(f"bad value num_samples={num_samples}: expected an integer >= 1")
    run, model = restore(workdir, expected_model=expected_model)
    images = model.generate(num_samples, seed=seed).numpy()
    directory = _paths(workdir)["samples"]
    os.makedirs(directory, exist_ok=True)
    stem = os.path.join(directory, f"samples_step{int(model.global_step.numpy())}_seed{seed}")
    callbacks.save_samples(stem + ".png", images, dataset=run.dataset,
                           title=f"{run.model} on {run.dataset}, seed {seed}")
    np.savez_compressed(stem + ".npz", images=images)
    return {"png": stem + ".png", "npz": stem + ".npz"}


def sample_quality_evaluator(run: Run, options: sample_quality.Options, *,
                             data_dir: str | None = None) -> sample_quality.SampleQuality:
    """A `SampleQuality` for the run's dataset and splits (loads or trains the extractor)."""
    return sample_quality.SampleQuality(run.dataset, train_split=run.train_split,
                                        eval_split=run.eval_split, data_dir=data_dir,
                                        image_size=run.image_size, options=options)


def evaluate(workdir: str, *, data_dir: str | None = None, seed: int = 0,
             batch_size: int = 100, expected_model: str | None = None,
             quality: sample_quality.Options | None = sample_quality.DEFAULT_OPTIONS,
             eval_split: str | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluate the latest checkpoint; write `metrics.json` and TensorBoard (`tensorboard/eval`).

    Args:
        workdir: a trained run's folder.
        data_dir: TFDS data folder.
        seed: seeds the model's evaluation and the samples.
        batch_size: examples per batch of the model's own evaluation.
        expected_model: when given, the model name the workdir must hold.
        quality: how to measure sample quality; None skips it.
        eval_split: the split to measure instead of the run's own `eval_split`.
        overrides: `name=value` changes to the config's evaluation and sampling fields
            (`eval_*`, `sample_*`), such as `eval_importance_samples=1000` or
            `sample_steps=50`; training fields cannot change after training.
    Returns:
        What `metrics.json` holds: the run, split, seed, step and date, `metrics` (the model's
        own `evaluate_model`, e.g. likelihoods) and `sample_quality`; on the 2D toy datasets,
        `mode_coverage` (`metrics.modes`) instead of `sample_quality`.
    """
    run, model = restore(workdir, expected_model=expected_model)
    not_eval = [item for item in overrides if not item.strip().startswith(_EVAL_TIME_PREFIXES)]
    if not_eval:
        raise UserError("--mode=eval can only change eval_* and sample_* config fields, not "
                        f"{not_eval[0]!r}")
    run.config = model.config = config_lib.override(run.config, overrides)
    run.config.validate()
    run.eval_split = eval_split or run.eval_split
    points = toy.is_toy(run.dataset)
    if not hasattr(model, "evaluate_model") and quality is None and not points:
        raise UserError(f"{run.model} has no evaluation of its own; measure sample quality "
                        "with --eval_samples > 0")
    # The extractor first: a missing one (no labels, no Inception weights offline) fails fast.
    # Points of the toy datasets are measured by mode coverage instead.
    evaluator = (None if quality is None or points
                 else sample_quality_evaluator(run, quality, data_dir=data_dir))
    step = int(model.global_step.numpy())
    results = {
        "model": run.model, "dataset": run.dataset, "split": run.eval_split, "seed": seed,
        "step": step,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "metrics": {},
    }
    if hasattr(model, "evaluate_model"):
        dataset, _ = data.load(run.dataset, run.eval_split, batch_size=batch_size,
                               training=False, data_dir=data_dir, image_size=run.image_size)
        results["metrics"] = model.evaluate_model(dataset, seed=seed)
    scalars = {name: value for name, value in results["metrics"].items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    if evaluator is not None:
        quality_results = evaluator.evaluate(model, seed=seed)
        results.update(num_samples=quality_results["num_samples"],
                       extractor=quality_results["extractor"], sample_quality=quality_results)
        scalars.update(sample_quality.scalars(quality_results))
    if points:
        coverage = modes.mode_coverage(
            model.generate(modes.DEFAULT_NUM_SAMPLES, seed=seed).numpy(), run.dataset)
        results["mode_coverage"] = coverage
        scalars.update({name: coverage[name]
                        for name in ("modes_covered", "high_quality_share", "mode_kl")})
    _write_json(_paths(workdir)["metrics.json"], results)
    callbacks.write_scalars(os.path.join(_paths(workdir)["tensorboard"], "eval"), step,
                            {f"eval/{name}": value for name, value in scalars.items()})
    return results
