"""Training callbacks: TensorBoard summaries and sample pictures, checkpoints, the NaN guard,
evaluation every N epochs (what the dataset's domain measures); and a scalar-writing helper.

TensorBoard steps come from the model's own `global_step` variable, which checkpoints carry, so a
resumed run continues its curves instead of restarting them at 0.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aigc_zoo import domains, plots
from aigc_zoo.checkpoints import Checkpointer


class TensorBoardLogger(keras.callbacks.Callback):
    """Losses, throughput, learning rates, hyperparameters and sample grids for TensorBoard.

    Args:
        logdir: the run's `tensorboard/` folder.
        hparams: flat dict of the run's hyperparameters (hparams plugin).
        batch_size: global batch size, for images/s.
        log_every_steps: write per-step scalars every this many train steps.
        samples_dir: where each epoch's sample picture is also written as PNG.
        sample_every_epochs: draw the picture after every this many epochs (0: never).
        domain: the data's domain, which draws the pictures (image grids, scatters of points).
        num_samples: samples in each picture (drawn with a fixed seed, so epochs compare);
            default: the domain's `grid_samples`.
        reconstruct: a fixed batch (`{"image"[, "label"]}`) that a model declaring `encodes`
            encodes and decodes at each picture's epoch: the inputs' rows alternate with their
            reconstructions' in the `reconstructions` image.
        conditioning: `generate`'s conditioning inputs for the picture, one row per sample
            (a text model's `tokens`, which it cannot sample without).
    """

    def __init__(self, logdir: str, *, hparams: dict[str, Any], batch_size: int,
                 log_every_steps: int = 50, samples_dir: str | None = None,
                 sample_every_epochs: int = 1, domain: domains.Domain | None = None,
                 num_samples: int | None = None, sample_seed: int = 1234,
                 reconstruct: dict[str, Any] | None = None,
                 conditioning: dict[str, Any] | None = None):
        super().__init__()
        self._conditioning = conditioning or {}
        self._writers = _LazyWriter(logdir)  # made at the first write: making it writes a file
        self._hparams = hparams
        self._batch_size = batch_size
        self._every = max(1, log_every_steps)
        self._samples_dir = samples_dir
        self._sample_every = sample_every_epochs
        self._domain = domain or domains.Images()
        self._num_samples = num_samples or self._domain.grid_samples
        self._sample_seed = sample_seed
        self._reconstruct = reconstruct
        self._last_step = 0
        self._last_time: float | None = None  # None until the first step has run (and traced)

    @property
    def _writer(self) -> Any:
        return self._writers.get()

    def _step(self) -> int:
        return int(self.model.global_step.numpy())

    def on_train_begin(self, logs: dict | None = None) -> None:
        from tensorboard.plugins.hparams import api as hparams_api
        with self._writer.as_default():
            hparams_api.hparams(self._hparams)
        self._last_step, self._last_time = self._step(), None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = self._step()
        if step - self._last_step < self._every:
            return
        now = time.perf_counter()
        with self._writer.as_default(step=step):
            for name, value in (logs or {}).items():
                tf.summary.scalar(f"train/{name}", float(value))
            # The first interval includes tracing the train step, so it is not timed.
            if self._last_time is not None:
                images = (step - self._last_step) * self._batch_size
                tf.summary.scalar("perf/images_per_second", images / (now - self._last_time))
            for name, optimizer in self.model.optimizers.items():
                # convert_to_tensor: under tf.distribute the rate is a MirroredVariable.
                tf.summary.scalar(f"learning_rate/{name}",
                                  float(tf.convert_to_tensor(optimizer.learning_rate)))
        self._last_step, self._last_time = step, now

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        step = self._step()
        with self._writer.as_default(step=step):
            for name, value in (logs or {}).items():
                tf.summary.scalar(f"epoch/{name}", float(value))
        self._writer.flush()
        if not self._picture_due(epoch):
            return
        if not _finite(logs):
            return  # diverged weights draw nothing worth a picture
        self._draw_picture(epoch, step)

    def redo_missing_picture(self, model: keras.Model, finished_epochs: int) -> bool:
        """Draw the picture of the last finished epoch (1-based `finished_epochs`) when it is
        due and its PNG is missing; whether it drew one.

        Called on resuming at an epoch boundary: a run killed after that epoch's checkpoint
        but before its picture resumes from exactly that epoch's weights, so this is the
        picture it would have drawn."""
        epoch = finished_epochs - 1
        if (not self._samples_dir or epoch < 0 or not self._picture_due(epoch)
                or os.path.exists(self._picture_path(epoch))):
            return False
        self.set_model(model)
        self._draw_picture(epoch, self._step())
        return True

    def _picture_due(self, epoch: int) -> bool:
        return bool(self._sample_every) and (epoch + 1) % self._sample_every == 0

    def _picture_path(self, epoch: int) -> str:
        return os.path.join(self._samples_dir, f"epoch_{epoch + 1:04d}.png")

    def _draw_picture(self, epoch: int, step: int) -> None:
        """The samples' picture of 0-based `epoch` at `step`: a PNG and TensorBoard images."""
        samples = self.model.generate(self._num_samples, seed=self._sample_seed,
                                      **self._conditioning).numpy()
        title = f"{self.model.registered_name}, epoch {epoch + 1}, step {step}"
        if self._samples_dir:
            pixels = self._domain.save_picture(self._picture_path(epoch), samples, title=title)
        else:
            pixels = self._domain.picture(samples, title=title)
        with self._writer.as_default(step=step):
            tf.summary.image("samples", pixels[None], max_outputs=1)
            if self._reconstruct is not None:
                tf.summary.image("reconstructions", self._reconstructions()[None], max_outputs=1)
        self._writer.flush()
        # The sample draw and PNG are not training time; keep them out of images/s.
        self._last_time = time.perf_counter()

    def _reconstructions(self, columns: int = 8) -> np.ndarray:
        """The fixed batch's images and `decode(encode(images))`, a row of each in turn."""
        model = self.model
        images = tf.convert_to_tensor(self._reconstruct["image"])
        labels = [tf.convert_to_tensor(self._reconstruct["label"])] if model.conditional else []
        latents = tf.nest.flatten(model.encode(images, *labels))[0]
        decoded = model.decode(latents, *labels).numpy()
        images = images.numpy()
        rows = [part[start:start + columns] for start in range(0, len(images), columns)
                for part in (images, decoded)]
        return plots.to_grid(np.concatenate(rows), columns=columns)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._writer.flush()


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop training at the first step whose logged losses are not all finite.

    Unlike Keras' `TerminateOnNaN`, which reads only `logs["loss"]`, this checks every tracked
    value, so a GAN's `d_loss` / `g_loss` are watched too. The values are the trackers' means
    since the epoch began, so one non-finite step keeps them non-finite: checking once per
    compiled call (`steps_per_execution` steps) misses none. Keras has already turned the logs
    into Python numbers for its callbacks, so the check adds no device sync.

    After a stop, `diverged` describes it: `{"step": ..., "first_step": ..., "values": ...}`,
    where the non-finite step lies in `first_step..step` (one step unless
    `steps_per_execution` > 1).
    """

    def __init__(self):
        super().__init__()
        self.diverged: dict[str, Any] | None = None
        self._last_step = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._last_step = int(self.model.global_step.numpy())

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = int(self.model.global_step.numpy())
        if not _finite(logs) and self.diverged is None:
            self.diverged = {"step": step, "first_step": self._last_step + 1,
                             "values": {name: float(value) for name, value in logs.items()}}
            self.model.stop_training = True
        self._last_step = step


def _finite(logs: dict | None) -> bool:
    return all(math.isfinite(float(value)) for value in (logs or {}).values())


class CheckpointEveryEpoch(keras.callbacks.Callback):
    """Save the whole training state at the end of every epoch whose losses are finite.

    An epoch that ended in NaN (stopped by `StopOnNonFinite`) is not saved, so the last
    checkpoint stays the last good state.
    """

    def __init__(self, checkpointer: Checkpointer):
        super().__init__()
        self._checkpointer = checkpointer

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if _finite(logs):
            self._checkpointer.save(epoch + 1)


class CheckpointEverySteps(keras.callbacks.Callback):
    """Save the training state inside epochs, every `every_steps` train steps.

    Saves after the first compiled call that reaches each multiple of `every_steps` of the
    model's `global_step` (so with `steps_per_execution` > 1 a save may come a few steps
    later), except at an epoch's last step, which `CheckpointEveryEpoch` saves after the
    epoch-end callbacks. Nothing is saved once the losses are non-finite or training was asked
    to stop (place it after `StopOnNonFinite`).

    Args:
        checkpointer: where to save.
        every_steps: train steps between saves (> 0).
        steps_per_epoch: train steps per epoch, for the finished-epoch count saved.
    """

    def __init__(self, checkpointer: Checkpointer, *, every_steps: int, steps_per_epoch: int):
        super().__init__()
        self._checkpointer = checkpointer
        self._every = every_steps
        self._steps_per_epoch = steps_per_epoch
        self._next = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        step = int(self.model.global_step.numpy())
        self._next = (step // self._every + 1) * self._every

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = int(self.model.global_step.numpy())
        if step < self._next:
            return
        self._next = (step // self._every + 1) * self._every
        if step % self._steps_per_epoch == 0 or self.model.stop_training or not _finite(logs):
            return
        self._checkpointer.save(step // self._steps_per_epoch)


def write_scalars(logdir: str | Any, step: int, values: dict[str, Any]) -> None:
    """Write every finite int or float of `values` as a TensorBoard scalar at `step`.

    `logdir` is a folder (a new event file) or a summary writer. Callbacks that write every
    epoch keep one writer: each new writer starts a new event file, named by the second and a
    per-process counter, and TensorBoard reads the files in name order, so files made within
    one second (counter 9, then 10) would be read out of step order.
    """
    writer = tf.summary.create_file_writer(logdir) if isinstance(logdir, str) else logdir
    with writer.as_default(step=step):
        for tag, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                tf.summary.scalar(tag, value)
    writer.flush()


class _LazyWriter:
    """One summary writer for `logdir`, made at its first use (a run may never write)."""

    def __init__(self, logdir: str):
        self._logdir = logdir
        self._writer = None

    def get(self) -> Any:
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self._logdir)
        return self._writer


class EvaluateEvery(keras.callbacks.Callback):
    """Evaluate the model every `every_epochs` epochs and log it to TensorBoard.

    Tags are `eval/<name>` for the evaluator's scalars, as `--mode=eval` writes them
    (`eval/<extractor>/fd`, `eval/modes_covered`, ...), at the model's `global_step`; one line
    is printed per evaluation.

    Args:
        evaluator: the domain's evaluator (its real features are computed once).
        logdir: the run's `tensorboard/eval` folder.
        every_epochs: evaluate after epochs every_epochs, 2 * every_epochs, ...
        seed: the samples' seed (the same each time, so epochs compare).
    """

    def __init__(self, evaluator: domains.Evaluator, logdir: str, *, every_epochs: int,
                 seed: int = 0):
        super().__init__()
        self._evaluator = evaluator
        self._writer = _LazyWriter(logdir)
        self._every = every_epochs
        self._seed = seed

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self._every:
            return
        if not _finite(logs):
            return  # a diverged epoch (StopOnNonFinite stops the run) has nothing to measure
        results, values = self._evaluator.evaluate(self.model, seed=self._seed)
        write_scalars(self._writer.get(), int(self.model.global_step.numpy()),
                      {f"eval/{name}": value for name, value in values.items()})
        print(f"\nepoch {epoch + 1}: {self._evaluator.summary(results)}", flush=True)
