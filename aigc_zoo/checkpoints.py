"""Checkpoints of the whole training state: model, every optimizer, step, RNG, epoch.

Variables are saved as flat lists in a deterministic order (the model's `variables`, then each
update group's optimizer variables) rather than through Keras' object graph: that graph leaves
out the state of `keras.random.SeedGenerator`, and the update groups' optimizers are not
attributes of the model. The model's variables include its `global_step` and its seed
generator's state, so a resumed run continues the step count and the random stream where the
checkpoint left them. The price: variables match by position, so a checkpoint restores only
into a model built from the same code and config (which `config.json` guards).

`tf.train.CheckpointManager` writes the data files first and the `checkpoint` index last, so a
crash during a save leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

import os
import re

import tensorflow as tf

from aigc_zoo.errors import UserError
from aigc_zoo.models.base import GenerativeModel


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

    @property
    def latest(self) -> str | None:
        """Path prefix of the newest checkpoint, or None.

        Falls back to the highest-numbered `ckpt-N` on disk when the `checkpoint` index file is
        missing or unreadable, rather than silently starting again from scratch.
        """
        if self._manager.latest_checkpoint:
            return self._manager.latest_checkpoint
        if not os.path.isdir(self._manager.directory):
            return None
        numbers = [int(match.group(1)) for name in os.listdir(self._manager.directory)
                   if (match := re.fullmatch(r"ckpt-(\d+)\.index", name))]
        return os.path.join(self._manager.directory, f"ckpt-{max(numbers)}") if numbers else None

    def save(self, epoch: int) -> str:
        """Save the state as of the end of `epoch` (1-based count of finished epochs)."""
        if len(self._model.variables) != self._num_variables:
            # The flat lists were fixed when this Checkpointer was made; new variables would
            # silently go unsaved.
            raise RuntimeError(f"the model has {len(self._model.variables)} variables, "
                               f"{self._num_variables} when its Checkpointer was created")
        self.epoch.assign(epoch)
        return self._manager.save()

    def restore_latest(self) -> int:
        """Restore the newest checkpoint if there is one; returns the finished-epoch count."""
        path = self.latest
        if path is None:
            return 0
        try:
            self._checkpoint.restore(path).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as error:
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
            # TensorFlow reports damaged files as DataLossError or as a bare OpError about
            # checksums; both mean the file, not the model, is wrong.
            if isinstance(error, tf.errors.DataLossError) or "checksum" in detail.lower():
                raise UserError(f"checkpoint {path} is corrupt ({detail}); delete its files to "
                                "resume from an older one, or use --overwrite") from None
            raise UserError(f"cannot restore checkpoint {path}: it does not match this model "
                            f"({type(error).__name__}); use another --workdir or --overwrite"
                            ) from None
        return int(self.epoch.numpy())
