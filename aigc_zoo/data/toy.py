"""2D toy datasets that make mode collapse visible in seconds: `ring8` and `grid25`.

Both are mixtures of equally weighted isotropic Gaussians, the standard GAN benchmarks:

- `ring8`: 8 modes evenly spaced on a circle of radius 2, standard deviation 0.02
  (Metz et al. 2017, "Unrolled GANs");
- `grid25`: a 5x5 grid of modes at {-4, -2, 0, 2, 4}^2, standard deviation 0.05
  (Srivastava et al. 2017, "VEEGAN"; Lin et al. 2018, "PacGAN").

Examples are `{"image": float32 [2], "label": int32}`: the point in data coordinates (not
rescaled to [-1, 1]) and the index of the mode it was drawn from. Splits are fixed draws
(seeded by split), so runs are reproducible and `train` and `test` are independent.
"""

from __future__ import annotations

import dataclasses

import numpy as np

TRAIN_EXAMPLES = 50_000
TEST_EXAMPLES = 10_000
_SPLIT_SEEDS = {"train": 0, "test": 1}


@dataclasses.dataclass(frozen=True)
class Mixture:
    """A 2D Gaussian mixture with equal weights.

    Args:
        name: the dataset name.
        centres: [K, 2] mode means.
        std: the standard deviation of every mode, per coordinate.
    """

    name: str
    centres: np.ndarray
    std: float

    @property
    def num_modes(self) -> int:
        return len(self.centres)

    def sample(self, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` points [count, 2] float32 and their mode indices [count] int32."""
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, self.num_modes, count)
        points = self.centres[labels] + self.std * rng.standard_normal((count, 2))
        return points.astype(np.float32), labels.astype(np.int32)


def _ring(count: int, radius: float) -> np.ndarray:
    angles = 2 * np.pi * np.arange(count) / count
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _grid(side: int, spacing: float) -> np.ndarray:
    axis = spacing * (np.arange(side) - (side - 1) / 2)
    xs, ys = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


MIXTURES = {
    "ring8": Mixture("ring8", _ring(8, 2.0), 0.02),
    "grid25": Mixture("grid25", _grid(5, 2.0), 0.05),
}


def split_arrays(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole base split (`train` or `test`) of toy dataset `name`: points and labels."""
    if split not in _SPLIT_SEEDS:
        from aigc_zoo.errors import UserError
        raise UserError(f"{name} has splits train and test, not {split!r}")
    count = TRAIN_EXAMPLES if split == "train" else TEST_EXAMPLES
    mixture = MIXTURES[name]
    # Distinct seeds per dataset and split, fixed forever (changing them changes every result).
    return mixture.sample(count, seed=1000 * len(name) + 10 * mixture.num_modes
                          + _SPLIT_SEEDS[split])
