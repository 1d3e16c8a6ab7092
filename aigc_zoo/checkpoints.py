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
checkpoint.

Reading back is checked in one place, `choose`: the index must be UTF-8 text naming a `ckpt-N`
of its folder, and a checkpoint is used only if TensorFlow's reader reads every tensor of it
(which checks each tensor's checksum and catches a data file cut short, at any length, so no
manifest of sizes is kept beside it). The checkpoint the index names is tried first, then older
ones, newest first, each skipped one with a warning line; files newer than the index names are
an unfinished save and never used. With no readable index every `ckpt-N` on disk is a
candidate. Checkpoints that exist but none of which reads is one `UserError`; the files are
left as they are (`--overwrite` starts again).
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import time

import tensorflow as tf

from aigc_zoo.errors import TrainingDiverged, UserError, warn
from aigc_zoo.models.base import GenerativeModel

# TensorFlow reports a failed file write with the C library's text; ENOSPC arrives as a
# ResourceExhaustedError from its C++ writers and as an OSError from Python's.
_DISK_FULL = os.strerror(errno.ENOSPC)


INDEX = "checkpoint"  # the file naming the latest checkpoint, as CheckpointManager writes it
_NAME = re.compile(r"ckpt-(\d+)")


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
        self.directory = os.fspath(directory)
        self._model = model
        self._num_variables = len(model.variables)
        self._max_to_keep = max_to_keep
        self._checkpoint = tf.train.Checkpoint(
            model=list(model.variables),
            optimizers={name: list(opt.variables) for name, opt in model.optimizers.items()},
            epoch=self.epoch,
        )
        # Created now rather than lazily at the first save or restore: a multi-worker strategy
        # creates variables collectively, so every worker must create them in the same order.
        _ = self._checkpoint.save_counter
        # The manager reads the index when made (and fails on a binary one), so it is made at
        # the first save: restoring needs none, and training rewrites a damaged index first.
        self._made_manager: tf.train.CheckpointManager | None = None
        self.restored_path: str | None = None  # set by restore_latest and restore

    @property
    def _manager(self) -> tf.train.CheckpointManager:
        if self._made_manager is None:
            self._made_manager = tf.train.CheckpointManager(
                self._checkpoint, self.directory, max_to_keep=self._max_to_keep)
        return self._made_manager

    @property
    def latest(self) -> str | None:
        """Path prefix of the newest checkpoint the index names, or of the highest-numbered
        one on disk when the index is missing or damaged; None when there is none."""
        named, _ = read_index(self.directory)
        if named:
            return named
        candidates = files_on_disk(self.directory)
        return candidates[0] if candidates else None

    def save(self, epoch: int) -> str:
        """Save the state; `epoch` is the count of finished epochs (1-based).

        Raises:
            TrainingDiverged: a weight is not finite (a finite loss can hide it for one step);
                nothing is written.
            UserError: the write failed (a full disk, a permission); the previous checkpoint
                stays the latest and this one's partial files are removed.
        """
        if len(self._model.variables) != self._num_variables:
            # The flat lists were fixed when this Checkpointer was created; new variables would
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
                            f"{self.directory}: {reason}; "
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
        prefix = os.path.join(self.directory, f"ckpt-{number}")
        if read_index(self.directory)[0] == prefix:
            return
        shutil.rmtree(prefix + "_temp", ignore_errors=True)
        for path in glob.glob(glob.escape(prefix) + ".*"):
            try:
                os.remove(path)
            except OSError:
                pass  # the save already failed; a leftover is overwritten by the next save

    def restore_latest(self) -> int:
        """Restore the newest checkpoint that reads in full (`choose`), if there is one;
        returns the finished-epoch count (0 without one).

        `restored_path` then names the checkpoint restored (None: there was none). A
        `UserError` when checkpoints exist but none reads, or they do not fit this model.
        """
        self.restored_path = None
        path = choose(self.directory)
        return self.restore(path) if path else 0

    def restore(self, path: str) -> int:
        """Restore the checkpoint at `path` (one `choose` accepted); the finished-epoch count.

        A `UserError` when it does not fit this model (another model or config).
        """
        try:
            self._checkpoint.restore(path).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as error:
            if isinstance(error, (tf.errors.DataLossError, tf.errors.NotFoundError,
                                  tf.errors.OutOfRangeError)):
                # `choose` read it in full just before: its files changed since.
                detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise UserError(f"checkpoint {path} is corrupt ({detail}); rerun to fall back "
                                "to an older one, or start again with --overwrite") from None
            raise UserError(f"cannot restore checkpoint {path}: it does not match this model "
                            f"({type(error).__name__}); use another --workdir or --overwrite"
                            ) from None
        self.restored_path = path
        return int(self.epoch.numpy())

    def point_index_at(self, path: str | None) -> None:
        """Make this folder's index name `path` (the checkpoint training resumes from) unless
        it already does; with None, remove a damaged index. The saves that follow then
        continue from there (the manager reads the index when it is made), rather than fail on
        a damaged index or keep a damaged newer checkpoint as the latest."""
        named, problem = read_index(self.directory)
        if named == path and not problem:
            return
        index = os.path.join(self.directory, INDEX)
        try:
            self._write_index(index, path, problem)
        except (OSError, tf.errors.OpError) as error:  # e.g. a folder where the index should be
            reason = getattr(error, "strerror", None) or getattr(error, "message", str(error))
            raise UserError(f"cannot rewrite the checkpoint index {index}: {reason}; "
                            "delete it and rerun the same command") from None

    def _write_index(self, index: str, path: str | None, problem: str | None) -> None:
        if path is None:
            if problem and os.path.exists(index):
                os.remove(index)
            return
        # The manager keeps (and later deletes) what the index lists: `path` and the older
        # checkpoints up to `max_to_keep`; damaged newer ones are left for saves to overwrite.
        kept = [name for name in files_on_disk(self.directory)
                if _number(name) < _number(path)][:self._max_to_keep - 1]
        listed = list(reversed([path] + kept))
        now = time.time()  # the manager tracks only entries stamped after the last preserved
        # TensorFlow's own writer of the index (atomic: a temporary file and a rename).
        tf.compat.v1.train.update_checkpoint_state(
            self.directory, path, all_model_checkpoint_paths=listed,
            all_model_checkpoint_timestamps=[now] * len(listed),
            last_preserved_timestamp=now - 1)


def read_index(directory: str) -> tuple[str | None, str | None]:
    """The checkpoint the index file of `directory` names (its path prefix) and None, or None
    and why the index is damaged; (None, None) when there is no index.

    Read here rather than by `tf.train.get_checkpoint_state`, which raises on binary bytes and
    logs (and ignores) other damage.
    """
    index = os.path.join(directory, INDEX)
    if not os.path.exists(index):
        return None, None
    try:
        with open(index, "rb") as handle:
            text = handle.read(1 << 20).decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return None, f"unreadable: {type(error).__name__}"
    named = re.findall(r'^model_checkpoint_path: "([^"\n]*)"$', text, flags=re.MULTILINE)
    fields = all(re.fullmatch(r"\w+: \S.*", line) for line in text.splitlines() if line)
    if len(named) != 1 or not fields or not _NAME.fullmatch(os.path.basename(named[0])):
        return None, "not a checkpoint index naming a ckpt-N"
    path = os.path.join(directory, os.path.basename(named[0]))
    return path, None


def files_on_disk(directory: str) -> list[str]:
    """`ckpt-N` prefixes in `directory` that have an index file, newest first."""
    if not os.path.isdir(directory):
        return []
    numbers = [int(match.group(1)) for name in os.listdir(directory)
               if (match := re.fullmatch(r"ckpt-(\d+)\.index", name))]
    return [os.path.join(directory, f"ckpt-{number}") for number in sorted(numbers, reverse=True)]


def choose(directory: str) -> str | None:
    """The checkpoint in `directory` to resume from: the newest that reads in full, among
    the one the index names and older ones (every one on disk when the index is missing or
    damaged). A warning line on stderr for a damaged index and for each checkpoint skipped;
    None when there is no checkpoint; one `UserError` (and no warning) when there are some but
    none reads."""
    named, index_problem = read_index(directory)
    on_disk = files_on_disk(directory)
    candidates = [path for path in on_disk if named is None or _number(path) <= _number(named)]
    if named and named not in on_disk:
        candidates.insert(0, named)  # its files are gone: `unreadable` says so
    damaged: list[tuple[str, str]] = []  # (path, why), newest first
    chosen = None
    for path in candidates:
        reason = unreadable(path)
        if reason is None:
            chosen = path
            break
        damaged.append((path, reason))
    if damaged and chosen is None:
        path, reason = damaged[0]
        raise UserError(f"checkpoint {path} is corrupt ({reason}) and no other checkpoint in "
                        f"{directory} reads in full ({len(damaged)} tried); start again "
                        "with --overwrite (it deletes them)")
    if index_problem and chosen:  # without any checkpoint there is nothing to fall back on
        warn(f"{os.path.join(directory, INDEX)} is damaged ({index_problem}); using the "
              "newest checkpoint on disk that reads in full")
    for path, reason in damaged:
        warn(f"skipping checkpoint {path}: it is damaged ({reason}); using "
              f"{os.path.basename(chosen)}, an older one")
    return chosen


def unreadable(path: str) -> str | None:
    """Why the checkpoint at `path` cannot be read in full (every tensor, checksums checked),
    or None when it can."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as error:  # IndexError: a short file
        return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return None


def _number(path: str) -> int:
    return int(_NAME.fullmatch(os.path.basename(path)).group(1))


def _all_finite(variables: list) -> bool:
    checks = [tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))) for v in variables
              if tf.as_dtype(v.dtype).is_floating]
    return bool(tf.reduce_all(checks).numpy()) if checks else True
