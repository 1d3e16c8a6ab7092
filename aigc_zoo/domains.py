"""What kind of data a dataset holds, and so how its samples are drawn, logged and evaluated.

- `Images`: samples are images in [-1, 1]; pictures are grids; quality is measured with
  `metrics.sample_quality` (FD, KID, precision/recall... against the real images), during
  training every `--eval_every_epochs` epochs.
- `Points`: samples are 2D points of a Gaussian mixture (`ring8`, `grid25`); pictures are
  scatters over the modes; evaluation is mode coverage (`metrics.modes`), cheap enough to run
  after every epoch.

The runner, the callbacks and `--mode=sample`/`--mode=eval` ask the domain
(`for_dataset(name)`); nothing else branches on the kind of data. `Pairs`: an image-to-image
model's paired task (`data.paired`); evaluation is `metrics.translation`. Later kinds (captioned
images) are further `Domain`s.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from aigc_zoo import plots
from aigc_zoo.errors import UserError
from aigc_zoo.data import toy
from aigc_zoo.metrics import modes
from aigc_zoo.metrics import sample_quality

Results = dict[str, Any]


class Evaluator(Protocol):
    """Measures a model's samples; made once per run (real features, classifiers)."""

    def evaluate(self, model: Any, *, seed: int) -> tuple[Results, dict[str, float]]:
        """What to store in `metrics.json`, and the scalars to log (`eval/<name>`)."""

    def summary(self, results: Results) -> str:
        """One line for the end of an epoch."""


# The per-epoch picture's full size is kept up to this many network evaluations per sample
# (diffusion's default 20 DDIM steps), fewer samples beyond it (`Domain.grid_size`).
GRID_COST = 20


class Domain:
    """How samples of one kind of data are shown and measured.

    Attributes:
        kind: "images" or "points".
        grid_samples: samples in each epoch's picture (drawn with a fixed seed).
    """

    kind: str = ""
    grid_samples: int = 64

    def picture(self, samples: np.ndarray, *, title: str = "") -> np.ndarray:
        """The samples as one uint8 RGB(or grey) picture, for TensorBoard."""
        raise NotImplementedError

    def save_picture(self, path: str | os.PathLike, samples: np.ndarray, *, title: str = ""
                     ) -> np.ndarray:
        """Write the samples' picture as a PNG; returns `picture(samples)`."""
        raise NotImplementedError

    def evaluator(self, run: Any, quality: sample_quality.Options | None, *,
                  data_dir: str | None = None) -> Evaluator | None:
        """How to measure the run's samples (`quality`: None skips what it configures)."""
        raise NotImplementedError

    def evaluate_every(self, eval_every_epochs: int) -> int:
        """Epochs between evaluations during training (0: none), given the user's choice."""
        return eval_every_epochs

    def grid_size(self, sampling_cost: float) -> int:
        """Samples in each epoch's picture for a model of this sampling cost (network
        evaluations per sample): `grid_samples`, fewer (down to a quarter) for a sampler
        costlier than `GRID_COST` evaluations, so the picture stays a small part of an epoch."""
        if sampling_cost <= GRID_COST:
            return self.grid_samples
        return max(self.grid_samples // 4, int(self.grid_samples * GRID_COST / sampling_cost))

    def report(self, results: Results) -> str:
        """What `--mode=eval` prints of the domain's part of `results` ("" if none)."""
        raise NotImplementedError


class Images(Domain):
    kind = "images"

    def picture(self, samples: np.ndarray, *, title: str = "") -> np.ndarray:
        return plots.to_grid(samples)

    def save_picture(self, path: str | os.PathLike, samples: np.ndarray, *, title: str = ""
                     ) -> np.ndarray:
        return plots.save_grid(path, samples, title=title)

    def evaluator(self, run: Any, quality: sample_quality.Options | None, *,
                  data_dir: str | None = None) -> Evaluator | None:
        if quality is None:
            return None
        return _SampleQuality(sample_quality_evaluator(run, quality, data_dir=data_dir))

    def report(self, results: Results) -> str:
        parts = []
        if "sample_quality" in results:
            parts.append(sample_quality.format_report(results["sample_quality"]))
        if results.get("prompt_agreement"):  # a text-conditional model's (`trained.evaluate`)
            from aigc_zoo.metrics import attributes
            parts.append(attributes.format_report(results["prompt_agreement"]))
        return "\n".join(parts)


@dataclasses.dataclass(frozen=True)
class Points(Domain):
    """2D points drawn from `mixture`."""

    mixture: toy.Mixture
    kind = "points"
    grid_samples = modes.DEFAULT_NUM_SAMPLES

    def picture(self, samples: np.ndarray, *, title: str = "") -> np.ndarray:
        return plots.figure_pixels(plots.points_figure(samples, self.mixture, title=title))

    def save_picture(self, path: str | os.PathLike, samples: np.ndarray, *, title: str = ""
                     ) -> np.ndarray:
        os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
        figure = plots.points_figure(samples, self.mixture, title=title)
        figure.savefig(path)
        return plots.figure_pixels(figure)

    def evaluator(self, run: Any, quality: sample_quality.Options | None, *,
                  data_dir: str | None = None) -> Evaluator:
        return _ModeCoverage(self.mixture.name)  # cheap: always, whatever `quality` says

    def evaluate_every(self, eval_every_epochs: int) -> int:
        return 1

    def report(self, results: Results) -> str:
        return modes.format_report(results["mode_coverage"])


@dataclasses.dataclass(frozen=True)
class Pairs(Images):
    """Image pairs of a paired task (`data.paired`): pictures as for images; evaluation
    translates the eval split's sources and compares with their targets and a baseline
    (`metrics.translation`), PSNR and SSIM always, FD and label agreement with `quality`'s
    extractor."""

    task: str
    target: tuple[str, ...] = ()  # an unpaired model's target domain (`Knobs.target`)
    kind = "pairs"

    def evaluator(self, run: Any, quality: sample_quality.Options | None, *,
                  data_dir: str | None = None) -> Evaluator:
        return _Translation(run, self.task, quality, data_dir=data_dir, target=self.target)

    def report(self, results: Results) -> str:
        from aigc_zoo.metrics import translation
        return translation.format_report(results["translation"])


def for_dataset(name: str, *, task: str = "", target: Sequence[str] = ()) -> Domain:
    """The domain of dataset `name`, as pairs of `task` when the model declares one (with
    the `target` domain of an unpaired one)."""
    if name in toy.MIXTURES:
        return Points(toy.MIXTURES[name])
    return Pairs(task, tuple(target)) if task else Images()


def holds_points(image_shape: Sequence[int]) -> bool:
    """True for the shape of a point (a vector), which the 2D datasets' examples have."""
    return len(image_shape) == 1


def sample_quality_evaluator(run: Any, options: sample_quality.Options, *,
                             data_dir: str | None = None) -> sample_quality.SampleQuality:
    """A `SampleQuality` for the run's dataset and splits (loads or trains the extractor)."""
    return sample_quality.SampleQuality(run.dataset, train_split=run.train_split,
                                        eval_split=run.eval_split, data_dir=data_dir,
                                        image_size=run.image_size, options=options)


class _SampleQuality:
    def __init__(self, measure: sample_quality.SampleQuality):
        self._measure = measure
        self._observe = None

    def evaluate(self, model: Any, *, seed: int) -> tuple[Results, dict[str, float]]:
        results = self._measure.evaluate(model, seed=seed, observe=self._observe)
        entries = {"num_samples": results["num_samples"], "extractor": results["extractor"],
                   "sample_quality": results}
        return entries, sample_quality.scalars(results)

    def use_prompts(self, tokens: np.ndarray,
                    observe: Callable[[sample_quality.Batch], None] | None = None) -> None:
        """Draw a text-conditional model's samples for these prompts (token rows, cycled);
        `observe` sees each batch of samples (the prompt agreement reads them too)."""
        self._measure.prompts = tokens
        self._observe = observe

    def summary(self, results: Results) -> str:
        quality = results["sample_quality"]
        name = quality["extractor"]
        values = sample_quality.scalars(quality)
        return (f"{name} FD {values[f'{name}/fd']:.4f} (real vs real "
                f"{values[f'{name}/real_vs_real/fd']:.4f}), {quality['num_samples']} samples, "
                f"{quality['seconds']['total']:.1f} s")


class _Translation:
    def __init__(self, run: Any, task: str, quality: sample_quality.Options | None, *,
                 data_dir: str | None = None, target: Sequence[str] = ()):
        from aigc_zoo.data import paired
        self._run, self._task, self._data_dir = run, paired.parse_task(task), data_dir
        self._target = tuple(target)
        self._num_examples = quality.num_samples if quality and quality.num_samples else 1000
        # The classifier of the domain the outputs belong to: the target dataset's, for an
        # unpaired model. Made now, so a missing extractor fails before anything is evaluated.
        dataset, train_split, eval_split = (self._target or (run.dataset, run.train_split,
                                                             run.eval_split))
        if self._target:
            self._check_target(quality)
        self._extractor = None if quality is None else sample_quality.make_extractor(
            quality, dataset=dataset, train_split=train_split, eval_split=eval_split,
            data_dir=data_dir, image_size=run.image_size)

    def _check_target(self, quality: sample_quality.Options | None) -> None:
        """An unpaired model is judged by the target domain's classifier alone, which reads
        images of the target's own shape: refuse what it cannot measure, before training."""
        from aigc_zoo import data
        if quality is None:
            raise UserError("an unpaired model has no pixel references: its evaluation is the "
                            "target domain's classifier, so --eval_samples must be above 0")
        shapes = [data.open_split(name, split, data_dir=self._data_dir,
                                  image_size=self._run.image_size)[1].image_shape
                  for name, split in ((self._run.dataset, self._run.eval_split),
                                      (self._target[0], self._target[2]))]
        if tuple(shapes[0]) != tuple(shapes[1]):
            raise UserError(f"the target dataset's images are {'x'.join(map(str, shapes[1]))}, "
                            f"the sources' {'x'.join(map(str, shapes[0]))}: its classifier "
                            "cannot judge the translations; evaluate domains of one shape "
                            "(or train with --eval_every_epochs=0)")

    def evaluate(self, model: Any, *, seed: int) -> tuple[Results, dict[str, float]]:
        from aigc_zoo import data
        from aigc_zoo.metrics import translation
        if getattr(model.config, "direction", "forward") != "forward":
            raise UserError("evaluation measures the forward direction (--dataset into "
                            "--target_dataset); drop --direction=backward")
        batches, info = data.load(self._run.dataset, self._run.eval_split, batch_size=100,
                                  training=False, data_dir=self._data_dir,
                                  image_size=self._run.image_size, task=self._task.name,
                                  target=self._target)
        results = translation.evaluate(lambda sources: model.translate(sources, seed=seed),
                                       batches, self._task, model.image_shape,
                                       num_examples=self._num_examples,
                                       extractor=self._extractor, num_classes=info.num_classes)
        return {"translation": results}, translation.scalars(results)

    def summary(self, results: Results) -> str:
        row = results["translation"]["model"]
        if "psnr" not in row:  # unpaired: no pixel references, the target domain's FD
            return f"translation FD {row.get('fd', float('nan')):.4f}"
        return f"translation PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}"


class _ModeCoverage:
    def __init__(self, dataset: str):
        self._dataset = dataset

    def evaluate(self, model: Any, *, seed: int) -> tuple[Results, dict[str, float]]:
        points = model.generate(modes.DEFAULT_NUM_SAMPLES, seed=seed).numpy()
        coverage = modes.mode_coverage(points, self._dataset)
        scalars = {name: coverage[name]
                   for name in ("modes_covered", "high_quality_share", "mode_kl")}
        return {"mode_coverage": coverage}, scalars

    def summary(self, results: Results) -> str:
        return modes.format_report(results["mode_coverage"])
