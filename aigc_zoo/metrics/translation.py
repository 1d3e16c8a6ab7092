"""Image-to-image evaluation: a model's translations of the eval split's sources, each metric
next to its baseline.

For every example of the eval split (up to `num_examples`) the model translates the task's
source (`aigc_zoo.data.paired`), and the rows compare with the real target image:

- `model`: the translations;
- `baseline`: for SR, bicubic upsampling of the source; for `inpaint`, the source itself (the
  holes left at 0); for `unpaired` (cyclegan), the untranslated source, whose FD to the target
  domain a translation must beat; `edges` and `pairs` have no input-side baseline (their
  regression baseline is an `espcn` run on the same task, evaluated the same way);
- `target`: the targets themselves (label agreement only: the ceiling a model can reach).

Unpaired targets are not the sources' pairs: PSNR and SSIM against them mean nothing and are
left out; FD compares the translations with the target domain's images, label agreement asks
the target domain's classifier for the *source's* label (a translated 7 must still read 7), and
the `target` row is that classifier's accuracy on the target images with their own labels.

Metrics: PSNR and SSIM on [0, 1] pixels (`tf.image.psnr`, `tf.image.ssim`, means over the
examples); with a feature extractor (the dataset's domain classifier), the Fréchet distance of
the rows' features to the targets' and label agreement, the share of images whose classifier
prediction is the target's label (only when the extractor gives probabilities over the
dataset's `num_classes` classes: an ImageNet classifier's 1000 classes are not digit labels,
and top-less weights give none).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import tensorflow as tf

from aigc_zoo.data import paired
from aigc_zoo.metrics import distances, pixels

DEFAULT_EXAMPLES = 1000
ROW_KEYS = ("psnr", "ssim", "fd", "label_agreement")


def baseline(task: paired.Task, sources: tf.Tensor, image_shape) -> tf.Tensor | None:
    """The input-side baseline's images for `sources` (see the module docstring), or None."""
    if task.kind == "sr":
        return paired.upsample(sources, image_shape)
    if task.kind == "inpaint":
        return sources[..., :-1]
    if task.kind == "unpaired":
        return sources
    return None


BASELINE_NAMES = {"sr": "bicubic", "inpaint": "masked source", "unpaired": "source"}


def psnr_ssim(images: tf.Tensor, targets: tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-example PSNR (dB) and SSIM of images against targets, both in [-1, 1]."""
    _, psnr, ssim = pixels.pixel_scores(images, targets)
    return psnr.numpy(), ssim.numpy()


def evaluate(translate: Callable[[tf.Tensor], tf.Tensor], batches: Iterable[dict[str, Any]],
             task: paired.Task, image_shape, *, num_examples: int = DEFAULT_EXAMPLES,
             extractor: Any = None, num_classes: int | None = None) -> dict[str, Any]:
    """The rows of the module docstring for `translate` (sources -> images) on `batches` of
    `{"source", "image"(, "label")}`, up to `num_examples` examples.

    Args:
        extractor: called on images in [-1, 1], returns (features, class probabilities); the
            domain classifier. None: PSNR and SSIM only.
        num_classes: the dataset's label count (None: unlabelled); label agreement needs the
            extractor's probabilities to have this many columns.
    """
    start = time.perf_counter()
    rows: dict[str, dict[str, list]] = {"model": {}, "baseline": {}, "target": {}}
    kept: dict[str, list] = {"model": [], "baseline": [], "target": [], "label": [],
                             "target_label": []}
    pixelwise = task.kind != "unpaired"  # unpaired targets are no pixel references
    count = 0
    for batch in batches:
        take = min(num_examples - count, int(batch["image"].shape[0]))
        sources, targets = batch["source"][:take], batch["image"][:take]
        outputs = {"model": translate(sources), "baseline": baseline(task, sources, image_shape)}
        for name, images in outputs.items():
            if images is None:
                continue
            if pixelwise:
                psnr, ssim = psnr_ssim(images, targets)
                rows[name].setdefault("psnr", []).append(psnr)
                rows[name].setdefault("ssim", []).append(ssim)
            if extractor is not None:
                kept[name].append(np.asarray(images))
        if extractor is not None:
            kept["target"].append(np.asarray(targets))
            if "label" in batch:
                kept["label"].append(np.asarray(batch["label"][:take]))
            if "target_label" in batch:
                kept["target_label"].append(np.asarray(batch["target_label"][:take]))
        count += take
        if count >= num_examples:
            break
    results: dict[str, Any] = {"task": task.name, "num_examples": count}
    for name, values in rows.items():
        results[name] = {key: float(np.mean(np.concatenate(v))) for key, v in values.items()}
    if extractor is not None:
        results.update(_feature_rows(extractor, kept, results, num_classes))
    if results["baseline"]:
        results["baseline"]["name"] = BASELINE_NAMES[task.kind]
    else:
        del results["baseline"]
    results["seconds"] = time.perf_counter() - start
    return results


def _feature_rows(extractor: Any, kept: dict[str, list], results: dict[str, Any],
                  num_classes: int | None) -> dict[str, Any]:
    target_features, target_probabilities = extractor(np.concatenate(kept["target"]))
    labels = np.concatenate(kept["label"]) if kept["label"] else None
    # Unpaired targets carry their own labels; paired ones are the sources' targets.
    target_labels = np.concatenate(kept["target_label"]) if kept["target_label"] else labels
    rows = {name: dict(results.get(name, {})) for name in ("model", "baseline", "target")}
    value = agreement(target_probabilities, target_labels, num_classes)
    if value is not None:
        rows["target"]["label_agreement"] = value
    for name in ("model", "baseline"):
        if not kept[name]:
            continue
        features, probabilities = extractor(np.concatenate(kept[name]))
        rows[name]["fd"] = distances.frechet_distance_from_features(target_features, features)
        value = agreement(probabilities, labels, num_classes)
        if value is not None:
            rows[name]["label_agreement"] = value
    return {name: row for name, row in rows.items() if row or name != "baseline"}


def agreement(probabilities: np.ndarray | None, labels: np.ndarray | None,
              num_classes: int | None) -> float | None:
    """The share of examples whose most probable class is their label; None when there are no
    labels or no probabilities over exactly the `num_classes` dataset classes."""
    if (labels is None or probabilities is None or not num_classes
            or np.shape(probabilities)[-1] != num_classes):
        return None
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def scalars(results: dict[str, Any]) -> dict[str, float]:
    """Flat TensorBoard scalars `translation/<row>/<metric>`."""
    return {f"translation/{row}/{key}": value for row in ("model", "baseline", "target")
            for key, value in results.get(row, {}).items() if isinstance(value, float)}


def format_report(results: dict[str, Any]) -> str:
    """A small text table: each metric for the model, its baseline and the targets."""
    baseline_name = results.get("baseline", {}).get("name", "baseline")
    lines = [f"translation ({results['task']}): {results['num_examples']} examples, "
             f"{results['seconds']:.1f} s",
             f"  {'metric':<16}{'model':>10}{baseline_name:>16}{'target':>10}"]
    for key in ROW_KEYS:
        cells = [results.get(row, {}).get(key) for row in ("model", "baseline", "target")]
        if all(cell is None for cell in cells):
            continue
        widths = (10, 16, 10)
        lines.append(f"  {key:<16}" + "".join(
            f"{cell:>{width}.4f}" if cell is not None else f"{'-':>{width}}"
            for cell, width in zip(cells, widths)))
    return "\n".join(lines)
