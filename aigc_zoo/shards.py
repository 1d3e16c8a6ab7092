"""Samples written as they are drawn, in bounded memory: the files of `--mode=sample`.

    writer = shards.Writer("runs/vae-digits/samples/samples_step9360_seed0", 1_000_000, (28, 28, 1))
    writer.add(images, {"labels": labels})       # any number of batches, in order
    path = writer.close()
    for part in shards.read(path): part["images"]   # the same arrays back, shard by shard

The format:
- Samples that fit one shard: one `<stem>.npz` with `images` float32 [N, ...] in [-1, 1] and
  any conditioning the samples were drawn with (`labels` int32 [N]), as `np.savez_compressed`
  writes it.
- More: a folder `<stem>/` of `shard_00000.npz`, `shard_00001.npz`, ... (the same arrays for
  consecutive samples, `shard_size` each but the last) and `index.json`: `num_samples`,
  `shard_size`, `sample_shape`, `complete`, and per shard its `file`, `start` and `count`.
  Every file is written under a temporary name and renamed, the index after each shard, so a
  reader (or a killed run) only ever sees whole shards; `complete` is true once all are there.

A shard holds at most `SHARD_BYTES` of float32 images (16,384 digits of 28x28), so a writer
holds at most one shard and one batch, whatever the number of samples.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Iterator, Sequence

import numpy as np

from aigc_zoo import files
from aigc_zoo.errors import UserError

SHARD_BYTES = 64 << 20
INDEX = "index.json"


def shard_size(sample_shape: Sequence[int]) -> int:
    """Samples per shard: the largest power of two whose float32 images fit `SHARD_BYTES`
    (a round number, so shard `i` starts at `i * shard_size`)."""
    sample_bytes = 4 * int(np.prod(sample_shape, dtype=np.int64))
    count = max(1, SHARD_BYTES // max(sample_bytes, 1))
    return 1 << (count.bit_length() - 1)


def _save(path: str, arrays: dict[str, np.ndarray]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = path + ".tmp.npz"  # np.savez adds .npz to names without it
    np.savez_compressed(temporary, **arrays)
    os.replace(temporary, path)


class Writer:
    """Writes `num_samples` samples of `sample_shape`, added in order, as one `.npz` or as
    shards (see the module docstring); the folder or file `stem[.npz]` is replaced."""

    def __init__(self, stem: str, num_samples: int, sample_shape: Sequence[int]):
        self.num_samples = int(num_samples)
        self.shard_size = shard_size(sample_shape)
        self.sharded = self.num_samples > self.shard_size
        self.path = stem if self.sharded else stem + ".npz"
        self.sample_shape = [int(d) for d in sample_shape]
        self._pending: list[dict[str, np.ndarray]] = []
        self._pending_count = 0
        self._written = 0
        self._shards: list[dict[str, Any]] = []

    def add(self, images: np.ndarray, conditioning: dict[str, np.ndarray] | None = None
            ) -> None:
        """Append a batch of samples (and their conditioning arrays, one row per sample)."""
        arrays = {"images": np.asarray(images, np.float32),
                  **{k: np.asarray(v) for k, v in (conditioning or {}).items()}}
        if self._written + self._pending_count + len(arrays["images"]) > self.num_samples:
            raise ValueError("more samples added than the writer was made for")
        self._pending.append(arrays)
        self._pending_count += len(arrays["images"])
        while self._pending_count >= self.shard_size and self.sharded:
            self._flush(self.shard_size)

    def close(self) -> str:
        """Write what is left; the path of the `.npz` or of the shards' folder."""
        if self._written + self._pending_count != self.num_samples:
            raise ValueError(f"{self._written + self._pending_count} samples added, "
                             f"{self.num_samples} expected")
        if self._pending_count:
            self._flush(self._pending_count)
        if self.sharded:
            self._write_index(complete=True)
        return self.path

    def _flush(self, count: int) -> None:
        merged = {key: np.concatenate([part[key] for part in self._pending])
                  for key in self._pending[0]}
        shard = {key: value[:count] for key, value in merged.items()}
        rest = {key: value[count:] for key, value in merged.items()}
        self._pending = [rest] if len(rest["images"]) else []
        self._pending_count = len(rest["images"])
        if not self.sharded:
            _save(self.path, shard)
        else:
            if not self._shards:  # the folder is made with the first shard: nothing before
                os.makedirs(self.path, exist_ok=True)
                # A rerun of the same command replaces the earlier shards (a larger earlier
                # run would otherwise leave shards beyond this run's count behind).
                for stale in glob.glob(os.path.join(self.path, "shard_*.npz")):
                    os.remove(stale)
            name = f"shard_{len(self._shards):05d}.npz"
            _save(os.path.join(self.path, name), shard)
            self._shards.append({"file": name, "start": self._written, "count": count})
            self._write_index(complete=False)
        self._written += count

    def _write_index(self, *, complete: bool) -> None:
        files.write_json(os.path.join(self.path, INDEX), {
            "num_samples": self.num_samples, "shard_size": self.shard_size,
            "sample_shape": self.sample_shape, "complete": complete, "shards": self._shards})


def read(path: str) -> Iterator[dict[str, np.ndarray]]:
    """The arrays of a `Writer`'s output, shard by shard (one dict for a single `.npz`).

    Raises:
        UserError: an unfinished or damaged set of shards.
    """
    if not os.path.isdir(path):
        with np.load(path) as saved:
            yield dict(saved)
        return
    index = files.read_json(os.path.join(path, INDEX))
    if not isinstance(index, dict) or index.get("complete") is not True:
        raise UserError(f"{path} holds an unfinished set of samples (its {INDEX} is not "
                        "complete); draw them again")
    for shard in index["shards"]:
        with np.load(os.path.join(path, shard["file"])) as saved:
            yield dict(saved)
