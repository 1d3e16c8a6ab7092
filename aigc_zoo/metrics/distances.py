"""Distances between sets of features (or classifier outputs) of real and generated samples.

Pure numpy functions in float64 (no scipy) implementing:

- Fréchet distance, FID on Inception pool3 features: Heusel et al. 2017, "GANs Trained by a
  Two Time-Scale Update Rule Converge to a Local Nash Equilibrium".
- Kernel distance, KID: Binkowski et al. 2018, "Demystifying MMD GANs".
- Inception Score: Salimans et al. 2016, "Improved Techniques for Training GANs".
- Improved precision and recall: Kynkäänniemi et al. 2019, "Improved Precision and Recall
  Metric for Assessing Generative Models".
- Density and coverage: Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
  Generative Models".

Feature extraction lives elsewhere; every function here takes [N, D] arrays (or [N, K] class
probabilities) and returns Python floats. Randomness comes only from an explicit `seed`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Largest block of the distance matrix held at once (float64 elements, ~64 MB), so that
# 10,000 x 10,000 sets never materialise their 800 MB matrix.
_MAX_BLOCK_ELEMENTS = 8_000_000

# Row sums of softmax outputs saved in float32 are off by ~1e-6; logits or unnormalised scores
# are off by far more than this.
_PROBABILITY_SUM_TOLERANCE = 1e-3


def _as_matrix(name: str, values: np.ndarray, *, min_rows: int = 1) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [N, D] array, got shape {matrix.shape}")
    if matrix.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got shape {matrix.shape}")
    return matrix


def _check_same_dim(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{name_a} and {name_b} have different feature dimensions: "
                         f"{a.shape} vs {b.shape}")


# ---------------------------------------------------------------------------------------------
# Fréchet distance (FID)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of [N, D] features (N >= 2)."""
    features = _as_matrix("features", features, min_rows=2)
    mean = features.mean(axis=0)
    centred = features - mean
    # Not np.cov: it squeezes D = 1 to a scalar, and the result must stay [D, D].
    cov = centred.T @ centred / (features.shape[0] - 1)
    return mean, cov


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    # Round-off makes zero eigenvalues of singular covariances slightly negative.
    roots = np.sqrt(np.clip(eigenvalues, 0.0, None))
    return (eigenvectors * roots) @ eigenvectors.T


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray,
                     mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between N(mean_a, cov_a) and N(mean_b, cov_b).

    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}); FID when the statistics are of
    Inception pool3 features (Heusel et al. 2017).

    Args:
        mean_a, mean_b: [D] means.
        cov_a, cov_b: [D, D] symmetric positive semi-definite covariances.

    Returns:
        The squared distance, >= 0.
    """
    mean_a = np.asarray(mean_a, dtype=np.float64)
    mean_b = np.asarray(mean_b, dtype=np.float64)
    cov_a = np.asarray(cov_a, dtype=np.float64)
    cov_b = np.asarray(cov_b, dtype=np.float64)
    dim = mean_a.shape[0] if mean_a.ndim == 1 else -1
    shapes = (mean_a.shape, cov_a.shape, mean_b.shape, cov_b.shape)
    if shapes != ((dim,), (dim, dim), (dim,), (dim, dim)):
        raise ValueError(f"frechet_distance needs means [D] and covariances [D, D] with one D; "
                         f"got mean_a {mean_a.shape}, cov_a {cov_a.shape}, "
                         f"mean_b {mean_b.shape}, cov_b {cov_b.shape}")
    # eigh reads one triangle only, so symmetrise away round-off asymmetry first.
    cov_a = 0.5 * (cov_a + cov_a.T)
    cov_b = 0.5 * (cov_b + cov_b.T)
    # S_a S_b is not symmetric, but it is similar to sqrt(S_a) S_b sqrt(S_a), which is PSD:
    # same eigenvalues, and eigvalsh on it is stable where a general sqrtm is not.
    sqrt_a = _sqrtm_psd(cov_a)
    product = sqrt_a @ cov_b @ sqrt_a
    product = 0.5 * (product + product.T)
    trace_sqrt_product = np.sqrt(np.clip(np.linalg.eigvalsh(product), 0.0, None)).sum()
    diff = mean_a - mean_b
    distance = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt_product
    return float(max(distance, 0.0))


def frechet_distance_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to [N_a, D] and [N_b, D] features."""
    features_a = _as_matrix("features_a", features_a, min_rows=2)
    features_b = _as_matrix("features_b", features_b, min_rows=2)
    _check_same_dim("features_a", features_a, "features_b", features_b)
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


# ---------------------------------------------------------------------------------------------
# Kernel distance (KID)


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    k = x @ y.T / x.shape[1] + 1.0
    return k * k * k  # numpy's `** 3` calls pow() per element, several times slower


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    m = x.shape[0]
    k_xx = _polynomial_kernel(x, x)
    k_yy = _polynomial_kernel(y, y)
    k_xy = _polynomial_kernel(x, y)
    # Dropping the diagonal k(x_i, x_i) is what makes the within-set terms unbiased; the
    # cross term pairs independent samples, so all m^2 of them count.
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.mean())


def kernel_distance(features_a: np.ndarray, features_b: np.ndarray, *,
                    num_subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2, cubic kernel.

    k(x, y) = (x.y / D + 1)^3. Each of `num_subsets` estimates compares
    min(subset_size, N_a, N_b) points drawn without replacement from each set.

    Args:
        features_a, features_b: [N_a, D] and [N_b, D] features, N >= 2.
        num_subsets: how many random subsets to average over.
        subset_size: points per subset and set.
        seed: seeds np.random.default_rng for the subsets.

    Returns:
        (mean, standard deviation) of the estimates over subsets. The mean can be slightly
        negative when the distributions match: the estimator is unbiased, not clipped. When
        a subset holds all of both sets, every subset is the same two sets in another order,
        whose estimate is the same: it is computed once, with a standard deviation of 0.
    """
    features_a = _as_matrix("features_a", features_a, min_rows=2)
    features_b = _as_matrix("features_b", features_b, min_rows=2)
    _check_same_dim("features_a", features_a, "features_b", features_b)
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be >= 2 (the estimator pairs distinct points), "
                         f"got {subset_size}")
    size = min(subset_size, features_a.shape[0], features_b.shape[0])
    if size == features_a.shape[0] == features_b.shape[0]:
        return _unbiased_mmd2(features_a, features_b), 0.0
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(num_subsets):
        subset_a = features_a[rng.choice(features_a.shape[0], size, replace=False)]
        subset_b = features_b[rng.choice(features_b.shape[0], size, replace=False)]
        estimates.append(_unbiased_mmd2(subset_a, subset_b))
    return float(np.mean(estimates)), float(np.std(estimates))


# ---------------------------------------------------------------------------------------------
# Inception Score


def inception_score(probabilities: np.ndarray, *, num_splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))).

    p(y) is the marginal of each of `num_splits` consecutive splits, as in the original code.

    Args:
        probabilities: [N, K] class probabilities p(y|x) (softmax outputs, rows sum to 1).
        num_splits: how many consecutive splits to score separately, 1 <= num_splits <= N.

    Returns:
        (mean, standard deviation) of the score over splits; 1 <= score <= K.
    """
    probabilities = _as_matrix("probabilities", probabilities)
    num_examples = probabilities.shape[0]
    if probabilities.min() < 0.0:
        raise ValueError(f"probabilities must be non-negative, got minimum "
                         f"{probabilities.min()} in an array of shape {probabilities.shape}")
    row_sums = probabilities.sum(axis=1)
    worst = int(np.argmax(np.abs(row_sums - 1.0)))
    if abs(row_sums[worst] - 1.0) > _PROBABILITY_SUM_TOLERANCE:
        raise ValueError(f"each row of probabilities must sum to 1 (softmax outputs, not "
                         f"logits); row {worst} of {probabilities.shape} sums to "
                         f"{row_sums[worst]}")
    if not 1 <= num_splits <= num_examples:
        raise ValueError(f"num_splits must be in [1, N = {num_examples}], got {num_splits}")
    # Flooring at the smallest positive float keeps 0 * log(0) at 0 instead of NaN while
    # leaving every positive probability exact.
    tiny = np.finfo(np.float64).tiny
    scores = []
    for split in range(num_splits):
        start = split * num_examples // num_splits
        stop = (split + 1) * num_examples // num_splits
        part = probabilities[start:stop]
        marginal = part.mean(axis=0, keepdims=True)
        kl = part * (np.log(np.maximum(part, tiny)) - np.log(np.maximum(marginal, tiny)))
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


# ---------------------------------------------------------------------------------------------
# Nearest-neighbour manifolds: precision / recall, density / coverage


def _rows_per_block(num_columns: int) -> int:
    return max(1, _MAX_BLOCK_ELEMENTS // max(1, num_columns))


def _squared_distance_blocks(a: np.ndarray, b: np.ndarray,
                             rows_per_block: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (first row, [rows, N_b] squared Euclidean distances) over row blocks of a.

    Squared, because the metrics only compare and rank distances, and a square root over
    10^8 entries would cost more than the matrix product.
    """
    # Distances are shift-invariant; centring shrinks the norms and with them the cancellation
    # in |a|^2 + |b|^2 - 2 a.b.
    centre = np.concatenate([a, b]).mean(axis=0)
    a = a - centre
    b = b - centre
    sq_norms_a = np.einsum("ij,ij->i", a, a)
    sq_norms_b = np.einsum("ij,ij->i", b, b)
    for start in range(0, a.shape[0], rows_per_block):
        stop = min(start + rows_per_block, a.shape[0])
        block = a[start:stop] @ b.T
        block *= -2.0
        block += sq_norms_a[start:stop, None]
        block += sq_norms_b[None, :]
        np.maximum(block, 0.0, out=block)  # round-off can push coincident points below 0
        yield start, block


def pairwise_distances(a: np.ndarray, b: np.ndarray, *,
                       rows_per_block: int | None = None) -> np.ndarray:
    """Euclidean distances [N_a, N_b] between the rows of a [N_a, D] and b [N_b, D].

    Computed in blocks of `rows_per_block` rows of a (default: blocks of ~64 MB); the metrics
    below consume the blocks directly and never hold the whole matrix.
    """
    a = _as_matrix("a", a)
    b = _as_matrix("b", b)
    _check_same_dim("a", a, "b", b)
    if rows_per_block is None:
        rows_per_block = _rows_per_block(b.shape[0])
    if rows_per_block < 1:
        raise ValueError(f"rows_per_block must be >= 1, got {rows_per_block}")
    distances = np.empty((a.shape[0], b.shape[0]))
    for start, block in _squared_distance_blocks(a, b, rows_per_block):
        distances[start:start + block.shape[0]] = np.sqrt(block)
    return distances


def _kth_neighbour_squared_distances(points: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each point to its k-th nearest other point in the same set."""
    squared_radii = np.empty(points.shape[0])
    blocks = _squared_distance_blocks(points, points, _rows_per_block(points.shape[0]))
    for start, block in blocks:
        rows = np.arange(block.shape[0])
        # Excluding self by index rather than taking the (k+1)-th smallest keeps duplicates
        # right: a duplicate is a genuine neighbour at distance 0.
        block[rows, start + rows] = np.inf
        squared_radii[start:start + rows.size] = np.partition(block, k - 1, axis=1)[:, k - 1]
    return squared_radii


def _check_manifold_inputs(real: np.ndarray, fake: np.ndarray, k: int, *,
                           fake_min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    real = _as_matrix("real", real)
    fake = _as_matrix("fake", fake)
    _check_same_dim("real", real, "fake", fake)
    if real.shape[0] < k + 1 or fake.shape[0] < fake_min_rows:
        raise ValueError(f"k = {k} needs at least k + 1 = {k + 1} real points and "
                         f"{fake_min_rows} fake points; got real {real.shape}, "
                         f"fake {fake.shape}")
    return real, fake


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each set's manifold is the union of closed balls around its points, each with radius the
    distance to that point's k-th nearest neighbour in the same set (itself excluded).

    Args:
        real, fake: [N, D] and [M, D] features, each with at least k + 1 points.
        k: which neighbour sets the radii.

    Returns:
        {"precision": share of fake points in the real manifold,
         "recall": share of real points in the fake manifold}.
    """
    real, fake = _check_manifold_inputs(real, fake, k, fake_min_rows=k + 1)
    real_radii2 = _kth_neighbour_squared_distances(real, k)
    fake_radii2 = _kth_neighbour_squared_distances(fake, k)
    fake_in_real = np.zeros(fake.shape[0], dtype=bool)
    real_in_fake = np.zeros(real.shape[0], dtype=bool)
    # One pass over fake-real distances serves both directions: rows test fake points against
    # all real balls, columns test real points against the balls of this block's fake points.
    for start, block in _squared_distance_blocks(fake, real, _rows_per_block(real.shape[0])):
        stop = start + block.shape[0]
        fake_in_real[start:stop] = (block <= real_radii2[None, :]).any(axis=1)
        real_in_fake |= (block <= fake_radii2[start:stop, None]).any(axis=0)
    return {"precision": float(fake_in_real.mean()), "recall": float(real_in_fake.mean())}


def density_coverage(real: np.ndarray, fake: np.ndarray, *, k: int = 5) -> dict[str, float]:
    """Density and coverage (Naeem et al. 2020), from k-NN balls around the real points only.

    Args:
        real, fake: [N, D] features with N >= k + 1, and [M, D] features with M >= 1.
        k: which neighbour sets the radii of the real balls.

    Returns:
        {"density": (1 / (k M)) sum over fake points of the number of real balls holding it
                    (about 1 when fake matches real; can exceed 1),
         "coverage": share of real balls holding at least one fake point}.
    """
    real, fake = _check_manifold_inputs(real, fake, k, fake_min_rows=1)
    real_radii2 = _kth_neighbour_squared_distances(real, k)
    balls_per_fake = np.zeros(fake.shape[0])
    covered = np.zeros(real.shape[0], dtype=bool)
    for start, block in _squared_distance_blocks(fake, real, _rows_per_block(real.shape[0])):
        inside = block <= real_radii2[None, :]
        balls_per_fake[start:start + block.shape[0]] = inside.sum(axis=1)
        covered |= inside.any(axis=0)
    return {"density": float(balls_per_fake.sum() / (k * fake.shape[0])),
            "coverage": float(covered.mean())}
