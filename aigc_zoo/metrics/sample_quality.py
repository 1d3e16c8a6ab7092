"""Sample quality of a generative model: its samples against real images, next to real vs real.

For a model and a seed, `SampleQuality.evaluate`:

1. draws `num_samples` samples with `model.generate` in batches (a conditional model gets
   balanced labels 0, 1, ..., K-1, 0, 1, ...);
2. extracts features (and class probabilities) of each batch as it is drawn, with the
   extractor: the domain classifier (`classifier.py`, offline, native resolution) or
   Inception-v3 (`inception.py`); only features are held, never all the samples;
3. compares the samples with a fixed random subset of the eval split (up to `num_samples`
   images; the same for every seed, as precomputed FID statistics are): Fréchet distance
   (FID with Inception), KID (mean and std over subsets), the Inception-style score (mean and
   std over 10 splits), precision and recall (k = 3), density and coverage (k = 5), and for
   conditional models the share of samples the classifier assigns to their requested label;
   with the domain classifier also its mean confidence (top class probability) and the class
   balance (the most frequent predicted class's count over the rarest's);
4. computes the same numbers for the real-vs-real floor: as many train-split images (again a
   fixed random subset) in place of the samples. A model cannot be expected to beat its
   floor; at equal sample counts the two rows share the estimators' finite-sample bias.

A model whose samples are binary (`Knobs.binary_samples`: a PixelCNN's Bernoulli pixels) is
compared with the same real images binarised once by a fixed draw (each pixel 1 with
probability (x + 1) / 2, as the likelihood models binarise), on both rows: binary samples
against grey-level digits would measure the binarisation, not the model.

Real features are extracted once per `SampleQuality` (and per kind, grey or binarised) and
reused (the training callback evaluates often); the seed changes only the samples and KID's
subsets.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow as tf

from aigc_zoo import data, files
from aigc_zoo.errors import UserError
from aigc_zoo.metrics import distances

EXTRACTORS = ("classifier", "inception")
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
IS_SPLITS = 10
PRECISION_RECALL_K = 3
DENSITY_COVERAGE_K = 5
REFERENCE_SEED = 0  # picks the real subsets; fixed, so every evaluation sees the same ones
# The keys of a results row, in the order reports show them.
ROW_KEYS = ("fd", "kid", "kid_std", "is", "is_std", "precision", "recall", "density",
            "coverage", "confidence", "class_balance", "label_accuracy")


@dataclasses.dataclass(frozen=True)
class Batch:
    """Samples as `SampleQuality.batches` draws them: `model.generate(len(images), seed=seed,
    **inputs)` (a conditional model's `labels`, a text model's `tokens`), in `seconds`."""

    seed: int
    inputs: dict[str, np.ndarray]
    images: np.ndarray
    seconds: float


@dataclasses.dataclass(frozen=True)
class Options:
    """How to measure sample quality.

    Args:
        num_samples: samples to draw (and the most real images per split to compare with);
            None: sized by the model's sampling cost (`sized`).
        extractor: "classifier" or "inception".
        inception_weights: a local Inception-v3 weights file; None downloads ("imagenet").
        classifier_dir: folder of cached domain classifiers (None: the default cache).
        batch_size: images per `generate` call and per data batch.
    """

    num_samples: int | None = None
    extractor: str = "classifier"
    inception_weights: str | None = None
    classifier_dir: str | None = None
    batch_size: int = 500
    num_samples_note: str = ""  # why `num_samples` is what it is, when `sized` chose it

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        files.check_folder("classifier_dir", self.classifier_dir, writable=True)
        files.check_readable_file("inception_weights", self.inception_weights)
        least = max(PRECISION_RECALL_K, DENSITY_COVERAGE_K) + 1 + IS_SPLITS
        if self.num_samples is not None and self.num_samples < least:
            raise UserError(f"bad value eval_samples={self.num_samples}: expected at least "
                            f"{least} (or 0 to skip sample quality)")
        if self.extractor not in EXTRACTORS:
            raise UserError(f"bad value extractor={self.extractor!r}: expected one of "
                            f"{', '.join(EXTRACTORS)}")
        if self.batch_size < 1:
            raise UserError(f"bad value batch_size={self.batch_size}: expected >= 1")


    def sized(self, sampling_cost: float) -> "Options":
        """These options with `num_samples` chosen for a model whose sample costs
        `sampling_cost` network evaluations, when they leave it None: `MAX_SAMPLES` for a
        one-pass generator, fewer (down to `MIN_DEFAULT_SAMPLES`) for a slow sampler, so that a
        default evaluation costs at most about `SAMPLING_BUDGET` network evaluations."""
        if self.num_samples is not None:
            return self
        count = int(min(MAX_SAMPLES, max(MIN_DEFAULT_SAMPLES,
                                         SAMPLING_BUDGET // max(sampling_cost, 1))))
        note = (f"default for a sampling cost of {sampling_cost:g} network evaluations per "
                f"sample: min({MAX_SAMPLES}, {SAMPLING_BUDGET} / cost), at least "
                f"{MIN_DEFAULT_SAMPLES}; set --eval_samples to choose")
        return dataclasses.replace(self, num_samples=count, num_samples_note=note)


# The default sample count (`Options.sized`): 10,000 for generators of one network pass, fewer
# for samplers of many, whose 10,000 samples would take hours on a CPU; FD and KID are biased
# upwards at small counts, which the note in the results says.
MAX_SAMPLES = 10_000
MIN_DEFAULT_SAMPLES = 1_000
SAMPLING_BUDGET = 100_000
DEFAULT_OPTIONS = Options()


def make_extractor(options: Options, *, dataset: str, train_split: str, eval_split: str,
                   data_dir: str | None = None, image_size: int | None = None):
    """The feature extractor `options` names, loaded (or trained) now."""
    if options.extractor == "inception":
        from aigc_zoo.metrics import inception
        return inception.InceptionFeatures(options.inception_weights or "imagenet")
    from aigc_zoo.metrics import classifier
    return classifier.load(dataset, train_split=train_split, test_split=eval_split,
                           data_dir=data_dir, image_size=image_size,
                           cache_dir=options.classifier_dir)


class SampleQuality:
    """Evaluates models of one dataset against its real images.

    Args:
        dataset, train_split, eval_split, data_dir, image_size: the run's data, as for
            `data.load`.
        options: an `Options`.
        extractor: a ready extractor (default: `make_extractor(options, ...)`).
    """

    def __init__(self, dataset: str, *, train_split: str = "train", eval_split: str = "test",
                 data_dir: str | None = None, image_size: int | None = None,
                 options: Options = DEFAULT_OPTIONS, extractor: Any = None):
        # Options left unsized (`num_samples` None) get a one-pass generator's count.
        self.options = options = options.sized(1.0)
        self._data = {"name": dataset, "data_dir": data_dir, "image_size": image_size}
        self.splits = {"eval": eval_split, "train": train_split}
        start = time.perf_counter()
        self.extractor = extractor or make_extractor(
            options, dataset=dataset, train_split=train_split, eval_split=eval_split,
            data_dir=data_dir, image_size=image_size)
        self.extractor_seconds = time.perf_counter() - start
        self._real: dict[bool, dict[str, dict[str, np.ndarray]]] = {}
        # A text-conditional model's prompts (token rows, cycled), which the evaluation sets
        # from the eval split's captions (`metrics.attributes.PromptAgreement.tokens`).
        self.prompts: np.ndarray | None = None

    def real_features(self, binary: bool = False) -> dict[str, dict[str, np.ndarray]]:
        """Features, probabilities and labels of up to `num_samples` images of each split
        (`binary`: of the images binarised by `binarize_reference`)."""
        if binary not in self._real:
            self._real[binary] = {which: self._split_features(split, binary)
                                  for which, split in self.splits.items()}
        return self._real[binary]

    def _split_features(self, split: str, binary: bool) -> dict[str, np.ndarray]:
        opened, info = data.open_split(self._data["name"], split,
                                       data_dir=self._data["data_dir"],
                                       image_size=self._data["image_size"])
        count = min(self.options.num_samples, info.num_examples)
        # A random subset (a split's files can be in class order: image folders are), chosen
        # by numpy from REFERENCE_SEED alone: a tf.data shuffle's order would also follow
        # TensorFlow's global seed, so two evaluations in differently seeded processes would
        # compare against different real images.
        if count < info.num_examples:
            chosen = np.zeros([info.num_examples], bool)
            chosen[np.random.default_rng(REFERENCE_SEED).choice(info.num_examples, count,
                                                                replace=False)] = True
            chosen = tf.constant(chosen)
            opened = opened.enumerate().filter(lambda i, _: chosen[i]).map(lambda _, ex: ex)
        batches = data.batches(opened, info, split=split,
                               batch_size=min(self.options.batch_size, count), training=False)
        features, probabilities, labels, held = [], [], [], 0
        for index, batch in enumerate(batches):  # batch by batch: never all images held
            images = batch["image"].numpy()[:count - held]
            held += len(images)
            if binary:
                images = binarize_reference(images, index)
            batch_features, batch_probabilities = self.extractor(images)
            features.append(batch_features)
            probabilities.append(batch_probabilities)
            if "label" in batch:
                labels.append(batch["label"].numpy()[:len(images)])
            if held >= count:
                break
        return {"features": np.concatenate(features),
                "probabilities": (None if probabilities[0] is None
                                  else np.concatenate(probabilities)),
                "labels": np.concatenate(labels) if labels else None}

    def batches(self, model: Any, seed: int) -> Iterator[Batch]:
        """`num_samples` samples, `batch_size` at a time: each `Batch` with the seed and the
        conditioning it was drawn with (a conditional model's requested labels, balanced
        0, 1, ..., K-1, 0, ...; with `prompts` set, their token rows, cycled)."""
        count, batch = self.options.num_samples, self.options.batch_size
        labels = None
        if model.conditional:
            labels = (np.arange(count) % model.num_classes).astype(np.int32)
        # One independent seed per batch, so that batch sizes never overlap two seeds' draws.
        batch_seeds = np.random.SeedSequence(seed).generate_state((count + batch - 1) // batch)
        for index, start in enumerate(range(0, count, batch)):
            size = min(batch, count - start)
            inputs = {} if labels is None else {"labels": labels[start:start + size]}
            if self.prompts is not None:
                inputs["tokens"] = self.prompts[np.arange(start, start + size)
                                                % len(self.prompts)]
            batch_seed, start_time = int(batch_seeds[index] >> 1), time.perf_counter()
            images = np.asarray(model.generate(size, seed=batch_seed, **inputs))
            yield Batch(batch_seed, inputs, images, time.perf_counter() - start_time)

    def generate(self, model: Any, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """All `num_samples` samples [N, H, W, C] at once and their requested labels (None:
        unconditional); `evaluate` holds only their features."""
        drawn = list(self.batches(model, seed))
        labels = [batch.inputs["labels"] for batch in drawn if "labels" in batch.inputs]
        return (np.concatenate([batch.images for batch in drawn]),
                np.concatenate(labels) if labels else None)

    def sample_features(self, model: Any, seed: int,
                        observe: Callable[[Batch], None] | None = None,
                        seconds: dict[str, float] | None = None
                        ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Features, class probabilities and requested labels (None: unconditional) of the
        samples of `batches`, extracted batch by batch so that no more than a batch of images
        is held; `observe` sees each batch first (a second measure of the same samples).
        `seconds` gets the time spent drawing ("generate") and extracting ("sample_features")."""
        features, probabilities, labels = [], [], []
        seconds = {} if seconds is None else seconds
        seconds.update(generate=0.0, sample_features=0.0)
        for batch in self.batches(model, seed):
            seconds["generate"] += batch.seconds
            if observe is not None:
                observe(batch)
            start = time.perf_counter()
            batch_features, batch_probabilities = self.extractor(batch.images)
            seconds["sample_features"] += time.perf_counter() - start
            features.append(batch_features)
            probabilities.append(batch_probabilities)
            if "labels" in batch.inputs:
                labels.append(batch.inputs["labels"])
        return (np.concatenate(features),
                None if probabilities[0] is None else np.concatenate(probabilities),
                np.concatenate(labels) if labels else None)

    def evaluate(self, model: Any, *, seed: int = 0,
                 observe: Callable[[Batch], None] | None = None) -> dict[str, Any]:
        """Sample-quality results of `model` for `seed` (see the module docstring); `observe`
        as for `sample_features`."""
        seconds = {}
        start = time.perf_counter()
        binary = binary_samples(model)
        real = self.real_features(binary)
        seconds["real_features"] = time.perf_counter() - start
        features, probabilities, labels = self.sample_features(model, seed, observe, seconds)
        start = time.perf_counter()
        reference = real["eval"]["features"]
        # Inception's classes are ImageNet's: their balance and confidence say nothing here.
        domain = self.options.extractor == "classifier"
        model_row = compare(reference, features, probabilities=probabilities,
                            labels=labels, seed=seed, domain_classes=domain)
        floor = compare(reference, real["train"]["features"],
                        probabilities=real["train"]["probabilities"],
                        labels=real["train"]["labels"] if labels is not None else None,
                        seed=seed, domain_classes=domain)
        seconds["metrics"] = time.perf_counter() - start
        seconds["total"] = sum(seconds.values())
        describe = self.extractor.describe()
        return {
            "extractor": describe["name"], "extractor_info": describe,
            "num_samples": len(features), "num_real": len(reference),
            **({"num_samples_note": self.options.num_samples_note}
               if self.options.num_samples_note else {}),
            "num_reference": len(real["train"]["features"]),
            "split": self.splits["eval"], "reference_split": self.splits["train"],
            "seed": seed, "conditional": labels is not None, "binarised_reals": binary,
            "model": model_row, "real_vs_real": floor, "seconds": seconds,
        }


def binary_samples(model: Any) -> bool:
    """Whether `model` declares binary samples (`Knobs.binary_samples`); False for anything
    without knobs (a recipe of experiments/baselines)."""
    knobs = getattr(model, "knobs", None)
    return bool(knobs and knobs(model.config, model.image_shape).binary_samples)


def binarize_reference(images: np.ndarray, index: int) -> np.ndarray:
    """Real images in [-1, 1] as pixels in {-1, 1}, each 1 with probability (x + 1) / 2, by
    a draw fixed by REFERENCE_SEED and the batch's `index` (the same for every evaluation)."""
    noise = np.random.default_rng([REFERENCE_SEED, index]).uniform(size=images.shape)
    return np.where(noise < (images + 1.0) / 2.0, 1.0, -1.0).astype(images.dtype)


def compare(real: np.ndarray, fake: np.ndarray, *, probabilities: np.ndarray | None = None,
            labels: np.ndarray | None = None, seed: int = 0,
            domain_classes: bool = False) -> dict[str, float]:
    """Every metric of `fake` features against `real` ones (keys: a subset of `ROW_KEYS`).

    Args:
        real, fake: [N, D] and [M, D] features.
        probabilities: [M, K] class probabilities of the fake set (score; label accuracy).
        labels: [M] labels each fake image should show (conditional models).
        seed: seeds KID's subsets.
        domain_classes: the probabilities are over the dataset's own classes (the domain
            classifier's): add `confidence` and `class_balance` (`class_statistics`).
    """
    row = {"fd": distances.frechet_distance_from_features(real, fake)}
    subset_size = min(KID_SUBSET_SIZE, len(real), len(fake))
    row["kid"], row["kid_std"] = distances.kernel_distance(
        real, fake, num_subsets=KID_SUBSETS, subset_size=subset_size, seed=seed)
    if probabilities is not None:
        row["is"], row["is_std"] = distances.inception_score(probabilities, num_splits=IS_SPLITS)
    row.update(distances.precision_recall(real, fake, k=PRECISION_RECALL_K))
    row.update(distances.density_coverage(real, fake, k=DENSITY_COVERAGE_K))
    if labels is not None and probabilities is not None:
        row["label_accuracy"] = float(np.mean(np.argmax(probabilities, axis=1) == labels))
    if domain_classes and probabilities is not None:
        row.update(class_statistics(probabilities))
    return row


def class_statistics(probabilities: np.ndarray) -> dict[str, float]:
    """`confidence`: the mean top class probability (a malformed digit gets a hesitant one);
    `class_balance`: the count of the most frequent predicted class over the rarest's, 1 when
    balanced. A class never predicted counts as one image, so that the ratio stays a finite
    number (then a lower bound of the imbalance) in JSON and TensorBoard."""
    counts = np.bincount(np.argmax(probabilities, axis=1), minlength=probabilities.shape[1])
    return {"confidence": float(np.mean(np.max(probabilities, axis=1))),
            "class_balance": float(counts.max() / max(counts.min(), 1))}


def scalars(results: dict[str, Any]) -> dict[str, float]:
    """Flat TensorBoard scalars: `<extractor>/<metric>` and `<extractor>/real_vs_real/<metric>`."""
    name = results["extractor"]
    values = {f"{name}/{key}": value for key, value in results["model"].items()}
    values.update({f"{name}/real_vs_real/{key}": value
                   for key, value in results["real_vs_real"].items()})
    values[f"{name}/seconds"] = results["seconds"]["total"]
    return values


def format_report(results: dict[str, Any]) -> str:
    """A small text table: each metric for the model and for the real-vs-real floor."""
    info = results["extractor_info"]
    header = (f"sample quality: {results['num_samples']} samples vs {results['num_real']} "
              f"{'binarised ' if results.get('binarised_reals') else ''}"
              f"{results['split']!r} images ({info['name']} features, {info['feature_dim']}-D")
    if "test_accuracy" in info:
        header += f", classifier test accuracy {info['test_accuracy']:.4f}"
    lines = [header + f"; {results['seconds']['total']:.1f} s)",
             f"  {'metric':<16}{'model':>12}{'real vs real':>14}"]
    for key in ROW_KEYS:
        if key in results["model"]:
            floor = results["real_vs_real"].get(key)
            lines.append(f"  {key:<16}{results['model'][key]:>12.4f}"
                         + (f"{floor:>14.4f}" if floor is not None else ""))
    return "\n".join(lines)
