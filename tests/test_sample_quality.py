"""Tests for aigc_zoo.metrics.sample_quality and the evaluation callback, on digits."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from conftest import SMALL_SPLIT

from aigc_zoo import data, registry, request, training
from aigc_zoo.errors import UserError
from aigc_zoo.metrics import sample_quality
from aigc_zoo.models import base

NUM_SAMPLES = 200
MODEL_KEYS = {"fd", "kid", "kid_std", "is", "is_std", "precision", "recall", "density",
              "coverage", "confidence", "class_balance"}


def _tiny_run(name: str, train_split: str = "train", **changes) -> request.Run:
    config = dataclasses.replace(registry.get_model(name).tiny_config(), steps_per_epoch=3,
                                 **changes)
    return request.Run(model=name, dataset="digits", config=config, train_split=train_split)


@pytest.fixture(scope="module")
def options(digits_classifier_dir):
    return sample_quality.Options(num_samples=NUM_SAMPLES, classifier_dir=digits_classifier_dir)


@pytest.fixture(scope="module")
def evaluator(options, digits_data_dir):
    return sample_quality.SampleQuality("digits", data_dir=digits_data_dir, options=options)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, digits_data_dir):
    """A tiny `vae` and `cvae`, each trained one epoch of 3 steps (on a small split: the
    evaluator scores them against the whole train split's classifier all the same)."""
    models = {}
    for name in ("vae", "cvae"):
        workdir = str(tmp_path_factory.mktemp(name))
        models[name] = training.train(_tiny_run(name, SMALL_SPLIT), workdir=workdir,
                                      data_dir=digits_data_dir, verbose=0)
    return models


class RealDigits:
    """A perfect conditional "model": its samples are train-split digits of the asked label."""

    conditional = True
    num_classes = 10

    def __init__(self, data_dir):
        batches, _ = data.load("digits", "train[:3000]", batch_size=3000, training=False,
                               data_dir=data_dir)
        batch = next(iter(batches))
        self.images, self.labels = batch["image"].numpy(), batch["label"].numpy()

    def generate(self, num_samples, *, seed=0, labels=None):
        rng = np.random.default_rng(seed)
        picks = [rng.choice(np.flatnonzero(self.labels == label)) for label in labels]
        return tf.constant(self.images[picks])


def test_returns_every_metric_finite_with_the_real_vs_real_floor(evaluator, tiny_models):
    results = evaluator.evaluate(tiny_models["vae"], seed=0)
    assert results["num_samples"] == results["num_real"] == results["num_reference"] \
        == NUM_SAMPLES
    assert results["extractor"] == "classifier"
    assert results["extractor_info"]["test_accuracy"] >= 0.97
    assert (results["split"], results["reference_split"]) == ("test", "train")
    assert results["conditional"] is False
    for row in ("model", "real_vs_real"):
        assert set(results[row]) == MODEL_KEYS, row
        assert all(math.isfinite(value) for value in results[row].values()), results[row]
    floor, model = results["real_vs_real"], results["model"]
    # Three train steps make blurs: far from real digits, which the floor is close to.
    assert model["fd"] > 5 * floor["fd"]
    assert model["kid"] > floor["kid"] + 3 * floor["kid_std"]
    assert floor["precision"] > 0.7 and floor["recall"] > 0.7 and floor["coverage"] > 0.7
    # Ten confidently classified classes; splits of 20 images are not quite balanced, which
    # keeps the score below its bound of 10.
    assert 7.0 < floor["is"] <= 10.0
    # Real digits: the classifier is sure of them and finds every class about as often.
    assert floor["confidence"] > 0.9 and 1.0 <= floor["class_balance"] < 4.0
    for key in ("precision", "recall", "coverage", "confidence"):
        assert 0.0 <= model[key] <= 1.0
    assert set(results["seconds"]) == {"real_features", "generate", "sample_features",
                                       "metrics", "total"}
    report = sample_quality.format_report(results)
    assert "real vs real" in report and "fd" in report


@pytest.mark.slow  # three evaluations (12 s); CI runs `make test-slow` too
def test_deterministic_for_a_seed(evaluator, tiny_models, options, digits_data_dir):
    first = evaluator.evaluate(tiny_models["vae"], seed=3)
    other = evaluator.evaluate(tiny_models["vae"], seed=4)
    # A fresh evaluator extracts the real features again: the same subset, the same numbers,
    # whatever TensorFlow's global seed (a tf.data shuffle would follow it).
    tf.random.set_seed(12345)
    fresh = sample_quality.SampleQuality("digits", data_dir=digits_data_dir, options=options)
    again = fresh.evaluate(tiny_models["vae"], seed=3)
    for key in ("model", "real_vs_real"):
        assert first[key] == again[key]
    assert other["model"]["fd"] != first["model"]["fd"]
    assert other["real_vs_real"]["fd"] == first["real_vs_real"]["fd"]  # the same real subsets


def test_conditional_models_report_label_accuracy(evaluator, tiny_models, digits_data_dir):
    results = evaluator.evaluate(tiny_models["cvae"], seed=0)
    assert results["conditional"] is True
    assert set(results["model"]) == MODEL_KEYS | {"label_accuracy"}
    assert 0.0 <= results["model"]["label_accuracy"] <= 1.0
    # The floor's label accuracy is the classifier's on train digits.
    assert results["real_vs_real"]["label_accuracy"] >= 0.97

    perfect = evaluator.evaluate(RealDigits(digits_data_dir), seed=0)
    assert perfect["model"]["label_accuracy"] >= 0.97
    # Real digits score like the floor (both are train digits against test digits).
    assert perfect["model"]["fd"] < 2 * perfect["real_vs_real"]["fd"] + 0.5
    assert perfect["model"]["precision"] > 0.7


class BinaryRealDigits(RealDigits):
    """The same digits, each binarised by its own draw: a "model" of binary samples, as
    good as a binary model can be, declared as such or not."""

    config, image_shape = None, (28, 28, 1)

    def __init__(self, data_dir, declared):
        super().__init__(data_dir)
        self.declared = declared
        noise = np.random.default_rng(7).uniform(size=self.images.shape)
        self.images = np.where(noise < (self.images + 1.0) / 2.0, 1.0, -1.0).astype(np.float32)

    def knobs(self, config, image_shape):
        return base.Knobs(binary_samples=self.declared)


def test_binary_samples_are_measured_against_binarised_real_images(evaluator, digits_data_dir):
    declared = evaluator.evaluate(BinaryRealDigits(digits_data_dir, declared=True), seed=0)
    grey = evaluator.evaluate(BinaryRealDigits(digits_data_dir, declared=False), seed=0)
    assert declared["binarised_reals"] is True and grey["binarised_reals"] is False
    assert "binarised 'test' images" in sample_quality.format_report(declared)
    # Against binarised digits binary real digits score like that floor; against grey-level
    # ones they are far off, though nothing about them differs but the binarisation.
    assert declared["model"]["fd"] < 2 * declared["real_vs_real"]["fd"] + 0.5
    assert grey["model"]["fd"] > 3 * declared["model"]["fd"]
    # The binarised floor is its own (binarised train digits against binarised test digits).
    assert declared["real_vs_real"]["fd"] != grey["real_vs_real"]["fd"]


def test_binarize_reference_is_a_fixed_bernoulli_draw():
    images = np.full([4, 28, 28, 1], 0.5, np.float32)  # each pixel 1 with probability 0.75
    first = sample_quality.binarize_reference(images, 0)
    assert set(np.unique(first)) == {-1.0, 1.0} and first.dtype == np.float32
    np.testing.assert_array_equal(first, sample_quality.binarize_reference(images, 0))
    assert not np.array_equal(first, sample_quality.binarize_reference(images, 1))
    assert abs(np.mean(first == 1.0) - 0.75) < 0.03
    edges = np.stack([np.full([28, 28, 1], -1.0), np.full([28, 28, 1], 1.0)]).astype(np.float32)
    np.testing.assert_array_equal(sample_quality.binarize_reference(edges, 0), edges)


def test_generate_balances_labels_and_batches(evaluator, digits_data_dir):
    model = RealDigits(digits_data_dir)
    images, labels = evaluator.generate(model, seed=0)
    assert images.shape == (NUM_SAMPLES, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(labels), [NUM_SAMPLES // 10] * 10)


def test_compare_label_accuracy_is_the_share_of_requested_labels():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    probabilities = np.eye(4)[np.arange(40) % 4]
    labels = np.arange(40) % 4
    labels[:10] = (labels[:10] + 1) % 4  # a quarter asked for another label
    row = sample_quality.compare(real, fake, probabilities=probabilities, labels=labels)
    assert row["label_accuracy"] == 0.75
    assert row["is"] == pytest.approx(4.0)  # confident and balanced: the upper bound
    assert "label_accuracy" not in sample_quality.compare(real, fake)
    # Not the domain classifier's classes (Inception's): no confidence or class balance.
    assert "class_balance" not in row and "confidence" not in row


def test_class_statistics_are_the_mean_top_probability_and_the_largest_over_the_rarest():
    # Classes 0, 1, 2 predicted 6, 3 and 1 times; the top probabilities 0.5 and 0.9.
    predicted = np.array([0] * 6 + [1] * 3 + [2])
    probabilities = np.full((10, 3), 0.05)
    probabilities[np.arange(10), predicted] = np.where(np.arange(10) < 5, 0.5, 0.9)
    found = sample_quality.class_statistics(probabilities)
    assert found["confidence"] == pytest.approx(0.7)
    assert found["class_balance"] == 6.0
    # A class never predicted counts as one image: finite, a lower bound of the imbalance.
    assert sample_quality.class_statistics(np.eye(3)[[0, 0, 0, 1]])["class_balance"] == 3.0
    row = sample_quality.compare(np.ones((12, 2)) + np.arange(12)[:, None], np.ones((12, 2))
                                 + np.arange(12)[:, None] * 1.5, probabilities=np.eye(3)[
                                     np.arange(12) % 3], domain_classes=True)
    assert row["class_balance"] == 1.0 and row["confidence"] == 1.0


@pytest.mark.parametrize("changes, fragment", [
    ({"num_samples": 5}, "eval_samples=5"),
    ({"extractor": "vgg"}, "extractor='vgg'"),
])
def test_bad_options_are_user_errors(changes, fragment):
    with pytest.raises(UserError, match=fragment):
        dataclasses.replace(sample_quality.Options(), **changes).validate()


@pytest.mark.slow  # a run evaluated twice (20 s); CI runs `make test-slow` too
def test_callback_logs_sample_quality_every_n_epochs(tmp_path, digits_data_dir, options):
    run = _tiny_run("vae", epochs=2)
    quality = dataclasses.replace(options, num_samples=100)
    training.train(run, workdir=str(tmp_path), data_dir=digits_data_dir, verbose=0,
                eval_every_epochs=1, quality=quality)
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard" / "eval"),
                                                size_guidance={"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    for tag in ("eval/classifier/fd", "eval/classifier/kid", "eval/classifier/recall",
                "eval/classifier/real_vs_real/fd", "eval/classifier/seconds"):
        assert tag in tags, sorted(tags)
    fd = events.Tensors("eval/classifier/fd")
    assert [event.step for event in fd] == [3, 6]
    # One event file: TensorBoard reads files in name order, which need not be step order.
    assert len(list((tmp_path / "tensorboard" / "eval").glob("events.out.tfevents.*"))) == 1
    assert all(np.isfinite(tf.make_ndarray(event.tensor_proto)) for event in fd)
