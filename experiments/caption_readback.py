"""Which drawn attributes can be read back from an image: the evidence for the caption words.

    python experiments/caption_readback.py     # writes experiments/results/caption_readback.md

Renders `digits` (train and test seeds, as the splits use) with their render parameters
(`digits.render_with_attributes`), bins each candidate attribute as the captions would, and
trains one small CNN per attribute (a probe, the size of the domain classifier) on the binned
values; its test accuracy, next to the majority-bin share, says whether a word for the bin is
something an image shows. Attributes below `RELIABLE` stay out of the captions.
"""

import pathlib
import time

import keras
import numpy as np

from aigc_zoo.data import digits

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "experiments" / "results" / "caption_readback.md"
TRAIN, TEST, EPOCHS, RELIABLE = 20_000, 4_000, 6, 0.9


def candidates(attributes: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
    """Candidate attributes, as bin indices."""
    families = np.array([("sans", "serif", "mono").index(f) for f in digits.FACE_FAMILIES])
    upright = np.array([digits._UPRIGHT[f] for f in attributes["face"]])
    return {
        "digit": labels,
        "weight (WEIGHT_EDGES)": digits.weight_bins(attributes["stroke"]),
        "slant (SLANT_EDGES)": digits.slant_bins(attributes["slant"]),
        "family (sans/serif/mono)": families[attributes["face"]],
        "italic face": (~upright).astype(np.int32),
    }


def probe(images: np.ndarray, classes: int) -> keras.Model:
    model = keras.Sequential([
        keras.Input(images.shape[1:]),
        keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(classes),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=False)
    return model


def main() -> None:
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    train_images, train_labels, train_attributes = digits.render_with_attributes(
        TRAIN, seed=digits.SPLIT_SEEDS["train"])
    test_images, test_labels, test_attributes = digits.render_with_attributes(
        TEST, seed=digits.SPLIT_SEEDS["test"])
    x_train, x_test = train_images / 127.5 - 1, test_images / 127.5 - 1
    train_bins = candidates(train_attributes, train_labels)
    test_bins = candidates(test_attributes, test_labels)
    rows = []
    for name, targets in train_bins.items():
        classes = int(targets.max()) + 1
        model = probe(x_train, classes)
        model.fit(x_train, targets, batch_size=128, epochs=EPOCHS, verbose=0)
        accuracy = float(model.evaluate(x_test, test_bins[name], verbose=0)[1])
        majority = float(np.bincount(test_bins[name]).max() / len(test_bins[name]))
        shares = np.bincount(test_bins[name], minlength=classes) / TEST
        rows.append(f"| {name} | {classes} | {' / '.join(f'{s:.2f}' for s in shares)} | "
                    f"{majority:.3f} | {accuracy:.3f} | "
                    f"{'yes' if accuracy >= RELIABLE else 'no'} |")
        print(rows[-1], flush=True)
    OUTPUT.write_text(
        "# Caption attributes read back from `digits` images\n\n"
        "`python experiments/caption_readback.py` (2-core Xeon VM, 2026-12-06): one small CNN "
        f"per attribute, trained {EPOCHS} epochs on {TRAIN:,} train-seed images, scored on "
        f"{TEST:,} test-seed images; bins: `digits.slant_bins` (the captions'), "
        "`digits.weight_bins` (stroke width, at extreme edges). An attribute gets words in "
        f"the captions when its probe reaches {RELIABLE:.0%}.\n\n"
        "| attribute | bins | share per bin | majority | probe accuracy | in captions |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) +
        f"\n\nTotal {time.perf_counter() - start:.0f} s.\n")


if __name__ == "__main__":
    main()
