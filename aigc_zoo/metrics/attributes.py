"""Prompt agreement: does a text-conditional model draw what its prompt says?

The captioned embedded datasets know exactly what they drew, as features beside each caption
(`digits`: the digit and its slant bin; `shapes`: each object's shape, colour, size and
position). An *attribute probe* reads every one of them back from an image: the domain
classifier's kind of small CNN (two conv + max-pool stages, a 128-unit layer) with one softmax
head per attribute; for `shapes` one head per attribute and object slot, the second slot's
heads with a class "none" (no second object), the objects of a pair in a fixed order
(`canonical`: a caption may name either first). It is trained once on the real train split, scored
on the real test split and cached beside the domain classifiers, through the same pieces
(`classifier.cached`, `read_files`, `load_weights`, `fit`, `save`):

    <cache>/<dataset>-<H>x<W>x<C>-attributes-v<PROBE_VERSION>-<key hash>/

`PromptAgreement.evaluate` draws one sample per eval-split caption (the first `num_samples`;
`model.generate(n, seed=..., tokens=tokenizer.encode(captions))`), reads the samples'
attributes with the probe and compares them with the attributes *of that example* (its
features, not a parse of the caption, so the comparison is exact): the share of samples whose
attributes all match, and per attribute, next to the probe's own accuracy on real test images
(a ceiling: a probe error on a good sample counts as a miss). The same again over the eval
captions that contain a phrase of `config.held_out_combinations` (phrases the training
captions were kept free of: compositional generalisation). For `shapes`, one-object and
two-object captions are also reported apart.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import time
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from aigc_zoo import data, text
from aigc_zoo.errors import UserError
from aigc_zoo.metrics import classifier

PROBE_VERSION = 1
KIND = "attributes"  # the cache folder's kind (`classifier.cache_path`)
EPOCHS = 1
# Steps of `classifier.BATCH_SIZE` at the least: more than the domain classifier's 400, since
# slant and the second object's attributes are harder to read than the digit.
MIN_TRAIN_STEPS = 3000
SEED = 0
_PREDICT_BATCH = 1000
ALL = "all"  # the group of every example
ONE, TWO = "one object", "two objects"  # `shapes`' groups


@dataclasses.dataclass(frozen=True)
class Attribute:
    """One probe head: `name`, its class words, and the dataset feature it reads (`slot`: which
    object of a per-object feature; the second object's classes start with "none")."""

    name: str
    classes: tuple[str, ...]
    feature: str
    slot: int | None = None

    def targets(self, values: np.ndarray) -> np.ndarray:
        """Class indices of a batch of the feature's values."""
        values = np.asarray(values)
        if self.slot is None:
            return values.astype(np.int32)
        # The second object's -1 (no object) is class 0, "none".
        return (values[:, self.slot] + (1 if self.slot else 0)).astype(np.int32)


def dataset_attributes(dataset: str) -> tuple[Attribute, ...]:
    """The captioned attributes of `dataset`; a `UserError` for a dataset without them."""
    if dataset == "digits":
        from aigc_zoo.data import digits
        return (Attribute("digit", digits.DIGIT_WORDS, "label"),
                Attribute("slant", tuple(w or "upright" for w in digits.SLANT_WORDS), "slant"))
    if dataset == "shapes":
        from aigc_zoo.data import shapes
        words = dict(zip(shapes.ATTRIBUTES,
                         (shapes.SHAPES, shapes.COLOURS, shapes.SIZES, shapes.POSITIONS)))
        return tuple(Attribute(f"{name}_{slot + 1}", (("none",) if slot else ()) + words[name],
                               name, slot)
                     for slot in (0, 1) for name in shapes.ATTRIBUTES)
    raise UserError(f"dataset {dataset!r} has no attribute probe, so no prompt agreement; "
                    "datasets with one: digits, shapes")


def groups(dataset: str, targets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Boolean masks of the example groups reported apart: `ALL`, and for `shapes` one-object
    and two-object examples."""
    count = len(next(iter(targets.values())))
    masks = {ALL: np.ones(count, bool)}
    if dataset == "shapes":
        masks[ONE] = targets["shape_2"] == 0
        masks[TWO] = ~masks[ONE]
    return masks


def canonical(dataset: str, columns: dict[str, Any]) -> dict[str, Any]:
    """The feature columns (numpy or tensors, a batch) in the order the probe reads them.

    A `shapes` caption names either object of a pair first ("a red circle above a blue
    square" and "a blue square below a red circle" are one image), so which object is the
    first is not in the image. Pairs are put in a fixed order, the object at the top or on
    the left first (swapping the slots of `shape`, `colour`, `size`, `position`); comparing
    these canonical attributes is still exact. Other datasets are returned as they are.
    """
    if dataset != "shapes":
        return columns
    from aigc_zoo.data import shapes
    where = tf.where if tf.is_tensor(columns["position"]) else np.where
    first = columns["position"][:, 0]
    bottom, right = shapes.POSITIONS.index("bottom"), shapes.POSITIONS.index("right")
    swap = (columns["shape"][:, 1] >= 0) & ((first == bottom) | (first == right))
    return {**columns, **{name: where(swap[:, None], columns[name][:, ::-1], columns[name])
                          for name in shapes.ATTRIBUTES}}


def open_examples(dataset: str, split: str, *, data_dir: str | None = None,
                  caption: bool = False) -> tuple[tf.data.Dataset, data.DatasetInfo]:
    """The unbatched split with its attribute features (and `"caption"`), at native size."""
    features = {a.feature for a in dataset_attributes(dataset)} - {"label"}
    # `open_captioned` keeps only the caption; the attribute features come the same way.
    return data.open_with_features(
        dataset, split, tuple(sorted(features)) + (("caption",) if caption else ()),
        data_dir=data_dir)


def score(dataset: str, predicted: dict[str, np.ndarray], targets: dict[str, np.ndarray]
          ) -> dict[str, dict[str, Any]]:
    """Per group (`groups`): its size, the share of examples whose attributes all match and
    the share per attribute (None for an empty group)."""
    blocks = {}
    for group, mask in groups(dataset, targets).items():
        count = int(mask.sum())
        matches = {name: predicted[name][mask] == targets[name][mask] for name in targets}
        every = np.all(np.stack(list(matches.values())), axis=0) if count else None
        blocks[group] = {
            "count": count,
            "all_attributes": float(every.mean()) if count else None,
            "per_attribute": {name: float(m.mean()) if count else None
                              for name, m in matches.items()}}
    return blocks


# -- the probe --------------------------------------------------------------------------------

def build_probe(image_shape: Sequence[int], attributes: Sequence[Attribute]) -> keras.Model:
    """The domain classifier's trunk (`classifier.build_network`) with one logits head per
    attribute, named by it."""
    inputs = keras.Input(tuple(image_shape), name="image")
    x = inputs
    for filters in (32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(classifier.FEATURE_DIM, activation="relu", name="features")(x)
    x = keras.layers.Dropout(0.3)(x)
    heads = {a.name: keras.layers.Dense(len(a.classes), name=a.name)(x) for a in attributes}
    return keras.Model(inputs, heads, name="attribute_probe")


class AttributeProbe:
    """A trained probe: `predict(images)` gives each attribute's class index per image."""

    def __init__(self, network: keras.Model, info: dict[str, Any], path: str,
                 attributes: Sequence[Attribute]):
        self.network, self.info, self.path = network, info, path
        self.attributes = tuple(attributes)
        self._predict = tf.function(
            lambda images: {name: tf.argmax(logits, axis=-1, output_type=tf.int32)
                            for name, logits in network(images, training=False).items()},
            reduce_retracing=True)

    def predict(self, images: np.ndarray | tf.Tensor) -> dict[str, np.ndarray]:
        """int32 [N] class index per attribute of images in [-1, 1]."""
        parts: dict[str, list[np.ndarray]] = {a.name: [] for a in self.attributes}
        for start in range(0, len(images), _PREDICT_BATCH):
            batch = tf.convert_to_tensor(images[start:start + _PREDICT_BATCH], tf.float32)
            for name, value in self._predict(batch).items():
                parts[name].append(value.numpy())
        return {name: np.concatenate(values) if values else np.zeros([0], np.int32)
                for name, values in parts.items()}

    def describe(self) -> dict[str, Any]:
        """What results report about the probe: its accuracy on real test images."""
        return {"path": self.path, "version": PROBE_VERSION,
                **{key: self.info[key] for key in ("train_split", "test_split",
                                                   "test_examples", "test_scores")}}


def load_probe(dataset: str, *, train_split: str = "train", test_split: str = "test",
               data_dir: str | None = None, cache_dir: str | None = None,
               verbose: bool = True) -> AttributeProbe:
    """The attribute probe of `dataset`: from the cache (`cache_dir`, default the domain
    classifiers' folder), or trained now and cached; a damaged cache is deleted and trained
    again with one warning line, as the domain classifier's."""
    attributes = dataset_attributes(dataset)
    _, info = open_examples(dataset, train_split, data_dir=data_dir)
    path = classifier.cache_path(cache_dir or classifier.default_cache_dir(), dataset,
                                 info.image_shape, train_split, test_split, kind=KIND,
                                 version=PROBE_VERSION)

    def read() -> tuple[AttributeProbe | None, str | None]:
        saved, problem = classifier.read_files(
            path, lambda saved: _info_problem(saved, info.image_shape, attributes))
        if saved is None:
            return None, problem
        network = build_probe(info.image_shape, attributes)
        problem = classifier.load_weights(network, path)
        return (None, problem) if problem else (
            AttributeProbe(network, saved, path, attributes), None)

    def make() -> AttributeProbe:
        if verbose:
            print(f"training the attribute probe of {dataset} on its {train_split!r} split "
                  f"(once; cached in {path})", flush=True)
        network, saved = train_probe(dataset, train_split=train_split, test_split=test_split,
                                     data_dir=data_dir)
        classifier.save(path, network, saved)
        if verbose:
            print(f"attribute probe: all attributes right on "
                  f"{saved['test_scores'][ALL]['all_attributes']:.4f} of "
                  f"{saved['test_examples']} {test_split!r} images, trained in "
                  f"{saved['train_seconds']:.0f} s", flush=True)
        return AttributeProbe(network, saved, path, attributes)

    return classifier.cached(path, read, make, what="attribute probe")


def _info_problem(saved: Any, image_shape: Sequence[int], attributes: Sequence[Attribute]
                  ) -> str | None:
    """What is wrong with a probe cache's `info.json`, or None."""
    if not isinstance(saved, dict):
        return f"{classifier.INFO} is not a JSON object"
    expected = {"version": PROBE_VERSION, "image_shape": list(image_shape),
                "attributes": {a.name: list(a.classes) for a in attributes}}
    for name, value in expected.items():
        if saved.get(name) != value:
            return f"{classifier.INFO} has {name}={saved.get(name)!r:.40}, not {value!r:.40}"
    scores = saved.get("test_scores")
    whole = scores.get(ALL) if isinstance(scores, dict) else None
    shares = [whole.get("all_attributes"), *whole.get("per_attribute", {}).values()] \
        if isinstance(whole, dict) and isinstance(whole.get("per_attribute"), dict) else []
    if len(shares) != len(attributes) + 1 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in shares):
        return f"{classifier.INFO} has no test scores of every attribute"
    if not all(isinstance(saved.get(name), str) for name in ("train_split", "test_split")) \
            or not isinstance(saved.get("test_examples"), int):
        return f"{classifier.INFO} lacks 'train_split', 'test_split' or 'test_examples'"
    return None


def train_probe(dataset: str, *, train_split: str = "train", test_split: str = "test",
                data_dir: str | None = None, epochs: int = EPOCHS, seed: int = SEED
                ) -> tuple[keras.Model, dict[str, Any]]:
    """Train the probe (`classifier.fit`: Adam, a cross-entropy per head, at least
    `MIN_TRAIN_STEPS` steps) and score it on `test_split`; the network and its `info.json`."""
    start = time.perf_counter()
    attributes = dataset_attributes(dataset)
    opened, info = open_examples(dataset, train_split, data_dir=data_dir)
    batches = data.batches(opened, info, split=train_split, batch_size=classifier.BATCH_SIZE,
                           training=True, seed=seed)

    def pairs(batch):
        batch = canonical(dataset, batch)
        targets = {}
        for a in attributes:
            values = tf.cast(batch[a.feature], tf.int32)
            targets[a.name] = values if a.slot is None else values[:, a.slot] + (
                1 if a.slot else 0)
        return batch["image"], targets

    keras.utils.set_random_seed(seed)
    network = build_probe(info.image_shape, attributes)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    epochs = classifier.fit(network, batches.map(pairs), num_examples=info.num_examples,
                            epochs=epochs, loss={a.name: loss for a in attributes},
                            min_steps=MIN_TRAIN_STEPS)
    train_seconds = time.perf_counter() - start
    images, targets, _ = read_split(dataset, test_split, data_dir=data_dir)
    probe = AttributeProbe(network, {}, "", attributes)
    return network, {
        "dataset": dataset, "train_split": train_split, "test_split": test_split,
        "image_shape": list(info.image_shape), "version": PROBE_VERSION,
        "attributes": {a.name: list(a.classes) for a in attributes},
        "epochs": epochs, "seed": seed, "train_examples": info.num_examples,
        "test_examples": len(images),
        "test_scores": score(dataset, probe.predict(images), targets),
        "train_seconds": train_seconds,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorflow": tf.__version__, "keras": keras.__version__,
    }


def read_split(dataset: str, split: str, *, data_dir: str | None = None,
               images: bool = True) -> tuple[np.ndarray | None, dict[str, np.ndarray],
                                             list[str]]:
    """A whole split in stored order: images in [-1, 1] (None when not asked for), each
    attribute's class indices and the captions."""
    attributes = dataset_attributes(dataset)
    opened, info = open_examples(dataset, split, data_dir=data_dir, caption=True)
    if not images:
        opened = opened.map(lambda example: {k: v for k, v in example.items() if k != "image"})
    pixels, values, captions = [], {a.feature: [] for a in attributes}, []
    for batch in opened.batch(_PREDICT_BATCH).as_numpy_iterator():
        if images:
            pixels.append(batch["image"].astype(np.float32) / 127.5 - 1.0)
        for name in values:
            values[name].append(batch[name])
        captions.extend(caption.decode("utf-8") for caption in batch["caption"])
    columns = canonical(dataset, {name: np.concatenate(parts) for name, parts in values.items()})
    targets = {a.name: a.targets(columns[a.feature]) for a in attributes}
    return (np.concatenate(pixels) if images else None), targets, captions


# -- the agreement of a model's samples with their prompts -----------------------------------

def takes_text(model: Any) -> bool:
    """Whether `model` is conditioned on prompts (`GenerativeModel.takes_text`)."""
    return bool(type(model).takes_text(model.config))


class PromptAgreement:
    """The prompt agreement of text-conditional models of one dataset (module docstring).

    Args:
        dataset, eval_split, data_dir: the run's data (the prompts are `eval_split`'s).
        train_split, probe_split: the probe's (trained now if not cached).
        tokenizer: the run's `text.Tokenizer`.
        held_out: caption phrases held out of training (`config.held_out_combinations`).
        num_samples: samples per set (the first eval captions; as many held-out ones).
        batch_size: samples per `generate` call.
        probe: a ready `AttributeProbe` (default: `load_probe`).
    """

    def __init__(self, dataset: str, *, tokenizer: Any, eval_split: str = "test",
                 train_split: str = "train", probe_split: str = "test",
                 data_dir: str | None = None,
                 held_out: Sequence[str] = (), num_samples: int = 1000, batch_size: int = 500,
                 cache_dir: str | None = None, probe: AttributeProbe | None = None):
        self.dataset, self.tokenizer = dataset, tokenizer
        self.held_out = tuple(held_out)
        self.num_samples, self.batch_size = int(num_samples), int(batch_size)
        self.probe = probe or load_probe(dataset, train_split=train_split,
                                         test_split=probe_split, data_dir=data_dir,
                                         cache_dir=cache_dir)
        self.split = eval_split
        _, targets, captions = read_split(dataset, eval_split, data_dir=data_dir, images=False)
        # A caption the tokenizer cannot encode (a word never in a training caption) cannot be
        # prompted: it is left out and counted.
        encodable = np.array([tokenizer.encodes(c) for c in captions], bool)
        self.skipped = int((~encodable).sum())
        self._captions = [c for c, ok in zip(captions, encodable) if ok]
        self._targets = {name: values[encodable] for name, values in targets.items()}
        # The same phrase test as the one that drops them from training.
        held = np.array([text.holds_phrase(c, self.held_out) for c in self._captions], bool) \
            if self.held_out else np.zeros(len(self._captions), bool)
        self.sets = {"test_captions": np.arange(min(self.num_samples, len(self._captions))),
                     "held_out": np.flatnonzero(held)[:self.num_samples]}
        self._observed: dict[tuple[int, bytes], dict[str, np.ndarray]] = {}

    def tokens(self, indices: np.ndarray) -> np.ndarray:
        """The prompts' token ids of these eval examples."""
        return self.tokenizer.encode([self._captions[i] for i in indices])

    def observe(self, batch: Any) -> None:
        """Keep the probe's reading of a batch of samples drawn elsewhere (a
        `sample_quality.Batch`: sample quality draws the same prompts with the same seeds);
        `evaluate` uses it instead of drawing that batch again."""
        if set(batch.inputs) == {"tokens"}:  # drawn with the prompts alone, as `predictions`
            key = (batch.seed, np.asarray(batch.inputs["tokens"]).tobytes())
            self._observed[key] = self.probe.predict(batch.images)

    def predictions(self, model: Any, indices: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        """The probe's reading of one sample per eval example in `indices`, drawn
        `batch_size` at a time, each batch with its own seed derived from `seed` (as sample
        quality draws), or taken from what `observe` kept of the same draw."""
        seeds = np.random.SeedSequence(seed).generate_state(
            max(1, math.ceil(len(indices) / self.batch_size)))
        parts = []
        for index, start in enumerate(range(0, len(indices), self.batch_size)):
            chosen = indices[start:start + self.batch_size]
            tokens, batch_seed = self.tokens(chosen), int(seeds[index] >> 1)
            seen = self._observed.get((batch_seed, np.asarray(tokens).tobytes()))
            parts.append(seen if seen is not None else self.probe.predict(
                np.asarray(model.generate(len(chosen), seed=batch_seed, tokens=tokens))))
        return {name: np.concatenate([part[name] for part in parts])
                for name in (parts[0] if parts else {})}

    def evaluate(self, model: Any, *, seed: int = 0) -> dict[str, Any]:
        """Agreement over the eval captions and over the held-out ones (`held_out` None when
        no phrase is held out or none is in the eval split). What `observe` kept is used once,
        then dropped."""
        start = time.perf_counter()
        results: dict[str, Any] = {
            "split": self.split, "seed": seed, "skipped_captions": self.skipped,
            "held_out_combinations": list(self.held_out), "probe": self.probe.describe()}
        for offset, (name, indices) in enumerate(self.sets.items()):
            if not len(indices):
                results[name] = None
                continue
            targets = {k: v[indices] for k, v in self._targets.items()}
            results[name] = score(self.dataset, self.predictions(model, indices, seed + offset),
                                  targets)
        self._observed.clear()
        results["seconds"] = time.perf_counter() - start
        return results


def scalars(results: dict[str, Any]) -> dict[str, float]:
    """Flat TensorBoard scalars: `prompt_agreement/<set>/<group>/all` and `.../<attribute>`."""
    values = {}
    for name in ("test_captions", "held_out"):
        for group, block in (results.get(name) or {}).items():
            if block["count"]:
                prefix = f"prompt_agreement/{name}/{group.replace(' ', '_')}"
                values[f"{prefix}/all"] = block["all_attributes"]
                values.update({f"{prefix}/{attribute}": share
                               for attribute, share in block["per_attribute"].items()})
    return values


def format_report(results: dict[str, Any]) -> str:
    """A small text table: agreement per set and group next to the probe on real images."""
    real = results["probe"]["test_scores"]
    lines = [f"prompt agreement on {results['split']!r} captions (probe {results['probe']['path']}"
             f"; held out: {', '.join(results['held_out_combinations']) or 'none'})",
             f"  {'set':<32}{'count':>7}{'all attributes':>16}{'probe on real':>15}"]
    for name in ("test_captions", "held_out"):
        for group, block in (results.get(name) or {}).items():
            if block["count"]:
                lines.append(f"  {name + ' / ' + group:<32}{block['count']:>7}"
                             f"{block['all_attributes']:>16.4f}"
                             f"{real[group]['all_attributes']:>15.4f}")
    return "\n".join(lines)


PROBED = ("digits", "shapes")  # the datasets `dataset_attributes` knows


def caption_prompts(run: Any, tokenizer: text.Tokenizer, *, data_dir: str | None = None
                    ) -> np.ndarray:
    """Token rows of the eval split's captions the tokenizer takes, in the split's order: the
    prompts a text model's sample quality is measured on (without a probe, and in training)."""
    captions = data.captions(run.dataset, run.eval_split, data_dir=data_dir)
    prompts = [caption for caption in captions if tokenizer.encodes(caption)]
    if not prompts:
        raise UserError(f"no caption of {run.dataset} split {run.eval_split!r} fits this "
                        "model's vocabulary")
    return tokenizer.encode(prompts)


def prepare(run: Any, model: Any, workdir: str, quality: Any, evaluator: Any, *,
            data_dir: str | None = None) -> PromptAgreement | None:
    """What `--mode=eval` measures of a text-conditional model beside sample quality.

    Gives the sample-quality `evaluator` the eval split's captions as prompts (tokenised with
    `<workdir>/tokenizer.json`), and returns the run's `PromptAgreement` (its probe loaded, or
    trained and cached, now), with `quality.num_samples` samples a set. None for a model
    without text, when sample quality is skipped (`quality` None), and for a dataset with no
    probe or images resized from its own size (then only sample quality is measured).
    """
    if quality is None or not takes_text(model):
        return None
    tokenizer = text.load_for(workdir, run.config)
    agreement = None
    if run.dataset in PROBED and not run.image_size:
        # The probe is the instrument, the same for every run: the dataset's whole splits.
        agreement = PromptAgreement(
            run.dataset, tokenizer=tokenizer, eval_split=run.eval_split, data_dir=data_dir,
            held_out=getattr(run.config, "held_out_combinations", ()) or (),
            num_samples=quality.num_samples, batch_size=quality.batch_size,
            cache_dir=quality.classifier_dir)
        prompts = agreement.tokens(agreement.sets["test_captions"])
    else:
        prompts = caption_prompts(run, tokenizer, data_dir=data_dir)
    if hasattr(evaluator, "use_prompts"):
        # The agreement reads the samples sample quality draws for the same prompts and seeds
        # rather than drawing them again (the costliest part of the evaluation).
        evaluator.use_prompts(prompts, observe=agreement.observe if agreement else None)
    return agreement
