"""A run's folder and its typed run record.

    workdir/config.json    the `RunRecord`: the `Run`, the data's image shape and classes, the
                           epoch length (steps)
    workdir/checkpoints/   the training state (`aigc_zoo.checkpoints`)
    workdir/tensorboard/   event files; `tensorboard/eval` for evaluations
    workdir/samples/       a sample picture per epoch, and those of `--mode=sample`
    workdir/metrics.json   what `--mode=eval` measured
    workdir/train.lock     the training process's lock, holding its pid

Training in a workdir that holds the same run resumes it; a different run there is refused
unless asked to overwrite. Nothing is written until the new run has been built, so a mistake
in a command changes nothing. On a multi-worker strategy only the chief writes here: the
other workers read the chief's checkpoints and write their own (which saving needs, as it
reads variables collectively) to a temporary folder deleted at the end.

One trainer per workdir: the training process (the chief, on a multi-worker strategy) holds an
advisory `flock` on `train.lock` from `Workdir.start` to the end of training. The kernel drops it
when the process ends, however it ends, so a SIGKILL leaves no stale lock; a second trainer is
refused in one line naming the holder's pid. The lock is as good as the file system's `flock`
(local disks; on NFS it depends on the mount). `--mode=sample|eval|export` take no lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import glob
import os
import shutil
import tempfile
from typing import Any, Iterator

import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import distribute, files, stages
from aigc_zoo.errors import UserError
from aigc_zoo.request import Run

# Fields that may change between invocations in one workdir: training longer is resuming.
# `epoch_steps` is derived (from the config, the split and the code's defaults) and recorded so
# that a resume keeps the epoch length the run started with.
# `stages` is derived too: read from the first stages' workdirs when a run starts, and from the
# record afterwards (`training.py`).
RESUMABLE_FIELDS = frozenset({"epochs", "epoch_steps", "stages"})
# What every error about a damaged run record ends with. `--overwrite` does not read the record.
REMEDY = "train again with --overwrite (it deletes the run's outputs)"
OUTPUTS = ("checkpoints", "tensorboard", "samples", "metrics.json")
LOCK = "train.lock"
# The record's own fields beside the run's, with their JSON types.
_RECORD_FIELDS = {"image_shape": list, "num_classes": (int, type(None)), "epoch_steps": int,
                  "stages": dict}
_RUN_FIELDS = {"model": str, "dataset": str, "config": dict, "seed": int, "train_split": str,
               "eval_split": str, "image_size": (int, type(None)), "precision": str}
assert set(_RUN_FIELDS) == {field.name for field in dataclasses.fields(Run)}


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What a workdir's `config.json` holds.

    Args:
        run: the run.
        image_shape: (height, width, channels) of its data; (2,) for 2D points.
        num_classes: labels in its data, or None.
        epoch_steps: train steps per epoch, kept when the run resumes.
        stages: the first stages the model is built on, by config field
            (`stages.describe`: their model, config, data shape, step and config digest).
    """

    run: Run
    image_shape: tuple[int, ...]
    num_classes: int | None
    epoch_steps: int
    stages: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.run.to_json(), "image_shape": list(self.image_shape),
                "num_classes": self.num_classes, "epoch_steps": self.epoch_steps,
                "stages": self.stages}

    @classmethod
    def from_json(cls, values: Any, *, path: str) -> "RunRecord":
        """The record in `values` (read from `path`); a `UserError` naming what is wrong."""
        def bad(reason: str) -> UserError:
            return UserError(f"{path} is not an aigc_zoo run record ({reason}); {REMEDY}")

        if not isinstance(values, dict):
            found = {str: "string", int: "number", float: "number", type(None): "null"}.get(
                type(values), type(values).__name__)
            raise bad(f"a JSON {found}, not an object")
        values = {"stages": {}, **values}  # records written before stages existed have none
        for name, kind in {**_RUN_FIELDS, **_RECORD_FIELDS}.items():
            if name not in values:
                raise bad(f"no {name!r}; workdirs written before aigc_zoo 0.1 do not load")
            if isinstance(values[name], bool) or not isinstance(values[name], kind):
                raise bad(f"{name!r} is {_short(values[name])}")
        unknown = set(values) - set(_RUN_FIELDS) - set(_RECORD_FIELDS)
        if unknown:
            raise bad(f"unknown fields {_short(sorted(unknown))}")
        shape, classes, steps = values["image_shape"], values["num_classes"], values["epoch_steps"]
        if len(shape) not in (1, 3) or not all(_positive_int(size) for size in shape):
            raise bad(f"'image_shape' is {_short(shape)}")
        if not (classes is None or _positive_int(classes)) or not _positive_int(steps):
            raise bad(f"'num_classes' {classes!r} or 'epoch_steps' {steps!r} is not >= 1")
        try:
            run = Run.from_json({name: values[name] for name in _RUN_FIELDS})
            for field, description in values["stages"].items():
                stages.check_description(field, description)
        except UserError as error:
            raise bad(str(error)) from None
        except (TypeError, ValueError) as error:
            raise bad(f"{type(error).__name__}: {error}") from None
        if set(values["stages"]) != set(config_lib.stage_fields(run.config)):
            raise bad(f"'stages' {sorted(values['stages'])} are not the config's stage fields")
        return cls(run, tuple(shape), classes, steps, values["stages"])


def _short(value: Any, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters: a hostile file may hold a huge value."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "", *,
                ignored: frozenset[str] = frozenset()) -> list[str]:
    """What differs between two records' JSON, beyond the fields a resume may change and the
    dotted paths in `ignored` (the config's sampling fields, e.g. `config.sample_steps`)."""
    found = []
    for key in sorted(set(old) | set(new)):
        if key in RESUMABLE_FIELDS or f"{prefix}{key}" in ignored:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.", ignored=ignored)
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} there, {b!r} now")
    return found


class Workdir:
    """A run's folder: where it reads its record and checkpoints, and writes its outputs.

    Args:
        path: the run's folder.
        outputs: where this process writes (default `path`; a non-chief worker's own folder).
    """

    def __init__(self, path: str, *, outputs: str | None = None):
        self.path = path
        self.outputs = outputs or path
        self._lock: int | None = None  # the descriptor of the held `train.lock`

    @classmethod
    @contextlib.contextmanager
    def for_process(cls, path: str, strategy: tf.distribute.Strategy) -> Iterator["Workdir"]:
        """The workdir as this process of `strategy` sees it: the chief writes to `path`, other
        workers to a temporary folder, deleted when the block ends."""
        scratch = None if distribute.is_chief(strategy) else tempfile.mkdtemp(
            prefix="aigc_zoo_worker_")
        workdir = cls(path, outputs=scratch)
        try:
            yield workdir
        finally:
            workdir.release()
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)

    @property
    def chief(self) -> bool:
        """True when this process writes the run's own folder."""
        return self.outputs == self.path

    @property
    def record_path(self) -> str:
        return os.path.join(self.path, "config.json")

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.path, "metrics.json")

    @property
    def saved_checkpoints(self) -> str:
        """The run's checkpoints, which every process restores from."""
        return os.path.join(self.path, "checkpoints")

    def output(self, name: str) -> str:
        """Where this process writes `name` (`checkpoints`, `tensorboard`, `samples`)."""
        return os.path.join(self.outputs, name)

    def read(self) -> RunRecord | None:
        """The run record, or None when the folder has none."""
        if not os.path.exists(self.record_path):
            return None
        return RunRecord.from_json(files.read_json(self.record_path, remedy=REMEDY),
                                   path=self.record_path)

    def require(self) -> RunRecord:
        """The run record of a trained workdir; a `UserError` when there is none."""
        record = self.read()
        if record is None:
            raise UserError(f"{self.path} has no config.json: train there first (--mode=train)")
        return record

    def check_same_run(self, previous: RunRecord | None, new: dict[str, Any]) -> None:
        """`UserError` unless `new` (a record's JSON, or a run's) resumes `previous`."""
        if previous is None:
            return
        # Sampling fields may change on resume: they are the run's defaults for sampling.
        ignored = frozenset(f"config.{name}"
                            for name in config_lib.sampling_fields(previous.run.config))
        found = differences({k: v for k, v in previous.to_json().items() if k in new}, new,
                            ignored=ignored)
        if found:
            raise UserError(f"{self.path} holds a different run ({'; '.join(found[:3])}); "
                            "pass --overwrite to replace it, or choose another --workdir")

    def start(self, *, overwrite: bool) -> None:
        """Create the folder, take the trainer's lock, and with `overwrite` delete the previous
        run's outputs (the chief's part; call it once the new run has been built). A
        `UserError` naming the holder when another process trains here."""
        if not self.chief:
            return
        files.make_writable_folder(self.path, what="workdir")
        self.acquire()
        if overwrite:
            for name in OUTPUTS:
                path = os.path.join(self.path, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)

    def acquire(self) -> None:
        """Take the trainer's lock on `train.lock` (held until `release` or the process ends);
        a `UserError` naming the holder's pid when another process holds it."""
        if self._lock is not None:
            return
        path = os.path.join(self.path, LOCK)
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(f"cannot open {path}: {error.strerror}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise UserError(f"cannot lock {path}: {error.strerror}") from None
            raise UserError(f"{self.path} is being trained by another process (pid {holder}, "
                            f"holding {LOCK}): wait for it to end, or choose another "
                            "--workdir") from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self._lock = descriptor

    def release(self) -> None:
        """Let go of the trainer's lock, if held (the file stays: its pid is only news while
        locked)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def has_checkpoint(self) -> bool:
        """Whether the run has saved a checkpoint here (an index file of one)."""
        return bool(glob.glob(os.path.join(self.saved_checkpoints, "ckpt-*.index")))

    def write(self, record: RunRecord) -> None:
        """Write the run record (the chief's part)."""
        if self.chief:
            files.write_json(self.record_path, record.to_json())
