"""How much prompt agreement a first stage leaves room for: the attribute probe on its
reconstructions of the real test images.

    python experiments/first_stage_readback.py W/klae-shapes W/vqvae-shapes

For each trained first-stage workdir (`klae`: the posterior mean decoded; `vqvae`: the codes
decoded) on a captioned dataset: every test image reconstructed, its attributes read back by
the cached attribute probe (`metrics.attributes.load_probe`, trained there when missing), and
scored against the image's own attributes, per group and attribute, beside the probe on the
real images. A prior sampling through that first stage cannot be read back more reliably than
its reconstructions (short of drawing images the first stage never reconstructs). Writes
experiments/results/first_stage_readback_<dataset>.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from aigc_zoo import device, trained  # noqa: E402
from aigc_zoo.metrics import attributes  # noqa: E402
from aigc_zoo.workdir import Workdir  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCH = 250


def reconstructions(workdir: str, images: np.ndarray) -> tuple[str, str, np.ndarray]:
    run, model = trained.restore(workdir)
    parts = [model.reconstruct(tf.constant(images[start:start + BATCH])).numpy()
             for start in range(0, len(images), BATCH)]
    return run.model, run.dataset, np.concatenate(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", help="trained klae or vqvae workdirs, one dataset")
    parser.add_argument("--output", default=None,
                        help="default: experiments/results/first_stage_readback_<dataset>.md")
    args = parser.parse_args()
    dataset = Workdir(args.workdirs[0]).require().run.dataset  # the record, not the weights
    images, targets, _ = attributes.read_split(dataset, "test")
    probe = attributes.load_probe(dataset)
    results = {"real test images": attributes.score(dataset, probe.predict(images), targets)}
    for workdir in args.workdirs:
        name, its_dataset, rebuilt = reconstructions(workdir, images)
        if its_dataset != dataset:
            raise SystemExit(f"{workdir} was trained on {its_dataset}, not {dataset}")
        results[f"`{name}` reconstructions"] = attributes.score(
            dataset, probe.predict(rebuilt), targets)
    names = [a.name for a in probe.attributes]
    lines = [f"# The attribute probe on first-stage reconstructions of `{dataset}` "
             f"({device.describe()['name']}, {platform.machine()}, "
             f"{datetime.date.today().isoformat()})", "",
             f"`python experiments/first_stage_readback.py {' '.join(args.workdirs)}`: every "
             f"test image ({len(images):,}), reconstructed and read back by the cached probe; "
             "share of images whose attributes all match, and per attribute.", "",
             "| images | group (count) | all attributes | " + " | ".join(names) + " |",
             "| --- | --- |" + " ---: |" * (len(names) + 1)]
    for source, blocks in results.items():
        for group, block in blocks.items():
            if block["count"]:
                lines.append(f"| {source} | {group} ({block['count']:,}) | "
                             f"**{100 * block['all_attributes']:.1f}%** | "
                             + " | ".join(f"{100 * block['per_attribute'][n]:.1f}%"
                                          for n in names) + " |")
    text = "\n".join(lines) + "\n"
    output = args.output or str(ROOT / f"experiments/results/first_stage_readback_{dataset}.md")
    pathlib.Path(output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
