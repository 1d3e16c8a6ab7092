"""The domain classifier: a small CNN trained on a dataset's labels, for offline sample quality.

Inception-v3 features are the standard for FID, but they need downloaded weights and see a
28x28 digit blown up to 299x299. A classifier trained on the dataset itself works offline and
at the native size: its penultimate layer (`FEATURE_DIM` units) gives the features for Fréchet
and kernel distances, precision/recall and density/coverage; its softmax gives the
Inception-style score and, for conditional models, whether a sample shows the requested label.

The network is trained on the run's train split through `aigc_zoo.data.load` (the same
pipeline as the models), scored on the eval split, and cached on disk:

    <cache>/<dataset>-<H>x<W>x<C>-v<VERSION>-<key hash>/weights.weights.h5, info.json

`<cache>` is `--classifier_dir` when given, else `$AIGC_ZOO_CACHE/classifiers`, else
`~/.cache/aigc_zoo/classifiers`. `info.json` holds the test accuracy that evaluations report
and the SHA-256 of the weights file. Weights are Keras weight files (HDF5 arrays, nothing
unpickled). Bump `VERSION` whenever the network or its training changes, so stale weights are
never loaded. A damaged cache (`_read_cache` checks it) is deleted and trained again, with one
warning line: it holds nothing that training cannot remake, and an evaluation that fixes
itself beats an error the user must act on (the price is the training time, once).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from aigc_zoo import data, files
from aigc_zoo.errors import UserError

VERSION = 1
FEATURE_DIM = 128
EPOCHS = 1
MIN_TRAIN_STEPS = 400  # small splits train more epochs, to at least this many steps
BATCH_SIZE = 128
LEARNING_RATE = 2e-3
SEED = 0
INFO, WEIGHTS = "info.json", "weights.weights.h5"  # the files of a cached classifier
_PREDICT_BATCH = 1000
_MOMENT_EXAMPLES = 10_000


def default_cache_dir() -> str:
    """`$AIGC_ZOO_CACHE/classifiers`, or `~/.cache/aigc_zoo/classifiers`."""
    root = os.environ.get("AIGC_ZOO_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "aigc_zoo")
    return os.path.join(root, "classifiers")


def build_network(image_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Two conv + max-pool stages, a `FEATURE_DIM`-unit layer (the features), ReLU, the logits.

    The features are taken before the ReLU: after it, about half the units were zero for
    every digit (measured: 72 of 128 with this training), which wastes feature dimensions.
    """
    inputs = keras.Input(image_shape, name="image")
    x = inputs
    for filters in (32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    features = keras.layers.Dense(FEATURE_DIM, name="features")(x)
    x = keras.layers.Dropout(0.3)(keras.layers.ReLU()(features))
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name="domain_classifier")


class DomainClassifier:
    """A trained domain classifier as a feature extractor: `extractor(images)`.

    Args:
        network: the trained network (`build_network`).
        info: what `info.json` holds (dataset, splits, test accuracy, ...).
        path: the folder its weights are in.
    """

    name = "classifier"

    def __init__(self, network: keras.Model, info: dict[str, Any], path: str):
        self.network = network
        self.info = info
        self.path = path
        self.num_classes = int(info["num_classes"])
        self.feature_dim = FEATURE_DIM
        outputs = [network.get_layer("features").output, keras.layers.Softmax()(network.output)]
        self._extract = tf.function(keras.Model(network.input, outputs), reduce_retracing=True)
        self._feature_mean = np.asarray(info["feature_mean"], np.float32)
        self._feature_std = np.asarray(info["feature_std"], np.float32)

    @property
    def test_accuracy(self) -> float:
        return float(self.info["test_accuracy"])

    def __call__(self, images: np.ndarray | tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Features [N, FEATURE_DIM] and class probabilities [N, classes] of images in [-1, 1].

        Features are standardised per unit with the train split's mean and standard deviation
        (stored with the weights), so that they are about unit scale, as KID's cubic kernel
        (x.y / D + 1)^3 expects: raw, the kernel's cube made KID's spread over subsets several
        times its mean on real-vs-real digits.
        """
        features, probabilities = self.raw(images)
        return (features - self._feature_mean) / self._feature_std, probabilities

    def raw(self, images: np.ndarray | tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Unstandardised features and class probabilities."""
        features, probabilities = [], []
        for start in range(0, len(images), _PREDICT_BATCH):
            batch = tf.convert_to_tensor(images[start:start + _PREDICT_BATCH], tf.float32)
            f, p = self._extract(batch, training=False)
            features.append(f.numpy())
            probabilities.append(p.numpy())
        return np.concatenate(features), np.concatenate(probabilities)

    def describe(self) -> dict[str, Any]:
        """What results report about the extractor."""
        return {"name": self.name, "feature_dim": self.feature_dim, "path": self.path,
                "test_accuracy": self.test_accuracy, "test_split": self.info["test_split"],
                "train_split": self.info["train_split"], "version": VERSION}


def cache_path(cache_dir: str, dataset: str, image_shape: tuple[int, ...], train_split: str,
               test_split: str, *, kind: str = "", version: int = VERSION) -> str:
    """The folder of the classifier for this dataset, image shape, splits and `VERSION`.

    `kind` and `version` name other networks cached beside it the same way (the attribute
    probes of `metrics.attributes`: kind "attributes"); the domain classifier has no kind.
    """
    shape = "x".join(str(d) for d in image_shape)
    parts = [os.path.abspath(dataset) if ":" in dataset else dataset, shape,
             train_split, test_split, version]
    key = json.dumps(parts + [kind] if kind else parts)
    readable = re.sub(r"[^A-Za-z0-9_.]+", "_", dataset.rsplit("/", 1)[-1]).strip("_")
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    return os.path.join(cache_dir, f"{readable}-{shape}-{kind + '-' if kind else ''}"
                                   f"v{version}-{digest}")


def load(dataset: str, *, train_split: str = "train", test_split: str = "test",
         data_dir: str | None = None, image_size: int | None = None,
         cache_dir: str | None = None, verbose: bool = True) -> DomainClassifier:
    """The domain classifier of `dataset`: from the cache, or trained now and cached.

    Args:
        dataset: a dataset name as for `data.load`; it must have labels.
        train_split / test_split: what the classifier trains on and is scored on.
        data_dir: TFDS data folder.
        image_size: the run's image size (None: the dataset's own).
        cache_dir: folder of cached classifiers (default: `default_cache_dir()`).
        verbose: print a line when training and when done.
    """
    _, info = data.open_split(dataset, train_split, data_dir=data_dir, image_size=image_size)
    if not info.num_classes:
        raise UserError(f"dataset {dataset!r} has no labels, so it has no domain classifier; "
                        "evaluate with --extractor=inception (with --inception_weights=PATH "
                        "offline), or skip sample quality with --eval_samples=0")
    cache_dir = cache_dir or default_cache_dir()
    path = cache_path(cache_dir, dataset, info.image_shape, train_split, test_split)

    def make() -> DomainClassifier:
        if verbose:
            print(f"training the domain classifier of {dataset} on its {train_split!r} split "
                  f"(once; cached in {path})", flush=True)
        network, saved = train(dataset, train_split=train_split, test_split=test_split,
                               data_dir=data_dir, image_size=image_size)
        save(path, network, saved)
        if verbose:
            print(f"domain classifier: test accuracy {saved['test_accuracy']:.4f} on "
                  f"{saved['test_examples']} {test_split!r} images, trained in "
                  f"{saved['train_seconds']:.0f} s", flush=True)
        return DomainClassifier(network, saved, path)

    return cached(path, lambda: _read_cache(path, info.image_shape, info.num_classes), make,
                  what="domain classifier")


def cached(path: str, read: Callable[[], tuple[Any, str | None]], make: Callable[[], Any], *,
           what: str) -> Any:
    """What `read()` gives of the cache folder `path`, or when it is missing or damaged (then
    deleted with one warning line naming `what`), what `make()` trains and saves there.

    `read` returns the cached object, or None and why the folder is damaged.
    """
    if os.path.exists(path):
        value, problem = read()
        if value is not None:
            return value
        _discard(path, problem, what)
    return make()


def _read_cache(path: str, image_shape: tuple[int, ...], num_classes: int
                ) -> tuple[DomainClassifier | None, str | None]:
    """The classifier cached in `path`, or None and why the cache is damaged (`read_files`;
    `info.json` must be of this `VERSION`, shape and class count with the fields evaluations
    read)."""
    saved, problem = read_files(path, lambda saved: _info_problem(saved, image_shape,
                                                                  num_classes))
    if saved is None:
        return None, problem
    network = build_network(image_shape, num_classes)
    problem = load_weights(network, path)
    return (None, problem) if problem else (DomainClassifier(network, saved, path), None)


def read_files(path: str, info_problem: Callable[[Any], str | None]
               ) -> tuple[dict[str, Any] | None, str | None]:
    """The `info.json` of the cache folder `path`, or None and why the folder is damaged: it
    must parse, `info_problem` must find nothing wrong with it, and the weights file must match
    the SHA-256 recorded there (HDF5 has no checksums of its own, so a damaged array would
    otherwise load; older caches have no digest)."""
    weights = os.path.join(path, WEIGHTS)
    try:
        saved = files.read_json(os.path.join(path, INFO))
        with open(weights, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
    except UserError as error:  # what files.read_json says of a file it cannot parse
        return None, str(error)[:160]
    except OSError as error:
        return None, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    problem = info_problem(saved)
    # Caches written before the digest was recorded have none; their weights must still load.
    if problem is None and saved.get("weights_sha256", digest) != digest:
        problem = f"{WEIGHTS} does not match the SHA-256 in {INFO}"
    return (None, problem) if problem is not None else (saved, None)


def load_weights(network: keras.Model, path: str) -> str | None:
    """Load the cache folder's weights into `network`; None, or why they do not load."""
    try:
        network.load_weights(os.path.join(path, WEIGHTS))
    except (OSError, RuntimeError, ValueError) as error:  # h5py's errors for damaged files
        return f"{WEIGHTS}: {str(error).splitlines()[0][:120]}"
    return None


def _info_problem(saved: Any, image_shape: tuple[int, ...], num_classes: int) -> str | None:
    """What is wrong with a cache's `info.json` values, or None."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not isinstance(saved, dict):
        return f"{INFO} is not a JSON object"
    expected = {"version": VERSION, "num_classes": num_classes,
                "image_shape": list(image_shape)}
    for name, value in expected.items():
        if saved.get(name) != value:
            return f"{INFO} has {name}={saved.get(name)!r:.40}, not {value!r}"
    for name in ("feature_mean", "feature_std"):
        values = saved.get(name)
        if not (isinstance(values, list) and len(values) == FEATURE_DIM
                and all(number(v) and math.isfinite(v) for v in values)):
            return f"{INFO} has no {FEATURE_DIM} finite numbers in {name!r}"
    if not all(v > 0 for v in saved["feature_std"]) or not number(saved.get("test_accuracy")):
        return f"{INFO} has a 'feature_std' <= 0 or no 'test_accuracy'"
    if not all(isinstance(saved.get(name), str) for name in ("train_split", "test_split")):
        return f"{INFO} lacks 'train_split' or 'test_split'"
    return None


def _discard(path: str, problem: str | None, what: str) -> None:
    """Delete a damaged cache folder (it is retrained next), with one warning line; a
    `UserError` naming it when it cannot be deleted."""
    try:
        shutil.rmtree(path)
    except OSError as error:
        raise UserError(f"the cached {what} {path} is damaged ({problem}) and "
                        f"cannot be deleted ({error.strerror}): delete {path}") from None
    print(f"warning: the cached {what} {path} was damaged ({problem}); deleted, "
          "training it again", file=sys.stderr, flush=True)


def train(dataset: str, *, train_split: str = "train", test_split: str = "test",
          data_dir: str | None = None, image_size: int | None = None,
          epochs: int = EPOCHS, seed: int = SEED) -> tuple[keras.Model, dict[str, Any]]:
    """Train the classifier (Adam, cross-entropy) and score it on `test_split`.

    Trains `epochs` passes over `train_split`, or more when that is under `MIN_TRAIN_STEPS`
    steps. Returns the network and its `info.json` dict.
    """
    start = time.perf_counter()
    train_data, info = data.load(dataset, train_split, batch_size=BATCH_SIZE, training=True,
                                 seed=seed, data_dir=data_dir, image_size=image_size)
    if not info.num_classes:
        raise UserError(f"dataset {dataset!r} has no labels to train a domain classifier on")
    keras.utils.set_random_seed(seed)
    network = build_network(info.image_shape, info.num_classes)
    pairs = train_data.map(lambda batch: (batch["image"], batch["label"]))
    epochs = fit(network, pairs, num_examples=info.num_examples, epochs=epochs,
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train_seconds = time.perf_counter() - start
    accuracy, count = _accuracy(network, dataset, test_split, data_dir, image_size)
    mean, std = _feature_moments(network, dataset, train_split, data_dir, image_size)
    return network, {
        "dataset": dataset, "train_split": train_split, "test_split": test_split,
        "image_shape": list(info.image_shape), "num_classes": info.num_classes,
        "version": VERSION, "epochs": epochs, "seed": seed,
        "train_examples": info.num_examples, "test_examples": count,
        "test_accuracy": accuracy, "train_seconds": train_seconds,
        "feature_mean": mean, "feature_std": std,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorflow": tf.__version__, "keras": keras.__version__,
    }


def fit(network: keras.Model, pairs: tf.data.Dataset, *, num_examples: int, epochs: int,
        loss: Any, min_steps: int | None = None) -> int:
    """Train `network` on (inputs, targets) batches of `BATCH_SIZE` (endless) with Adam and a
    cosine-decayed `LEARNING_RATE`: `epochs` passes over `num_examples`, or more when that is
    under `min_steps` (default `MIN_TRAIN_STEPS`) steps. `loss` as for `compile` (one per
    output for a network of several). Returns the epochs trained."""
    steps = max(1, num_examples // BATCH_SIZE)
    epochs = max(epochs, math.ceil((MIN_TRAIN_STEPS if min_steps is None else min_steps)
                                   / steps))
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps=epochs * steps)
    network.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, jit_compile=False)
    network.fit(pairs, epochs=epochs, steps_per_epoch=steps, shuffle=False, verbose=0)
    return epochs


def _accuracy(network: keras.Model, dataset: str, split: str, data_dir: str | None,
              image_size: int | None) -> tuple[float, int]:
    batches, _ = data.load(dataset, split, batch_size=_PREDICT_BATCH, training=False,
                           data_dir=data_dir, image_size=image_size)
    predict = tf.function(lambda images: tf.argmax(network(images, training=False), axis=-1,
                                                   output_type=tf.int32),
                          reduce_retracing=True)
    correct = count = 0
    for batch in batches:
        correct += int(tf.reduce_sum(tf.cast(predict(batch["image"]) == batch["label"], tf.int32)))
        count += int(batch["label"].shape[0])
    return correct / count, count


def _feature_moments(network: keras.Model, dataset: str, split: str, data_dir: str | None,
                     image_size: int | None) -> tuple[list[float], list[float]]:
    """Per-unit mean and standard deviation of the features over (up to) 10,000 random images."""
    batches, info = data.load(dataset, split, batch_size=BATCH_SIZE, training=True,
                              seed=SEED, data_dir=data_dir, image_size=image_size)
    batches = batches.take(max(1, min(info.num_examples, _MOMENT_EXAMPLES) // BATCH_SIZE))
    features_of = tf.function(keras.Model(network.input, network.get_layer("features").output),
                              reduce_retracing=True)
    total = np.zeros(FEATURE_DIM)
    squares = np.zeros(FEATURE_DIM)
    count = 0
    for batch in batches:
        features = features_of(batch["image"], training=False).numpy().astype(np.float64)
        total += features.sum(axis=0)
        squares += (features ** 2).sum(axis=0)
        count += len(features)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return mean.tolist(), np.maximum(std, 1e-6).tolist()


def save(path: str, network: keras.Model, info: dict[str, Any]) -> None:
    """Write weights and info into a temporary folder, then rename it into place."""
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        temporary = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    except OSError as error:
        raise UserError(f"cannot write the classifier cache {parent}: {error.strerror}; "
                        "choose another with --classifier_dir or $AIGC_ZOO_CACHE") from None
    weights = os.path.join(temporary, WEIGHTS)
    network.save_weights(weights)
    with open(weights, "rb") as handle:
        info = {**info, "weights_sha256": hashlib.sha256(handle.read()).hexdigest()}
    with open(os.path.join(temporary, INFO), "w") as handle:
        json.dump(info, handle, indent=2, sort_keys=True)
        handle.write("\n")
    try:
        os.replace(temporary, path)
    except OSError:  # another process cached the same classifier first: keep theirs
        shutil.rmtree(temporary, ignore_errors=True)
