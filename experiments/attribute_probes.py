"""The attribute probes of prompt agreement, trained once into the cache `--mode=eval` reads,
and their accuracy on the real test images.

    python experiments/attribute_probes.py     # writes experiments/results/attribute_probes.md

For `digits` and `shapes`, `metrics.attributes.load_probe` (the default cache,
`$AIGC_ZOO_CACHE/classifiers` or `~/.cache/aigc_zoo/classifiers`; trained there when missing)
and its scores on the whole test split: every attribute right, and each attribute, for all
test images and (shapes) for one-object and two-object images apart. These are the ceilings
that a model's prompt agreement is read against.
"""

import pathlib
import time

from aigc_zoo.metrics import attributes

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "experiments" / "results" / "attribute_probes.md"


def table(dataset: str, probe: attributes.AttributeProbe) -> str:
    scores = probe.info["test_scores"]
    names = [a.name for a in probe.attributes]
    lines = [f"### `{dataset}` ({probe.info['train_examples']:,} train images, "
             f"{probe.info['epochs']} epochs, trained in {probe.info['train_seconds']:.0f} s on "
             f"{probe.info['date']}; {probe.info['test_examples']:,} test images)\n",
             "| test images | count | all attributes | " + " | ".join(names) + " |",
             "|---" * (len(names) + 3) + "|"]
    for group, block in scores.items():
        lines.append(f"| {group} | {block['count']:,} | {block['all_attributes']:.4f} | "
                     + " | ".join(f"{block['per_attribute'][n]:.4f}" for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    start = time.perf_counter()
    sections = []
    for dataset in ("digits", "shapes"):
        probe = attributes.load_probe(dataset)
        sections.append(table(dataset, probe))
        print(sections[-1], flush=True)
    OUTPUT.write_text(
        "# Attribute probes of prompt agreement: accuracy on real test images\n\n"
        "`python experiments/attribute_probes.py` (2-core Xeon VM, 2026-12-06, loaded by other "
        "engineers' work): `aigc_zoo.metrics.attributes.load_probe` for each dataset, trained "
        f"once (at least {attributes.MIN_TRAIN_STEPS} steps of "
        "128) on the whole train split into the default cache, scored on the whole test "
        "split. Shapes' second-slot heads include \"none\" (no second object); a pair is read "
        "top or left object first (`attributes.canonical`).\n\n"
        + "\n\n".join(sections) + f"\n\nTotal {time.perf_counter() - start:.0f} s (a cached "
        "probe is read, not trained again).\n")


if __name__ == "__main__":
    main()
