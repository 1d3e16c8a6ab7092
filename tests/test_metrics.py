"""Tests for aigc_zoo.metrics.distances: closed forms, hand-computed cases, brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aigc_zoo.metrics import distances


def _random_cov(rng: np.random.Generator, dim: int, *, rank: int | None = None) -> np.ndarray:
    factor = rng.normal(size=(dim, rank or dim))
    return factor @ factor.T / dim + (0.0 if rank else 0.1 * np.eye(dim))


def _gaussian(rng: np.random.Generator, mean: np.ndarray, cov: np.ndarray, n: int) -> np.ndarray:
    return mean + rng.normal(size=(n, mean.size)) @ np.linalg.cholesky(cov).T


# ---------------------------------------------------------------------------------------------
# Fréchet distance


def test_feature_statistics_is_mean_and_unbiased_covariance():
    features = np.random.default_rng(0).normal(size=(50, 3))
    mean, cov = distances.feature_statistics(features)
    np.testing.assert_allclose(mean, features.mean(axis=0))
    np.testing.assert_allclose(cov, np.cov(features, rowvar=False, ddof=1))
    # One feature still gives a [1, 1] covariance (np.cov would squeeze it to a scalar).
    assert distances.feature_statistics(features[:, :1])[1].shape == (1, 1)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16))
    scale = np.trace(np.cov(features, rowvar=False))
    assert distances.frechet_distance_from_features(features, features) <= 1e-6 * scale
    shifted = features + 0.1
    assert distances.frechet_distance_from_features(features, shifted) == pytest.approx(
        16 * 0.1**2, rel=1e-6)


def test_frechet_distance_diagonal_closed_form():
    mean_a, mean_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # sum (mu diff)^2 = 1 + 0 + 6.25; sum (s1 + s2 - 2 sqrt(s1 s2)) = 4 + 1 + 0.
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum(var_a + var_b - 2 * np.sqrt(var_a * var_b))
    assert expected == pytest.approx(12.25)
    got = distances.frechet_distance(mean_a, np.diag(var_a), mean_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_one_dimensional_is_mean_and_std_gaps_squared():
    # For 1-D Gaussians W2^2 = (m1 - m2)^2 + (s1 - s2)^2 with s the standard deviations.
    got = distances.frechet_distance(np.array([0.5]), np.array([[4.0]]),
                                     np.array([-1.0]), np.array([[0.09]]))
    assert got == pytest.approx(1.5**2 + (2.0 - 0.3) ** 2, rel=1e-12)


def test_frechet_distance_scaled_covariance_closed_form():
    # S_b = c S_a: (S_a S_b)^{1/2} = sqrt(c) S_a, so FD = |dmu|^2 + Tr(S_a) (1 - sqrt(c))^2.
    rng = np.random.default_rng(2)
    cov = _random_cov(rng, 6)
    mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov) * (1.0 - math.sqrt(2.5)) ** 2
    got = distances.frechet_distance(mean_a, cov, mean_b, 2.5 * cov)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_eigenvalues_of_the_covariance_product():
    # Independent route: the eigenvalues of the non-symmetric S_a S_b (real and >= 0, since it
    # is similar to a PSD matrix), straight from np.linalg.eigvals.
    rng = np.random.default_rng(3)
    for dim in (2, 5, 12):
        cov_a, cov_b = _random_cov(rng, dim), _random_cov(rng, dim)
        mean_a, mean_b = rng.normal(size=dim), rng.normal(size=dim)
        eigenvalues = np.linalg.eigvals(cov_a @ cov_b).real
        expected = (np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                    - 2 * np.sum(np.sqrt(eigenvalues)))
        got = distances.frechet_distance(mean_a, cov_a, mean_b, cov_b)
        assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_is_symmetric_and_non_negative():
    rng = np.random.default_rng(4)
    dim = 8
    pairs = [(_random_cov(rng, dim), _random_cov(rng, dim)),
             (_random_cov(rng, dim, rank=3), _random_cov(rng, dim)),  # singular
             (_random_cov(rng, dim, rank=2), _random_cov(rng, dim, rank=5))]
    base = _random_cov(rng, dim)
    pairs.append((base, base + 1e-13 * np.eye(dim)))  # equal up to round-off
    mean = rng.normal(size=dim)
    for cov_a, cov_b in pairs:
        forward = distances.frechet_distance(mean, cov_a, mean, cov_b)
        backward = distances.frechet_distance(mean, cov_b, mean, cov_a)
        assert forward >= 0.0 and backward >= 0.0
        assert forward == pytest.approx(backward, rel=1e-7, abs=1e-10)
    # Identical statistics: round-off leaves about half of these slightly below 0 unclipped.
    for _ in range(20):
        cov = _random_cov(rng, dim)
        assert 0.0 <= distances.frechet_distance(mean, cov, mean, cov) <= 1e-12 * np.trace(cov)


def test_frechet_distance_from_large_samples_approaches_closed_form():
    rng = np.random.default_rng(5)
    dim = 4
    mean_a, mean_b = np.zeros(dim), np.array([1.0, -0.5, 0.0, 0.25])
    cov_a, cov_b = _random_cov(rng, dim), _random_cov(rng, dim)
    expected = distances.frechet_distance(mean_a, cov_a, mean_b, cov_b)
    samples_a = _gaussian(rng, mean_a, cov_a, 50_000)
    samples_b = _gaussian(rng, mean_b, cov_b, 50_000)
    got = distances.frechet_distance_from_features(samples_a, samples_b)
    assert got == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("call", [
    lambda: distances.frechet_distance_from_features(np.zeros((5, 3)), np.zeros((5, 4))),
    lambda: distances.frechet_distance_from_features(np.zeros(5), np.zeros(5)),
    lambda: distances.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2)),
    lambda: distances.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(3)),
    lambda: distances.feature_statistics(np.zeros((1, 3))),
])
def test_frechet_distance_rejects_bad_shapes(call):
    with pytest.raises(ValueError, match=r"\("):  # the message shows the offending shape
        call()


# ---------------------------------------------------------------------------------------------
# Kernel distance


def _kernel_mean(mean_x: np.ndarray, mean_y: np.ndarray) -> float:
    """E (x.y / D + 1)^3 for independent x ~ N(mean_x, I), y ~ N(mean_y, I), in closed form.

    Given y, s = x.y ~ N(mean_x.y, |y|^2); with u = mean_x.y and q = |y|^2 over y:
    E s = E u, E s^2 = E u^2 + E q, E s^3 = E u^3 + 3 E[u q].
    """
    dim = mean_x.size
    mu, var = mean_x @ mean_y, mean_x @ mean_x
    e_q = mean_y @ mean_y + dim
    e_s = mu
    e_s2 = mu**2 + var + e_q
    e_s3 = mu**3 + 3 * mu * var + 3 * (mu * e_q + 2 * mu)
    return e_s3 / dim**3 + 3 * e_s2 / dim**2 + 3 * e_s / dim + 1


def test_kernel_distance_matches_brute_force_unbiased_mmd():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.5
    k = lambda p, q: (p @ q / 3 + 1) ** 3  # noqa: E731
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(6) for j in range(6) if i != j)
    cross = sum(k(x[i], y[j]) for i in range(6) for j in range(6))
    expected = within / (6 * 5) - 2 * cross / 36
    # With subset_size >= N every subset is the whole set, so every estimate is the same:
    # one is computed, with no spread.
    mean, std = distances.kernel_distance(x, y, num_subsets=3, subset_size=10)
    assert mean == pytest.approx(expected, rel=1e-12)
    assert std == 0.0
    # Subsets of fewer points than the sets hold draw estimates that differ.
    assert distances.kernel_distance(x, y, num_subsets=3, subset_size=5)[1] > 0.0


def test_kernel_distance_is_unbiased_for_shifted_gaussians():
    mean_a, mean_b = np.zeros(4), np.array([0.8, -0.4, 0.3, 0.0])
    population = (_kernel_mean(mean_a, mean_a) + _kernel_mean(mean_b, mean_b)
                  - 2 * _kernel_mean(mean_a, mean_b))
    assert population == pytest.approx(1.1516057656)
    rng = np.random.default_rng(7)
    estimates = []
    for seed in range(1000):
        a, b = rng.normal(size=(20, 4)) + mean_a, rng.normal(size=(20, 4)) + mean_b
        estimates.append(distances.kernel_distance(a, b, num_subsets=1, subset_size=20,
                                                   seed=seed)[0])
    # Keeping the diagonal k(x, x) would add about 1 here; the tolerance is ~4 standard errors.
    standard_error = np.std(estimates) / math.sqrt(len(estimates))
    assert abs(np.mean(estimates) - population) < 4 * standard_error
    assert 4 * standard_error < 0.15


def test_kernel_distance_near_zero_for_one_distribution_and_not_for_two():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    mean, std = distances.kernel_distance(a, b, num_subsets=50, subset_size=100, seed=1)
    assert std > 0.0
    assert abs(mean) < 3 * std
    mean_shifted, std_shifted = distances.kernel_distance(a, b + 1.0, num_subsets=50,
                                                          subset_size=100, seed=1)
    assert mean_shifted > 3 * std_shifted + abs(mean)


def test_kernel_distance_subsets_are_drawn_from_every_row():
    # b matches a in its first 100 rows only; subsets of 100 taken from the top would miss
    # the shifted 300 rows that follow and report no difference.
    rng = np.random.default_rng(17)
    a = rng.normal(size=(400, 4))
    b = np.concatenate([rng.normal(size=(100, 4)), rng.normal(size=(300, 4)) + 3.0])
    mean, std = distances.kernel_distance(a, b, num_subsets=10, subset_size=100)
    assert mean > 3 * std > 0.0


def test_kernel_distance_is_deterministic_for_a_seed():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(300, 5)), rng.normal(size=(200, 5))
    first = distances.kernel_distance(a, b, num_subsets=5, subset_size=50, seed=3)
    assert distances.kernel_distance(a, b, num_subsets=5, subset_size=50, seed=3) == first
    assert distances.kernel_distance(a, b, num_subsets=5, subset_size=50, seed=4) != first
    assert first[1] >= 0.0


@pytest.mark.parametrize("call", [
    lambda: distances.kernel_distance(np.zeros((5, 3)), np.zeros((5, 4))),
    lambda: distances.kernel_distance(np.zeros((5, 3)), np.zeros((1, 3))),
    lambda: distances.kernel_distance(np.zeros((5, 3)), np.zeros((5, 3)), subset_size=1),
    lambda: distances.kernel_distance(np.zeros((5, 3)), np.zeros((5, 3)), num_subsets=0),
])
def test_kernel_distance_rejects_bad_inputs(call):
    with pytest.raises(ValueError):
        call()


# ---------------------------------------------------------------------------------------------
# Inception Score


def test_inception_score_is_one_when_every_sample_is_the_same_class():
    probabilities = np.zeros((100, 10))
    probabilities[:, 3] = 1.0
    with np.errstate(all="raise"):  # zeros must not reach a log
        mean, std = distances.inception_score(probabilities, num_splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_is_num_classes_for_confident_balanced_samples():
    num_classes = 10
    probabilities = np.eye(num_classes)[np.arange(1000) % num_classes]  # 10 of each per split
    with np.errstate(all="raise"):
        mean, std = distances.inception_score(probabilities, num_splits=10)
    assert mean == pytest.approx(num_classes, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_binary_closed_form():
    # Rows alternate [q, 1 - q] and [1 - q, q], so p(y) = [1/2, 1/2] and
    # KL = log 2 - H(q) for every row: IS = 2 exp(-H(q)).
    q = 0.9
    probabilities = np.array([[q, 1 - q], [1 - q, q]] * 50)
    entropy = -(q * math.log(q) + (1 - q) * math.log(1 - q))
    mean, _ = distances.inception_score(probabilities, num_splits=5)
    assert mean == pytest.approx(2 * math.exp(-entropy), rel=1e-12)


def test_inception_score_uses_the_marginal_of_each_split():
    # First half all class 0, second half all class 1: within each of 2 splits every sample
    # is the same class (IS 1), while over one split the classes are balanced (IS 2).
    probabilities = np.repeat(np.eye(2), 50, axis=0)
    assert distances.inception_score(probabilities, num_splits=2)[0] == pytest.approx(1.0)
    assert distances.inception_score(probabilities, num_splits=1)[0] == pytest.approx(2.0)


def test_inception_score_of_random_softmax_rows_is_between_one_and_num_classes():
    logits = np.random.default_rng(10).normal(scale=3.0, size=(500, 7))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    mean, std = distances.inception_score(probabilities, num_splits=5)
    assert 1.0 < mean < 7.0
    assert std > 0.0


@pytest.mark.parametrize("probabilities, num_splits", [
    (np.full((10, 4), 0.3), 2),  # rows sum to 1.2
    (np.random.default_rng(0).normal(size=(10, 4)), 2),  # logits, not probabilities
    (np.full(4, 0.25), 1),  # 1-D
    (np.full((10, 4), 0.25), 11),  # more splits than samples
])
def test_inception_score_rejects_bad_inputs(probabilities, num_splits):
    with pytest.raises(ValueError):
        distances.inception_score(probabilities, num_splits=num_splits)


# ---------------------------------------------------------------------------------------------
# Precision / recall and density / coverage


@pytest.mark.parametrize("fake, k, expected", [
    # real = 0, 1, 2, 3. k = 1: every real radius is 1. fake 0.5 lies in B(0, 1) and B(1, 1);
    # 10 in none: precision 1/2. Fake radii are both 9.5 and B(0.5, 9.5) holds every real point:
    # recall 1. Density = (2 + 0) / (1 * 2) = 1; balls of 0 and 1 hold a fake: coverage 2/4.
    ([0.5, 10.0], 1, dict(precision=0.5, recall=1.0, density=1.0, coverage=0.5)),
    # k = 1, fake = 0.5, 0.8, 10, 10.5: fake radii 0.3, 0.3, 0.5, 0.5. Real 1 is 0.2 from 0.8;
    # 0, 2, 3 are in no fake ball: recall 1/4. 0.5 and 0.8 each lie in B(0, 1) and B(1, 1):
    # precision 2/4, density (2 + 2 + 0 + 0) / (1 * 4) = 1, coverage 2/4.
    ([0.5, 0.8, 10.0, 10.5], 1, dict(precision=0.5, recall=0.25, density=1.0, coverage=0.5)),
    # k = 2: real radii 2, 1, 1, 2 (0 and 3 reach their second neighbour at distance 2).
    # 0.5 and 0.8 lie in B(0, 2) and B(1, 1) only (1.2 from 2, 2.2 from 3): precision 2/4,
    # density (2 + 2) / (2 * 4) = 1/2, coverage 2/4. Fake radii 9.5, 9.2, 9.2, 9.7 and
    # B(0.5, 9.5) holds every real point: recall 1.
    ([0.5, 0.8, 10.0, 10.5], 2, dict(precision=0.5, recall=1.0, density=0.5, coverage=0.5)),
])
def test_hand_computed_one_dimensional_examples(fake, k, expected):
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array(fake)[:, None]
    got = {**distances.precision_recall(real, fake, k=k),
           **distances.density_coverage(real, fake, k=k)}
    assert got == pytest.approx(expected, abs=1e-12)


def test_balls_are_closed():
    # real = 0, 1, 3, 4 with k = 1: radii all 1. Fake 2 lies exactly on the boundary of
    # B(1, 1) and B(3, 1) (half-integer coordinates keep every distance exact in float), and
    # the papers' balls are closed (<=): precision 1/4, density 2 / (1 * 4), coverage 2/4.
    # Fake radii 8, 1, 1, 2; B(2, 8) holds every real point: recall 1.
    real = np.array([[0.0], [1.0], [3.0], [4.0]])
    fake = np.array([[2.0], [10.0], [11.0], [13.0]])
    expected = dict(precision=0.25, recall=1.0, density=0.5, coverage=0.5)
    got = {**distances.precision_recall(real, fake, k=1),
           **distances.density_coverage(real, fake, k=1)}
    assert got == expected  # exact: no round-off anywhere on this grid


def test_fake_subset_of_real_has_full_precision():
    real = np.random.default_rng(11).normal(size=(200, 5))
    result = distances.precision_recall(real, real[::4], k=3)
    assert result["precision"] == 1.0
    assert distances.density_coverage(real, real[::4], k=3)["coverage"] < 1.0


def test_fake_equal_to_real_scores_one_everywhere():
    real = np.random.default_rng(12).normal(size=(200, 5))
    assert distances.precision_recall(real, real, k=3) == {"precision": 1.0, "recall": 1.0}
    assert distances.density_coverage(real, real, k=3)["coverage"] == 1.0


def test_fake_far_away_scores_zero_everywhere():
    real = np.random.default_rng(13).normal(size=(200, 5))
    fake = real + 100.0
    assert distances.precision_recall(real, fake, k=3) == {"precision": 0.0, "recall": 0.0}
    assert distances.density_coverage(real, fake, k=3) == {"density": 0.0, "coverage": 0.0}


def test_swapping_real_and_fake_swaps_precision_and_recall():
    rng = np.random.default_rng(14)
    real, fake = rng.normal(size=(150, 3)), 1.5 * rng.normal(size=(120, 3)) + 0.5
    forward = distances.precision_recall(real, fake, k=3)
    backward = distances.precision_recall(fake, real, k=3)
    assert 0.0 < forward["precision"] < forward["recall"] < 1.0  # fake is the wider cloud
    assert forward == {"precision": backward["recall"], "recall": backward["precision"]}


@pytest.mark.parametrize("call", [
    lambda: distances.precision_recall(np.zeros((5, 2)), np.zeros((5, 3))),
    lambda: distances.precision_recall(np.zeros((3, 2)), np.zeros((5, 2)), k=3),
    lambda: distances.precision_recall(np.zeros((5, 2)), np.zeros((3, 2)), k=3),
    lambda: distances.precision_recall(np.zeros(5), np.zeros(5), k=1),
    lambda: distances.density_coverage(np.zeros((5, 2)), np.zeros((5, 2)), k=5),
    lambda: distances.density_coverage(np.zeros((6, 2)), np.zeros((5, 2)), k=0),
    lambda: distances.density_coverage(np.zeros((6, 2)), np.zeros((0, 2)), k=5),
])
def test_manifold_metrics_reject_bad_inputs(call):
    with pytest.raises(ValueError):
        call()


def test_pairwise_distances_in_blocks_match_the_direct_formula():
    rng = np.random.default_rng(15)
    # Far from the origin, as un-normalised activations can be: |a|^2 + |b|^2 - 2 a.b loses
    # about 8 digits here unless the points are centred first.
    a, b = rng.normal(size=(23, 6)) + 1e4, rng.normal(size=(17, 6)) + 1e4
    direct = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    np.testing.assert_allclose(distances.pairwise_distances(a, b), direct, rtol=1e-9)
    for rows in (1, 5, 23, 100):
        np.testing.assert_allclose(distances.pairwise_distances(a, b, rows_per_block=rows),
                                   direct, rtol=1e-9)


def test_manifold_metrics_do_not_depend_on_the_block_size(monkeypatch):
    rng = np.random.default_rng(16)
    real, fake = rng.normal(size=(60, 4)), rng.normal(size=(45, 4)) + 0.7
    whole = {**distances.precision_recall(real, fake, k=3),
             **distances.density_coverage(real, fake, k=3)}
    assert all(0.0 < value < 1.0 for value in whole.values())
    # 7 rows per block against 60 columns: blocks that straddle the diagonal unevenly.
    monkeypatch.setattr(distances, "_MAX_BLOCK_ELEMENTS", 7 * 60)
    blocked = {**distances.precision_recall(real, fake, k=3),
               **distances.density_coverage(real, fake, k=3)}
    assert blocked == whole
