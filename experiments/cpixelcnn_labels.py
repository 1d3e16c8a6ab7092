"""Does a trained `cpixelcnn` use its label, in the likelihood and in its samples?

    python -m aigc_zoo.run --model=cpixelcnn --workdir=runs/cpixelcnn-digits
    python experiments/cpixelcnn_labels.py --workdir=runs/cpixelcnn-digits

Prints, on one fixed binarisation of the first `--examples` eval images:
- the test NLL given the true label and given every label (the mean over the nine wrong ones);
- the model as a classifier, argmax_y log p(x | y): how well its likelihood tells the digits
  apart (a model that ignores the label is at 10%);
- the domain classifier's accuracy on the same binarised real digits (is it fit to read binary
  images?);
and on `--samples` samples per label (cached sampler; a few uncached ones must equal them):
- the model's own argmax_y log p(sample | y) against the asked label (is the sampler using the
  label as the likelihood does?);
- label agreement, and the classifier's mean confidence (max softmax), next to the same for
  binarised real digits (a sample that is no digit has a low confidence and a random label).
Writes a grid of samples, one row per label, to `--grid` (rows 0..9 top to bottom), and the
printed lines, under a heading naming the workdir, machine and date, to `--results` (appended).
"""

import argparse
import datetime
import time

import numpy as np
import tensorflow as tf

from aigc_zoo import data, device, plots, trained
from aigc_zoo.metrics import classifier


def _log_likelihoods(log_p, images, classes: int, batch: int = 500) -> np.ndarray:
    """log p(x | y) of every image under every label, [N, K], `batch` images a call."""
    return np.stack([np.concatenate([log_p(images[s:s + batch],
                                           tf.fill([len(images[s:s + batch])], y)).numpy()
                                     for s in range(0, len(images), batch)])
                     for y in range(classes)], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=100, help="per label")
    parser.add_argument("--uncached", type=int, default=4, help="samples checked uncached")
    parser.add_argument("--grid", default="")
    parser.add_argument("--results", default="")
    args = parser.parse_args()
    lines = []

    def say(*parts):
        lines.append(" ".join(str(part) for part in parts))
        print(lines[-1], flush=True)

    run, model = trained.restore(args.workdir)
    dataset = run.dataset
    batches, _ = data.load(dataset, "test", batch_size=500, training=False)
    images, labels = [], []
    for batch in batches:
        images.append(batch["image"].numpy())
        labels.append(batch["label"].numpy())
        if sum(map(len, images)) >= args.examples:
            break
    images = np.concatenate(images)[:args.examples]
    labels = np.concatenate(labels)[:args.examples].astype(np.int32)
    observation = model.observation(tf.constant(images), tf.constant([0, 0], tf.int64))
    classes = model.num_classes

    log_p = tf.function(model.log_likelihood)
    table = _log_likelihoods(log_p, observation, classes)
    true = table[np.arange(len(labels)), labels]
    wrong = (table.sum(1) - true) / (classes - 1)
    say(f"test NLL given the true label {-true.mean():.2f} nats, given a wrong one "
          f"{-wrong.mean():.2f} (mean over the 9); -log mean_y p(x|y)/10 "
          f"{-np.mean(np.logaddexp.reduce(table, axis=1) - np.log(classes)):.2f}")
    say(f"the model as a classifier (argmax_y log p(x|y)): "
          f"{np.mean(table.argmax(1) == labels):.4f}")

    domain = classifier.load(dataset)
    binary = observation.numpy()
    _, probabilities = domain(binary)
    real_confidence = probabilities.max(1).mean()
    say(f"domain classifier on these binarised real digits: accuracy "
          f"{np.mean(probabilities.argmax(1) == labels):.4f}, mean confidence "
          f"{real_confidence:.3f}")

    asked = np.repeat(np.arange(classes), args.samples).astype(np.int32)
    start = time.perf_counter()
    samples = model.generate(len(asked), seed=0, labels=asked).numpy()
    seconds = time.perf_counter() - start
    _, probabilities = domain(samples)
    say(f"{len(asked)} samples ({seconds:.1f} s): label agreement "
          f"{np.mean(probabilities.argmax(1) == asked):.4f}, mean confidence "
          f"{probabilities.max(1).mean():.3f}")
    # The model's own reading of its samples: a sampler that used the label as the likelihood
    # does makes samples the likelihood assigns to the asked label (chance: 1 / K).
    own = _log_likelihoods(log_p, samples, classes)
    say(f"the model's own likelihood assigns its samples to the asked label: "
        f"{np.mean(own.argmax(1) == asked):.4f}")
    per_label = [np.mean(probabilities.argmax(1)[asked == y] == y) for y in range(classes)]
    say("agreement per label:", " ".join(f"{y}:{a:.2f}" for y, a in enumerate(per_label)))
    say("classifier's labels of the samples (counts):",
          np.bincount(probabilities.argmax(1), minlength=classes).tolist())
    if args.uncached:
        pick = np.arange(args.uncached) * args.samples  # one sample of labels 0, 1, ...
        few = model.generate(len(pick), seed=0, labels=asked[pick], cache=False).numpy()
        same = model.generate(len(pick), seed=0, labels=asked[pick], cache=True).numpy()
        say(f"cached == uncached for {len(pick)} samples: {np.array_equal(few, same)}")
    if args.grid:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        rows = samples.reshape(classes, args.samples, *samples.shape[1:])[:, :16]
        grid = plots.to_grid(rows.reshape(-1, *samples.shape[1:]), columns=rows.shape[1])
        plt.imsave(args.grid, grid[..., 0], cmap="gray", vmin=0, vmax=255)
        say("grid:", args.grid)
    if args.results:
        heading = (f"## `python experiments/cpixelcnn_labels.py --workdir={args.workdir} "
                   f"--examples={args.examples} --samples={args.samples}` "
                   f"({datetime.date.today().isoformat()}, {device.describe()['name']})")
        with open(args.results, "a") as handle:
            handle.write("\n".join([heading, "", "```", *lines, "```", ""]) + "\n")


if __name__ == "__main__":
    main()
