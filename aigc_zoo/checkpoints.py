"""Checkpoints of the whole training state: model, every optimizer, step, RNG, epoch.

Variables are saved as flat lists in a deterministic order (the model's `variables`, then each
update group's optimizer variables) rather than through Keras' object graph: that graph leaves
out the state of `keras.random.SeedGenerator`, and the update groups' optimizers are not
attributes of the model. The model's variables include its `global_step` and its seed
generator's state, so a resumed run continues the step count and the random stream where the
checkpoint left them. The price: variables match by position, so a checkpoint restores only
into a model built from the same code and config (which `config.json` guards).

How a save commits (TensorFlow 2.21, `CheckpointManager.save`): the tensors are written to
`ckpt-N_temp/part-*` files, merged into `ckpt-N.index` and renamed to `ckpt-N.data-*`; only
then is the `checkpoint` index file rewritten, through a temporary file and a rename, to name
`ckpt-N` (after which checkpoints beyond the newest K are deleted). The rename is the commit:
a process killed or a disk filled before it leaves `checkpoint` naming the previous, complete
checkpoint, and `restore_latest` trusts only what that file names. Without a readable index
file it tries the `ckpt-N` files on disk newest first and skips, with a warning line, any it
cannot read completely, so a half-written newer checkpoint is never picked over a good one.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import sys

import tensorflow as tf

from aigc_zoo.errors import TrainingDiverged, UserError
from aigc_zoo.models.base import GenerativeModel

# TensorFlow reports a failed file write with the C library's text; ENOSPC arrives as a
# ResourceExhaustedError from its C++ writers and as an OSError from Python's.
_DISK_FULL = os.strerror(errno.ENOSPC)


class Checkpointer:
    """Saves and restores a compiled `GenerativeModel` in `directory`.

    Args:
        directory: where `ckpt-N` files go.
        model: a compiled model (its optimizers exist and are built).
        max_to_keep: how many recent checkpoints to keep.
    """

    def __init__(self, directory: str | os.PathLike, model: GenerativeModel, *,
                 max_to_keep: int = 3):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self._model = model
        self._num_variables = len(model.variables)
        self._checkpoint = tf.train.Checkpoint(
            model=list(model.variables),
            optimizers={name: list(opt.variables) for name, opt in model.optimizers.items()},
            epoch=self.epoch,
        )
        # Created now rather than lazily at the first save or restore: a multi-worker strategy
        # creates variables collectively, so every worker must create them in the same order.
        _ = self._checkpoint.save_counter
        self._manager = tf.train.CheckpointManager(self._checkpoint, os.fspath(directory),
                                                   max_to_keep=max_to_keep)
        self.restored_path: str | None = None  # set by restore_latest

    @property
    def latest(self) -> str | None:
        """Path prefix of the newest checkpoint, or None.

        Falls back to the highest-numbered `ckpt-N` on disk when the `checkpoint` index file is
        missing or unreadable, rather than silently starting again from scratch (that file may
        still be unfinished; `restore_latest` checks it).
        """
        if self._manager.latest_checkpoint:
            return self._manager.latest_checkpoint
        candidates = self._files_on_disk()
        return candidates[0] if candidates else None

    def _files_on_disk(self) -> list[str]:
        """`ckpt-N` prefixes that have an index file, newest first."""
        if not os.path.isdir(self._manager.directory):
            return []
        numbers = [int(match.group(1)) for name in os.listdir(self._manager.directory)
                   if (match := re.fullmatch(r"ckpt-(\d+)\.index", name))]
        return [os.path.join(self._manager.directory, f"ckpt-{number}")
                for number in sorted(numbers, reverse=True)]

    def save(self, epoch: int) -> str:
        """Save the state; `epoch` is the count of finished epochs (1-based).

        Raises:
            TrainingDiverged: a weight is not finite (a finite loss can hide it for one step);
                nothing is written.
            UserError: the write failed (a full disk, a permission); the previous checkpoint
                stays the latest and this one's partial files are removed.
        """
        if len(self._model.variables) != self._num_variables:
            # The flat lists were fixed when this Checkpointer was made; new variables would
            # silently go unsaved.
            raise RuntimeError(f"the model has {len(self._model.variables)} variables, "
                               f"{self._num_variables} when its Checkpointer was created")
        if not _all_finite(self._model.variables):
            raise TrainingDiverged(
                f"weights became non-finite by step {int(self._model.global_step.numpy())}; "
                + self._kept_message() + "; lower the learning rate and rerun")
        self.epoch.assign(epoch)
        previous = self._manager.latest_checkpoint
        number = int(self._checkpoint.save_counter.numpy()) + 1  # the manager's next number
        try:
            return self._manager.save()
        except (OSError, tf.errors.OpError) as error:
            text = str(getattr(error, "message", None) or getattr(error, "strerror", None)
                       or error)
            self._remove_partial(number)
            reason = ("no space left on device" if _DISK_FULL in text
                      else (text.strip().splitlines() or ["unknown error"])[-1])
            remedy = "free space" if reason == "no space left on device" else "fix that"
            raise UserError(f"cannot write checkpoint ckpt-{number} in "
                            f"{self._manager.directory}: {reason}; "
                            f"{self._kept_message(previous)}; {remedy} and rerun the same "
                            "command to resume") from None

    def _kept_message(self, kept: str | None = "") -> str:
        kept = self._manager.latest_checkpoint if kept == "" else kept
        return f"the last good checkpoint, {kept}, is kept" if kept else \
            "no checkpoint was written"

    def _remove_partial(self, number: int) -> None:
        """Delete the files of checkpoint `number`, whose save failed, unless the `checkpoint`
        index on disk names it (then the failure came after the commit and the files are
        whole)."""
        prefix = os.path.join(self._manager.directory, f"ckpt-{number}")
        if tf.train.latest_checkpoint(self._manager.directory) == prefix:
            return
        shutil.rmtree(prefix + "_temp", ignore_errors=True)
        for path in glob.glob(glob.escape(prefix) + ".*"):
            try:
                os.remove(path)
            except OSError:
                pass  # the save already failed; a leftover is overwritten by the next save

    def restore_latest(self) -> int:
        """Restore the newest checkpoint if there is one; returns the finished-epoch count.

        `restored_path` then names the checkpoint restored (None: there was none). The
        checkpoint the `checkpoint` index names must restore; one found only on disk (no
        readable index) that does not is skipped with a warning line on stderr.
        """
        self.restored_path = None
        recorded = self._manager.latest_checkpoint
        if recorded:
            self._restore(recorded)
            self.restored_path = recorded
            return int(self.epoch.numpy())
        for path in self._files_on_disk():
            problem = _unreadable(path)
            if problem:
                # Checked before restoring: a failed restore may have assigned some variables.
                print(f"warning: skipping {path}: not named by the `checkpoint` index and not "
                      f"readable ({problem}), so its save did not finish; trying an older one",
                      file=sys.stderr)
                continue
            self._restore(path)
            self.restored_path = path
            return int(self.epoch.numpy())
        return 0

    def _restore(self, path: str) -> None:
        try:
            self._checkpoint.restore(path).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as error:
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
            # TensorFlow reports damaged files as DataLossError or as a bare OpError about
            # checksums, and a missing or truncated data file as NotFound / OutOfRange; all
            # mean the files, not the model, are wrong.
            if (isinstance(error, (tf.errors.DataLossError, tf.errors.NotFoundError,
                                   tf.errors.OutOfRangeError))
                    or "checksum" in detail.lower()):
                raise UserError(f"checkpoint {path} is corrupt ({detail}); delete its files to "
                                "resume from an older one, or use --overwrite") from None
            raise UserError(f"cannot restore checkpoint {path}: it does not match this model "
                            f"({type(error).__name__}); use another --workdir or --overwrite"
                            ) from None


def _unreadable(path: str) -> str | None:
    """Why the checkpoint at `path` cannot be read in full (every tensor, checksums checked),
    or None when it can."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as error:  # IndexError: a short file
        return (str(error).strip().splitlines() or [type(error).__name__])[0]
    return None


def _all_finite(variables: list) -> bool:
    checks = [tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))) for v in variables
              if tf.as_dtype(v.dtype).is_floating]
    return bool(tf.reduce_all(checks).numpy()) if checks else True
