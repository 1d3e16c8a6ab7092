"""Tests for aigc_zoo.models.vqvae: the quantiser's pieces against hand-worked values and a
numpy reference, and the model on made-up images (the shared harness does the rest)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_model
from aigc_zoo.models import vqvae


def test_nearest_codes_is_the_closest_row():
    codebook = tf.constant([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    vectors = tf.constant([[0.1, -0.1], [0.9, 0.4], [0.2, 1.4], [5.0, 0.0]])
    np.testing.assert_array_equal(vqvae.nearest_codes(vectors, codebook).numpy(), [0, 1, 2, 1])


def test_straight_through_passes_the_gradient_to_the_vectors_unchanged():
    vectors = tf.Variable([[0.3, -0.2], [1.5, 0.7]])
    codes = tf.Variable([[0.0, 0.0], [1.0, 1.0]])
    weights = tf.constant([[2.0, -1.0], [0.5, 3.0]])
    with tf.GradientTape() as tape:
        quantized = vqvae.straight_through(vectors, codes)
        objective = tf.reduce_sum(weights * quantized)
    np.testing.assert_array_equal(quantized.numpy(), codes.numpy())
    to_vectors, to_codes = tape.gradient(objective, [vectors, codes])
    np.testing.assert_array_equal(to_vectors.numpy(), weights.numpy())
    assert to_codes is None


def test_perplexity_of_known_assignments():
    assert vqvae.perplexity(tf.constant([5.0, 5.0, 0.0, 0.0])).numpy() == pytest.approx(2.0)
    assert vqvae.perplexity(tf.constant([7.0] * 16)).numpy() == pytest.approx(16.0)
    assert vqvae.perplexity(tf.constant([0.0, 9.0, 0.0])).numpy() == pytest.approx(1.0)
    # Counts 1, 1, 2: entropy 1.5 bits.
    assert vqvae.perplexity(tf.constant([1.0, 1.0, 2.0])).numpy() == pytest.approx(2 ** 1.5)


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[-5.0, 0.0], [5.0, 0.0], [0.0, 5.0]], np.float32)
    labels = rng.integers(0, 3, 300)
    points = (centres[labels] + rng.normal(0, 0.1, (300, 2))).astype(np.float32)
    centroids, members = vqvae.kmeans(tf.constant(points), 3, 10, tf.constant([1, 2]))
    found = sorted(map(tuple, np.round(centroids.numpy())))
    assert found == sorted(map(tuple, np.round(centres)))
    assert sorted(members.numpy().tolist()) == sorted(np.bincount(labels).tolist())


def _state(model, codebook, counts, sums):
    quantizer = model.quantizer
    quantizer.codebook.assign(codebook)
    quantizer.counts.assign(counts)
    quantizer.sums.assign(sums)


def test_ema_update_against_a_numpy_reference():
    model = tiny_model("vqvae", codebook_size=3, code_dim=2, dead_code_threshold=0.0,
                       ema_decay=0.9)
    rng = np.random.default_rng(1)
    codebook = rng.normal(size=(3, 2)).astype(np.float32)
    counts = np.array([4.0, 2.0, 1.0], np.float32)
    sums = codebook * counts[:, None]
    _state(model, codebook, counts, sums)
    flat = rng.normal(size=(6, 2)).astype(np.float32)
    indices = np.array([0, 0, 1, 0, 1, 1])  # code 2 gets nothing this step
    assignment = np.eye(3, dtype=np.float32)[indices]
    batch_counts = assignment.sum(0)
    model._update_codebook(tf.constant(flat), tf.constant(assignment),
                           tf.constant(batch_counts), tf.constant(flat), tf.constant([0, 0]))
    expected_counts = 0.9 * counts + 0.1 * batch_counts
    expected_sums = 0.9 * sums + 0.1 * assignment.T @ flat
    total = expected_counts.sum()
    smoothed = (expected_counts + 1e-5) / (total + 3 * 1e-5) * total
    np.testing.assert_allclose(model.quantizer.counts.numpy(), expected_counts, rtol=1e-6)
    np.testing.assert_allclose(model.quantizer.sums.numpy(), expected_sums, rtol=1e-5)
    np.testing.assert_allclose(model.quantizer.codebook.numpy(),
                               expected_sums / smoothed[:, None], rtol=1e-5)


@pytest.mark.parametrize("update", vqvae.CODEBOOK_UPDATES)
def test_a_dead_code_restarts_at_an_encoder_output(update):
    model = tiny_model("vqvae", codebook_size=3, code_dim=2, dead_code_threshold=1.0,
                       ema_decay=0.5, codebook_update=update)
    codebook = np.array([[0.0, 0.0], [1.0, 1.0], [9.0, 9.0]], np.float32)
    counts = np.array([8.0, 8.0, 1.5], np.float32)  # code 2 falls to 0.75 unless used
    _state(model, codebook, counts, codebook * counts[:, None])
    flat = np.array([[0.1, 0.0], [0.0, 0.1], [1.0, 0.9], [1.1, 1.0]], np.float32)
    assignment = np.eye(3, dtype=np.float32)[[0, 0, 1, 1]]
    model._update_codebook(tf.constant(flat), tf.constant(assignment),
                           tf.constant(assignment.sum(0)), tf.constant(flat),
                           tf.constant([3, 4]))
    new = model.quantizer.codebook.numpy()
    assert any(np.array_equal(new[2], row) for row in flat), new[2]
    np.testing.assert_allclose(model.quantizer.counts.numpy(), [5.0, 5.0, 1.0])
    assert np.abs(new[:2] - codebook[:2]).max() < 0.5  # the live codes stay near theirs


def _digits_like(count, seed):
    """Bars and blobs in [-1, 1]: enough structure for a few train steps to show."""
    rng = np.random.default_rng(seed)
    images = np.full((count, 28, 28, 1), -1.0, np.float32)
    for image in images:
        top, left = rng.integers(2, 14, 2)
        image[top:top + 12, left:left + rng.integers(3, 12)] = 1.0
    return images


def test_training_initialises_by_kmeans_and_fills_the_codebook():
    keras.utils.set_random_seed(0)  # the networks' initial weights
    # A fast decay, so that codes the early steps leave unused are restarted within 30 steps.
    model = tiny_model("vqvae", learning_rate=3e-3, ema_decay=0.7)
    assert model.quantizer.initialized.numpy() == 0
    images = _digits_like(64, 0)
    dataset = tf.data.Dataset.from_tensor_slices({"image": images}).repeat().batch(16)
    history = model.fit(dataset, epochs=30, steps_per_epoch=1, verbose=0).history
    assert model.quantizer.initialized.numpy() == 1
    assert history["reconstruction"][-1] < 0.5 * history["reconstruction"][0]
    # The encoder's outputs move away from the k-means codes in the first steps and most codes
    # fall out of use; restarts bring them back (16 codes, 784 vectors a batch).
    assert history["codes_used"][-1] >= 0.875 and history["perplexity"][-1] > 8
    frequencies = model.code_frequencies().numpy()
    assert frequencies.sum() == pytest.approx(1.0) and frequencies.min() > 0
    metrics = model.evaluate_model(tf.data.Dataset.from_tensor_slices(
        {"image": _digits_like(40, 1)}).batch(16))
    assert metrics["num_examples"] == 40 and 0 < metrics["codes_used"] <= 1
    assert 1 <= metrics["code_perplexity"] <= 16
    assert metrics["reconstruction_psnr_db"] == pytest.approx(
        -10 * np.log10(metrics["reconstruction_mse"]), abs=3.0)
    codes = model.encode(tf.constant(images[:4]))
    assert codes.dtype == tf.int32 and codes.shape == (4, 7, 7)
    np.testing.assert_array_equal(model.reconstruct(tf.constant(images[:4])).numpy(),
                                  model.decode(codes).numpy())
