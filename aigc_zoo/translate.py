"""`--mode=translate`: run a trained image-to-image model on the user's own images.

    python -m aigc_zoo.run --mode=translate --workdir=runs/espcn-digits \\
        --input=my_digits/ --output=translated/
    python -m aigc_zoo.run --mode=translate --workdir=runs/cyclegan-digits \\
        --direction=backward --input=mnist_pngs/ --output=translated/   # Y -> X

Each image (a file, or every .png/.jpg/.jpeg/.bmp/.gif file of a folder, not its sub-folders,
hidden files left out) is read as training reads a folder of images (`local.read_image`: EXIF
rotation applied, 16-bit grey scaled to 8 bits, the centre square kept) and made into the task's
source (`aigc_zoo.data.paired`): converted to the model's channels (grey or colour) and resized,
when it is not already, to the source size the model takes (a line says what was resized). An
SR image given at the model's target size is downsampled as in training (`paired.downsample`),
not resized. For `inpaint` the holes are the image's transparent pixels (alpha < 128) when it
has an alpha channel, else the task's own random mask for the file's position. The translations
are written as PNGs under the same names (`.png` suffix); two inputs that would share a name
(`a.jpg`, `a.png`), or an `--output` that is the inputs' folder, are refused before anything is
written. An unreadable image is named and skipped; the rest are still written; the run ends
with one `error:` line naming every skipped file (exit status 2) unless all succeeded.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from aigc_zoo import files, trained
from aigc_zoo.data import local, paired
from aigc_zoo.errors import UserError

_BATCH = 64


@dataclasses.dataclass(frozen=True)
class Report:
    """What a translation wrote (`written`: output paths), resized and skipped (path, why)."""

    written: list[str]
    resized: list[str]
    skipped: list[tuple[str, str]]


def input_files(path: str) -> list[str]:
    """The image files `--input` names: itself, or a folder's images in name order (the
    folder reader of training data, `local.image_files`, so the same files count)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise UserError(f"--input={path} is neither an image file nor a folder")
    found = [str(name) for name in local.image_files(Path(path))]
    if not found:
        raise UserError(f"--input={path} holds no images "
                        f"({', '.join(sorted(local.IMAGE_SUFFIXES))})")
    return found


def read_source(path: str, task: paired.Task, source_shape, index: int
                ) -> tuple[np.ndarray, str | None]:
    """One file as a source [h, w, c] in [-1, 1], and a note when it was resized.

    The file is read as training reads a folder of images (`local.read_image`: EXIF rotation,
    16-bit grey, centre square, antialiased resize). An SR image given at the model's target
    size is made into a source by the training pipeline's own downsampling (`paired`).

    Raises:
        UserError: the file cannot be read as an image.
    """
    height, width, channels = source_shape
    image_channels = channels - 1 if task.kind == "inpaint" else channels
    square = local.read_image(path, keep_alpha=task.kind == "inpaint")
    holes = None
    if square.shape[-1] in (2, 4):  # keep_alpha found transparency: the last channel
        square, holes = square[..., :-1], square[..., -1]
    if square.shape[-1] != image_channels:  # to the model's channels, as PIL converts
        mode = "L" if image_channels == 1 else "RGB"
        square = np.asarray(Image.fromarray(np.squeeze(square, -1) if square.shape[-1] == 1
                                            else square).convert(mode)).reshape(
            square.shape[:2] + (image_channels,))
    side = square.shape[0]
    note = None
    at_target = task.kind == "sr" and (side, side) == (height * task.factor, width * task.factor)
    size = (side, side) if at_target else (height, width)
    if (side, side) != size:
        note = (f"resized {os.path.basename(path)}: its centre {side}x{side} square to "
                f"{size[1]}x{size[0]}")
        square = _resize(square, size)
        holes = None if holes is None else _resize(holes[..., None], size)[..., 0]
    source = square.astype(np.float32) / 127.5 - 1.0
    if at_target:
        source = paired.downsample(source[None], task.factor).numpy()[0]
    if task.kind == "inpaint":
        if holes is not None:
            mask = (holes < 128).astype(np.float32)
        else:
            seed = np.array([paired.PAIR_SEED, index], np.int64)
            mask = paired.random_mask(height, width, seed).numpy()
        source = paired.masked(source[None], mask[None]).numpy()[0]
    return source.astype(np.float32), note


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [S, S, C] to `size` (h, w) with the resampling `local.read_image` uses."""
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    resized = np.asarray(image.resize(size[::-1], Image.Resampling.BILINEAR), np.uint8)
    return resized.reshape(size + (pixels.shape[-1],))


def output_paths(inputs: list[str], output: str) -> list[str]:
    """The PNG each of `inputs` is written to in the folder `output`.

    Raises:
        UserError: two inputs would be written to the same file (`a.jpg`, `a.png`), or
            `output` is a folder holding inputs (the originals could be overwritten).
    """
    folder = os.path.realpath(output)
    for path in inputs:
        if os.path.realpath(os.path.dirname(os.path.abspath(path))) == folder:
            raise UserError(f"--output={output} is the folder of the input {path}; "
                            "translations could overwrite the originals: pick another folder")
    targets: dict[str, str] = {}
    for path in inputs:
        target = os.path.join(output, os.path.splitext(os.path.basename(path))[0] + ".png")
        if target in targets:
            raise UserError(f"{targets[target]} and {path} would both be written to {target}; "
                            "rename one of them")
        targets[target] = path
    return list(targets)


def translate_files(model: Any, inputs: list[str], output: str, *, seed: int = 0) -> Report:
    """Translate each of `inputs` with `model` (a `TranslationModel`) into `output`."""
    targets = dict(zip(inputs, output_paths(inputs, output)))
    files.make_writable_folder(output, what="the output folder")
    report = Report([], [], [])
    readable: list[tuple[str, np.ndarray]] = []
    for index, path in enumerate(inputs):
        try:
            source, note = read_source(path, model.task, model.source_shape, index)
        except UserError as error:
            report.skipped.append((path, str(error)))
            continue
        if note:
            report.resized.append(note)
        readable.append((path, source))
    for start in range(0, len(readable), _BATCH):
        chunk = readable[start:start + _BATCH]
        images = model.translate(np.stack([source for _, source in chunk]), seed=seed).numpy()
        for (path, _), image in zip(chunk, images):
            pixels = np.clip(np.round((image + 1.0) * 127.5), 0, 255).astype(np.uint8)
            target = targets[path]
            Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(target)
            report.written.append(target)
    return report


def run(workdir: str, input_path: str, output: str, *, seed: int = 0,
        expected_model: str | None = None, overrides: Sequence[str] = ()) -> Report:
    """`--mode=translate`: restore the workdir's model (with `overrides` of its sampling
    fields, `--set`), translate, print what was done.

    Raises:
        UserError: the run is not an image-to-image model, or some images were skipped (after
            the others were written).
    """
    inputs = input_files(input_path)
    output_paths(inputs, output)  # refuse clashes before the model is even restored
    run_, model = trained.restore(workdir, expected_model=expected_model,
                                  overrides=tuple(overrides), mode="translate")
    if not model.knobs(model.config, model.image_shape).task:
        raise UserError(f"{run_.model} is not an image-to-image model; --mode=translate needs "
                        "one trained with --task (espcn, pix2pix, sr3) or cyclegan")
    report = translate_files(model, inputs, output, seed=seed)
    for note in report.resized:
        print(note)
    print(f"wrote {len(report.written)} image(s) to {output}")
    if report.skipped:
        for _, reason in report.skipped:
            print(f"skipped: {reason}")
        names = ", ".join(os.path.basename(path) for path, _ in report.skipped)
        raise UserError(f"{len(report.skipped)} of {len(inputs)} images could not be read "
                        f"and were skipped: {names}")
    return report
