"""Train a run, in one straight line: workdir -> data -> model -> fit -> outputs.

    model = training.train(run, workdir="runs/vae-digits")        # a `request.Run`
    model = training.train(request.run, request.options)          # what the runner does

Each step happens once and in that order: the workdir's record is read and compared (a
different run is refused), the training split is opened, the model is built and compiled,
and only then is anything written (the folder, `--overwrite`'s clearing, the record).
Training resumes from the latest checkpoint, mid-epoch included; no model-specific code.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import tensorflow as tf

from aigc_zoo import callbacks, checkpoints, data, distribute, domains, registry, stages, text
from aigc_zoo import config as config_lib
from aigc_zoo import request as request_lib
from aigc_zoo.checkpoints import Checkpointer
from aigc_zoo.data import paired
from aigc_zoo.metrics import attributes
from aigc_zoo.errors import TrainingDiverged, UserError, warn
from aigc_zoo.models.base import GenerativeModel
from aigc_zoo.request import Run, TrainOptions
from aigc_zoo.workdir import RunRecord, Workdir

RECONSTRUCTED = 16  # images in TensorBoard's reconstruction picture


def train(run: Run, options: TrainOptions | None = None, *,
          strategy: tf.distribute.Strategy | None = None, **option_values: Any
          ) -> GenerativeModel:
    """Train `run` as `options` say (or a `TrainOptions(**option_values)`); returns the model.

    `strategy` (default: the current one) holds the model, its optimizers, trackers and
    checkpoint; `fit` splits each global batch of `run.config.batch_size` between its
    replicas. On a multi-worker strategy every worker restores from the workdir, but only the
    chief writes there (`Workdir.for_process`).
    """
    if options is not None and option_values:
        raise TypeError("pass either a TrainOptions or its fields as keywords, not both")
    options = options or TrainOptions(**option_values)
    strategy = strategy or tf.distribute.get_strategy()
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with Workdir.for_process(options.workdir, strategy) as workdir, strategy.scope():
        return _train(run, options, workdir, multi_worker=multi_worker,
                      replicas=strategy.num_replicas_in_sync)


def _train(run: Run, options: TrainOptions, workdir: Workdir, *, multi_worker: bool,
           replicas: int) -> GenerativeModel:
    if options.deterministic:
        # Seeds: build_model seeds Python, NumPy and TensorFlow; the data order is seeded.
        tf.config.experimental.enable_op_determinism()
    previous = None if options.overwrite else workdir.read()
    run, tokenizer, split, info, record, first_stages = _open_run(run, previous, workdir,
                                                                  options)
    # The first stream is made before the model: building it clears TensorFlow's global seed,
    # which `build_model` then sets; later streams put the seed back themselves (`reseed`).
    # An unpaired model's second dataset, opened once like the first (`Knobs.target`).
    target = _target_split(run, info, data_dir=options.data_dir)
    stream = batch_stream(run, split, info, target=target)
    spe = _steps_per_execution(options, record, multi_worker=multi_worker)
    model = run.build_model(record.image_shape, record.num_classes, record.stages)
    stages.copy_into(model, first_stages)
    model.compile(jit_compile=options.jit_compile, steps_per_execution=spe)
    domain, every, evaluator, reconstruct, prompts = _epoch_end_inputs(run, record, options,
                                                                      tokenizer)
    checkpointer, restored, start_step = _start(model, workdir, options)
    if restored is None and record.stages and not first_stages:
        # The record said a checkpoint holds the first stages, but none could be restored:
        # the run starts afresh, from the first stages' workdirs.
        record, first_stages = _first_stages(record, None, workdir, options)
        stages.copy_into(model, first_stages)
    initial_epoch, offset = divmod(start_step, record.epoch_steps)
    stop = callbacks.StopOnNonFinite()
    every_epoch = _callbacks(record, options, workdir, checkpointer, stop=stop, domain=domain,
                             evaluator=evaluator, every=every, replicas=replicas,
                             reconstruct=reconstruct, conditioning=prompts)
    if not offset and workdir.chief:
        _redo_missing_picture(model, every_epoch, initial_epoch)
    if initial_epoch >= run.config.epochs:
        print(f"{workdir.path}: already trained {initial_epoch} epochs (asked for "
              f"{run.config.epochs}); raise --epochs to continue")
        return model
    if offset % spe:
        raise UserError(f"{restored} is at step {start_step}, {offset} steps "
                        f"into an epoch, which --steps_per_execution={spe} does not divide; "
                        "resume with the value of the run that wrote it")
    if tokenizer is not None and workdir.chief:
        tokenizer.save(workdir.path)  # with the record: a run with one has the other
    workdir.write(record)
    if start_step:
        print(f"resuming from {restored} at step {start_step} (epoch "
              f"{initial_epoch + 1}, step {offset} of {record.epoch_steps})", flush=True)
    _fit(model, record, options, every_epoch, first_stream=stream, stop=stop,
         restream=lambda: batch_stream(run, split, info, reseed=True, target=target),
         initial_epoch=initial_epoch, offset=offset)
    if stop.diverged:
        raise TrainingDiverged(_diverged_message(stop.diverged, checkpointer))
    return model


def _open_run(run: Run, previous: RunRecord | None, workdir: Workdir, options: TrainOptions
              ) -> tuple[Run, text.Tokenizer | None, tf.data.Dataset, data.DatasetInfo,
                         RunRecord, dict[str, GenerativeModel]]:
    """Open the training split and make the record, checked against `previous`; writes nothing."""
    run, tokenizer, captions = _text(run, previous, workdir, data_dir=options.data_dir)
    # The run's own fields are compared before the data is opened; the data's image shape
    # and classes once it is (a folder dataset may have changed).
    workdir.check_same_run(previous, run.to_json())
    split, info = _training_split(run, tokenizer, captions, data_dir=options.data_dir)
    run.check_sizes(info.image_shape)
    _warn_unread_sources(run, split, info)
    record = RunRecord(run, info.image_shape, info.num_classes,
                       epoch_length(run, info.num_examples, info.image_shape, previous=previous))
    workdir.check_same_run(previous, record.to_json())
    record, first_stages = _first_stages(record, previous, workdir, options)
    return run, tokenizer, split, info, record, first_stages


def training_data(run: Run, *, data_dir: str | None = None
                  ) -> tuple[Run, tf.data.Dataset, data.DatasetInfo, Any]:
    """A fresh run's training data as `train` opens it, for tools that train outside a
    workdir (the benchmark): (the run with a text model's tokenizer sizes filled in, the split
    with its captions as tokens, its info, and an unpaired model's target split, opened, or
    None); pass the last to `batch_stream`."""
    run, tokenizer, captions = _text(run, None, None, data_dir=data_dir)
    split, info = _training_split(run, tokenizer, captions, data_dir=data_dir)
    return run, split, info, _target_split(run, info, data_dir=data_dir)


def _training_split(run: Run, tokenizer: text.Tokenizer | None, captions: list[str] | None, *,
                    data_dir: str | None) -> tuple[tf.data.Dataset, data.DatasetInfo]:
    """The run's training split: a text model's with its captions as tokens."""
    if tokenizer is not None:
        return _tokenized_split(run, tokenizer, captions, data_dir=data_dir)
    return data.open_split(run.dataset, run.train_split, data_dir=data_dir,
                           image_size=run.image_size)


def _target_split(run: Run, info: data.DatasetInfo, *, data_dir: str | None) -> Any:
    """An unpaired model's second dataset, opened (`Knobs.target`), else None."""
    target = run.knobs(info.image_shape).target
    return paired.open_target(target, "train", info, data_dir=data_dir) if target else None


def _epoch_end_inputs(run: Run, record: RunRecord, options: TrainOptions,
                      tokenizer: text.Tokenizer | None
                      ) -> tuple[domains.Domain, int, domains.Evaluator | None,
                                 dict[str, Any] | None, dict[str, Any] | None]:
    """The evaluator, reconstruction batch and picture prompts of the epoch ends, and the domain."""
    domain = domains.for_dataset(run.dataset, task=run.knobs(record.image_shape).task,
                                 target=run.knobs(record.image_shape).target)
    every = domain.evaluate_every(options.eval_every_epochs)
    evaluator = _evaluator(run, record, options, domain, tokenizer) if every else None
    reconstruct = _reconstruction_batch(run, record, options, domain)
    prompts = tokenizer and options.sample_every_epochs and _picture_prompts(
        run, options, tokenizer, domain.grid_size(run.knobs(record.image_shape).sampling_cost))
    return domain, every, evaluator, reconstruct, prompts or None


def _evaluator(run: Run, record: RunRecord, options: TrainOptions, domain: domains.Domain,
               tokenizer: text.Tokenizer | None) -> domains.Evaluator | None:
    """The evaluation during training. Made before anything is written: a missing extractor
    fails here, changing nothing. A text model's samples are drawn for the eval captions, as
    in --mode=eval (without the attribute probe)."""
    quality = options.quality.sized(run.knobs(record.image_shape).sampling_cost)
    request_lib.check_held_samples(quality.num_samples, record.image_shape)
    evaluator = domain.evaluator(run, quality, data_dir=options.data_dir)
    if evaluator is not None and tokenizer is not None:
        evaluator.use_prompts(attributes.caption_prompts(run, tokenizer,
                                                         data_dir=options.data_dir))
    return evaluator


def _text(run: Run, previous: RunRecord | None, workdir: Workdir | None, *,
          data_dir: str | None) -> tuple[Run, text.Tokenizer | None, list[str] | None]:
    """For a text model (`takes_text`): the run with its tokenizer's sizes in the config, the
    tokenizer, and the training captions when they were read. A fresh run builds the tokenizer
    from the training split's captions (a dataset without captions is a `UserError`, before
    anything is written); a resumed one reads `<workdir>/tokenizer.json`, checked against the
    saved config. Any other run is returned as it is."""
    model_class = registry.get_model(run.model)
    if not model_class.takes_text(run.config):
        return run, None, None
    captions = None
    if previous is not None and model_class.takes_text(previous.run.config):
        tokenizer = text.load_for(workdir.path, previous.run.config)
    elif previous is not None:
        return run, None, None  # another kind of run: `check_same_run` refuses it
    else:
        captions = data.captions(run.dataset, run.train_split, data_dir=data_dir)
        tokenizer = text.Tokenizer.build(captions, max_length=run.config.text_max_length or None)
    sizes = {"text_vocabulary_size": tokenizer.size, "text_max_length": tokenizer.max_length}
    for name, value in sizes.items():
        given = getattr(run.config, name)
        if given and given != value:
            raise UserError(f"bad value {name}={given}: this run's tokenizer has {value}; "
                            "leave it unset (the runner fills it in)")
    return dataclasses.replace(run, config=dataclasses.replace(run.config, **sizes)), \
        tokenizer, captions


def _warn_unread_sources(run: Run, split: tf.data.Dataset, info: data.DatasetInfo) -> None:
    """One warning line when the data holds sources (a paired folder) the model has no task
    to read: it trains on the target images alone."""
    if "source" in split.element_spec and not run.knobs(info.image_shape).task:
        warn(f"{run.dataset} holds sources, which {run.model} does not read (it has no "
             "image-to-image task): it trains on the target images alone")


def _tokenized_split(run: Run, tokenizer: text.Tokenizer, captions: list[str] | None, *,
                     data_dir: str | None) -> tuple[tf.data.Dataset, data.DatasetInfo]:
    """A text model's training split: its examples' captions as `tokens`, without those
    holding a `held_out_combinations` phrase (`data.without_phrases`)."""
    split, info = data.open_captioned(run.dataset, run.train_split, data_dir=data_dir,
                                      image_size=run.image_size)
    phrases = tuple(getattr(run.config, "held_out_combinations", ()))
    if phrases:
        if captions is None:
            captions = data.captions(run.dataset, run.train_split, data_dir=data_dir)
        split, info = data.without_phrases(split, info, captions, phrases)
    return data.with_tokens(split, text.GraphTokenizer(tokenizer)), info


def _picture_prompts(run: Run, options: TrainOptions, tokenizer: text.Tokenizer,
                     count: int) -> dict[str, Any]:
    """The conditioning of a text model's per-epoch picture: `count` samples, rows of
    `request.DEFAULT_SAMPLES_PER_PROMPT` for each of the first distinct eval captions."""
    per_prompt = min(count, request_lib.DEFAULT_SAMPLES_PER_PROMPT)
    prompts = default_prompts(run, tokenizer, -(-count // per_prompt), data_dir=options.data_dir)
    rows = [prompts[(i // per_prompt) % len(prompts)] for i in range(count)]
    return {"tokens": tokenizer.encode(rows)}


def default_prompts(run: Run, tokenizer: text.Tokenizer, count: int, *,
                    data_dir: str | None = None) -> list[str]:
    """The first `count` distinct captions of the run's eval split that the tokenizer encodes
    (fewer if there are fewer): what a text model draws when not given prompts."""
    found = data.first_captions(run.dataset, run.eval_split, count, data_dir=data_dir,
                                keep=tokenizer.encodes)
    if not found:
        raise UserError(f"no caption of {run.dataset} split {run.eval_split!r} fits this "
                        "model's vocabulary; give prompts with --prompt")
    return found


def _first_stages(record: RunRecord, previous: RunRecord | None, workdir: Workdir,
                  options: TrainOptions) -> tuple[RunRecord, dict[str, GenerativeModel]]:
    """The record with the descriptions of the first stages its model is built on, and those
    stages restored from their workdirs, to copy into the new model. A run with a checkpoint
    has them in it: its record's descriptions are kept and nothing is read from the first
    stages' workdirs (which may be gone)."""
    run = record.run
    if not config_lib.stage_fields(run.config):
        return record, {}
    if previous is not None and not options.overwrite and workdir.has_checkpoint():
        loaded = {}
        record = dataclasses.replace(record, stages=previous.stages)
    else:
        found = stages.load(run.config)
        loaded = {field: model for field, (_, model) in found.items()}
        record = dataclasses.replace(record, stages={
            field: description for field, (description, _) in found.items()})
    registry.get_model(run.model).check_stages(run.config, record.image_shape,
                                               record.num_classes, record.stages)
    return record, loaded


def batch_stream(run: Run, split: tf.data.Dataset, info: data.DatasetInfo, *,
                 reseed: bool = False, target: Any = None) -> tf.data.Dataset:
    """The seeded, repeated training batches of the opened split.

    The shuffle order depends on TensorFlow's global seed as well as on its own, so the global
    seed is cleared first: every stream of a run (a resume makes two) then has the same order,
    in any process. `reseed` puts the global seed back as `build_model` left it.
    """
    tf.random.set_seed(None)
    stream = data.batches(split, info, split=run.train_split, batch_size=run.config.batch_size,
                          training=True, seed=run.seed, task=run.knobs(info.image_shape).task,
                          target=target or None)
    if reseed:
        tf.random.set_seed(run.seed)
    return stream


def _steps_per_execution(options: TrainOptions, record: RunRecord, *, multi_worker: bool
                         ) -> int:
    steps = options.steps_per_execution
    if steps is None:
        # Keras' loop of several steps per call failed under MultiWorkerMirroredStrategy here
        # ("You must feed a value for placeholder tensor ...while/cond/Placeholder"), so
        # multi-worker runs take one step per call unless told otherwise.
        steps = 1 if multi_worker else default_steps_per_execution(
            record.run, record.image_shape, record.epoch_steps)
    # Keras runs whole compiled calls, so an epoch that `steps` does not divide would run more
    # steps than asked and the data position would drift.
    if record.epoch_steps % steps:
        raise UserError(f"steps per epoch ({record.epoch_steps}) is not a multiple of "
                        f"--steps_per_execution={steps}; change one of them "
                        "(--steps_per_epoch sets the first)")
    return steps


def _start(model: GenerativeModel, workdir: Workdir, options: TrainOptions
           ) -> tuple[Checkpointer, str | None, int]:
    """Start the workdir (`Workdir.start`: the first write) and restore the newest readable
    checkpoint; the checkpointer that saves, the checkpoint restored (or None) and its step.
    The checkpoint is chosen (and checked, `checkpoints.choose`) before anything is written,
    so a workdir whose checkpoints are all damaged is left as it was."""
    chosen = None if options.overwrite else checkpoints.choose(workdir.saved_checkpoints)
    workdir.start(overwrite=options.overwrite)
    return _restore(model, workdir, options, chosen)


def _restore(model: GenerativeModel, workdir: Workdir, options: TrainOptions,
             chosen: str | None) -> tuple[Checkpointer, str | None, int]:
    """The checkpointer that saves, the checkpoint restored (`chosen`, or None) and its step.

    Every worker resumes from the chief's checkpoint (after --overwrite there is none) and
    saves to its own outputs. Every worker makes both Checkpointers, even when they share a
    folder: a multi-worker strategy creates each variable collectively, in the same order.
    (The chief restores through the Checkpointer that saves, which continues its numbering,
    and points the index at what it restored, past a damaged index or newer checkpoint.)
    """
    keep = options.keep_checkpoints
    restorer = Checkpointer(workdir.saved_checkpoints, model, max_to_keep=keep)
    checkpointer = Checkpointer(workdir.output("checkpoints"), model, max_to_keep=keep)
    if chosen:
        (checkpointer if workdir.chief else restorer).restore(chosen)
    if workdir.chief:
        checkpointer.point_index_at(chosen)
    return checkpointer, chosen, int(model.global_step.numpy())


def _redo_missing_picture(model: GenerativeModel, every_epoch: list[Any],
                          finished_epochs: int) -> None:
    """At an epoch boundary, draw the last finished epoch's sample picture if it is missing:
    a run killed between an epoch's checkpoint and its picture resumes with exactly that
    epoch's weights (`TensorBoardLogger.redo_missing_picture`)."""
    for callback in every_epoch:
        if isinstance(callback, callbacks.TensorBoardLogger):
            callback.redo_missing_picture(model, finished_epochs)


def _reconstruction_batch(run: Run, record: RunRecord, options: TrainOptions,
                          domain: domains.Domain) -> dict[str, Any] | None:
    """For a model that encodes images, the first `RECONSTRUCTED` images of the eval split
    (with their labels), whose reconstructions TensorBoard shows each picture's epoch; read
    before anything is written, so a bad `--eval_split` changes nothing."""
    if (not options.sample_every_epochs or domain.kind != "images"
            or not run.knobs(record.image_shape).encodes):
        return None
    examples, _ = data.load(run.dataset, run.eval_split, batch_size=RECONSTRUCTED,
                            training=False, data_dir=options.data_dir, image_size=run.image_size)
    first = examples.take(1).get_single_element()
    return {key: first[key].numpy() for key in ("image", "label") if key in first}


def _callbacks(record: RunRecord, options: TrainOptions, workdir: Workdir,
               checkpointer: Checkpointer, *, stop: callbacks.StopOnNonFinite,
               domain: domains.Domain, evaluator: domains.Evaluator | None, every: int,
               replicas: int, reconstruct: dict[str, Any] | None,
               conditioning: dict[str, Any] | None = None) -> list[Any]:
    run = record.run
    hparams = {"model": run.model, "dataset": run.dataset, "seed": run.seed,
               "precision": run.precision, "replicas": replicas,
               **{k: v if isinstance(v, (int, float, str, bool)) else str(v)
                  for k, v in config_lib.to_dict(run.config).items()}}
    chosen = [stop]
    if options.checkpoint_every_steps:
        chosen.append(callbacks.CheckpointEverySteps(
            checkpointer, every_steps=options.checkpoint_every_steps,
            steps_per_epoch=record.epoch_steps))
    chosen.append(callbacks.CheckpointEveryEpoch(checkpointer))
    if evaluator is not None:
        # Before TensorBoardLogger, which restarts its images/s clock after its own epoch end,
        # so evaluation time is not counted as training time.
        chosen.append(callbacks.EvaluateEvery(
            evaluator, os.path.join(workdir.output("tensorboard"), "eval"), every_epochs=every,
            seed=options.eval_seed))
    chosen.append(callbacks.TensorBoardLogger(
        workdir.output("tensorboard"), hparams=hparams, batch_size=run.config.batch_size,
        log_every_steps=options.log_every_steps, samples_dir=workdir.output("samples"),
        sample_every_epochs=options.sample_every_epochs, domain=domain,
        num_samples=domain.grid_size(run.knobs(record.image_shape).sampling_cost),
        reconstruct=reconstruct, conditioning=conditioning))
    return chosen


def _fit(model: GenerativeModel, record: RunRecord, options: TrainOptions, chosen: list[Any],
         *, first_stream: tf.data.Dataset, restream: Callable[[], tf.data.Dataset],
         stop: callbacks.StopOnNonFinite, initial_epoch: int, offset: int) -> None:
    """Fit the remaining epochs, replaying the seeded stream up to where the run stands.

    A resumed run sees the batches an uninterrupted one would (skipping takes about a second
    per 4,000 batches of digits). An interrupted epoch is finished by its own `fit` of the
    remaining steps, so Keras' epoch-end callbacks (checkpoint, samples, evaluations) run for
    it as they would have; the second `fit` replays the stream again from the next epoch's
    first batch, since every `fit` starts a new iterator. It needs a new stream too: the
    iterators of one shuffled dataset share its seed generator, so a second iterator would
    draw another order.
    """
    steps_per_epoch = record.epoch_steps
    for number, (first_epoch, last_epoch, epoch_steps) in enumerate(_fit_segments(
            initial_epoch, offset, record.run.config.epochs, steps_per_epoch)):
        stream = restream() if number else first_stream
        skipped = first_epoch * steps_per_epoch + steps_per_epoch - epoch_steps
        model.fit(distribute.distribute_options(stream.skip(skipped)),
                  epochs=last_epoch, initial_epoch=first_epoch, steps_per_epoch=epoch_steps,
                  verbose=options.verbose, shuffle=False,  # shuffled in data.batches
                  callbacks=chosen)
        if stop.diverged or model.stop_training:
            break


def epoch_length(run: Run, num_examples: int, image_shape: Sequence[int], *,
                 previous: RunRecord | None = None) -> int:
    """Train steps per epoch: the config's, else the length a resumed run (`previous`)
    started with, else one pass over the split rounded down to a multiple of the model's
    default steps per execution (the data repeats, so the rounding drops no example, it only
    moves the epoch boundary by a few steps)."""
    if run.config.steps_per_epoch:
        return run.config.steps_per_epoch
    if previous is not None:
        return previous.epoch_steps
    steps = num_examples // run.config.batch_size
    spe = run.knobs(image_shape).steps_per_execution
    return steps - steps % spe if steps >= spe else steps


def default_steps_per_execution(run: Run, image_shape: Sequence[int], steps_per_epoch: int
                                ) -> int:
    """The model's default steps per compiled call (`Knobs.steps_per_execution`), or the
    largest divisor of the epoch below it (a tiny epoch of 3 steps runs 3 per call)."""
    spe = run.knobs(image_shape).steps_per_execution
    return next(n for n in range(spe, 0, -1) if steps_per_epoch % n == 0)


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
