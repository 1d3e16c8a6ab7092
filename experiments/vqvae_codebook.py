"""How the VQ-VAE's codebook size trades reconstruction against code usage.

    python experiments/vqvae_codebook.py --sizes=32,128,512 --epochs=3

Trains `vqvae` once per codebook size through the runner (`aigc_zoo.api.train`, the default
config otherwise), evaluates each on the test split (`--mode=eval`'s `evaluate_model`: PSNR,
SSIM, share of codes used, perplexity) and writes `experiments/results/vqvae_codebook.md` (a
table under the date, machine and command) and `docs/images/vqvae_codebook.png`.
"""

import argparse
import dataclasses
import datetime
import os
import pathlib
import platform
import shlex
import sys
import tempfile
import time

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

from aigc_zoo import data, device, registry, request, training  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "vqvae_codebook.md"
FIGURE = ROOT / "docs" / "images" / "vqvae_codebook.png"


def measure(size: int, epochs: int, workdir: str) -> dict:
    config = dataclasses.replace(registry.get_model("vqvae").default_config(),
                                 codebook_size=size, epochs=epochs)
    run = request.Run(model="vqvae", dataset="digits", config=config)
    start = time.perf_counter()
    model = training.train(run, workdir=workdir, verbose=0, sample_every_epochs=0)
    seconds = time.perf_counter() - start
    dataset, _ = data.load("digits", "test", batch_size=100, training=False)
    return {"size": size, "seconds": seconds, **model.evaluate_model(dataset)}


def plot(rows: list[dict], title: str) -> None:
    sizes = [row["size"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(sizes, [row["reconstruction_psnr_db"] for row in rows], "o-")
    left.set(xscale="log", xlabel="codebook size K", ylabel="test PSNR (dB) ↑", xticks=sizes,
             xticklabels=[str(s) for s in sizes])
    right.plot(sizes, [row["codes_used"] for row in rows], "o-", label="share of codes used")
    right.plot(sizes, [row["code_perplexity"] / row["size"] for row in rows], "s-",
               label="perplexity / K")
    right.set(xscale="log", xlabel="codebook size K", ylim=(0, 1.05), xticks=sizes,
              xticklabels=[str(s) for s in sizes])
    right.legend()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(FIGURE, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,128,512")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            rows.append(measure(size, args.epochs, f"{folder}/k{size}"))
            print(rows[-1], flush=True)
    date = datetime.date.today().isoformat()
    machine = (f"{device.cpu_name()} ({platform.machine()}, {os.cpu_count()} CPUs), "
               f"commit {device.git_commit() or 'unknown'}")
    command = "python " + " ".join(shlex.quote(arg) for arg in sys.argv)
    lines = [f"# VQ-VAE codebook size on digits ({args.epochs} epochs each)", "",
             f"{date}, {machine}, `{command}`", "",
             "| K | test PSNR (dB) | SSIM | codes used | perplexity | bits/image | train s |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['size']} | {row['reconstruction_psnr_db']:.2f} | "
                     f"{row['reconstruction_ssim']:.3f} | {row['codes_used']:.3f} | "
                     f"{row['code_perplexity']:.1f} | {row['bits_per_image']:.0f} | "
                     f"{row['seconds']:.0f} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    plot(rows, f"vqvae on digits, {args.epochs} epochs per size ({date})")
    print(f"wrote {RESULTS} and {FIGURE}")


if __name__ == "__main__":
    main()
