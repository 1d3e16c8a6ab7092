"""Image-to-image runs on digits: train each (model, task) with the runner, evaluate it with
`--mode=eval`, and write the table of experiments/results/image_to_image.md; `--plot` draws
docs/images/image_to_image.png (source, output and target of eval examples per run).

    python experiments/image_to_image.py                       # every run of RUNS
    python experiments/image_to_image.py --runs espcn-sr4      # some of them
    python experiments/image_to_image.py --plot                # the figure from the workdirs

Each run is `python -m aigc_zoo.run --model=M --task=T [flags]` in `<root>/<name>` (a rerun
finds it trained and only evaluates), then `--mode=eval` on the whole `test` split with the
cached digits domain classifier. Wall-clock seconds of the training command are recorded.
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# name -> (model, task, extra training flags, extra eval flags). The pix2pix and sr3 runs are
# shortened (see their flags): the shared 2-core VM had no room for their default runs.
RUNS = {
    "espcn-sr4": ("espcn", "sr:4", [], []),
    "espcn-sr2": ("espcn", "sr:2", [], []),
    "espcn-inpaint": ("espcn", "inpaint", [], []),
    "espcn-edges": ("espcn", "edges", [], []),
    "pix2pix-edges": ("pix2pix", "edges", ["--epochs=3"], []),
    "pix2pix-inpaint": ("pix2pix", "inpaint", ["--epochs=3"], []),
    "sr3-sr4": ("sr3", "sr:4", ["--epochs=1"], ["--eval_samples=1000"]),
    # Unpaired (no --task): the embedded digits into real MNIST digits (the 10,000 of
    # ../shared/data/mnist, 9,000 to train, 1,000 to evaluate), smaller networks than the
    # default and stopped at BUDGETS' time.
    "cyclegan-digits-mnist": ("cyclegan", "", [
        "--dataset=digits", "--target_dataset=idx:../shared/data/mnist",
        "--target_train_split=test[:9000]", "--target_eval_split=test[9000:]",
        "--batch_size=8", "--set=widths=16,32", "--set=discriminator_filters=32,64",
        "--epochs=20", "--steps_per_epoch=250", "--checkpoint_every_steps=50"], []),
}
# Runs stopped (SIGINT, the runner keeps its last checkpoint) after this many seconds of
# training, when the shared machine has no room for their full length; evaluated at the step
# they reached.
BUDGETS = {"cyclegan-digits-mnist": 30 * 60}


def runner(*flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "aigc_zoo.run", *flags], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(flags)} failed:\n{result.stderr[-2000:]}")
    return result


def measure(name: str, root: pathlib.Path) -> dict:
    model, task, extra, eval_flags = RUNS[name]
    workdir = root / name
    flags = [f"--model={model}", f"--workdir={workdir}"]
    start = time.perf_counter()
    train_flags = [*flags, *([f"--task={task}"] if task else []), *extra]
    if name in BUDGETS:
        stopped = budgeted(train_flags, BUDGETS[name])
    else:
        runner(*train_flags)
        stopped = False
    seconds = time.perf_counter() - start
    runner(*flags, "--mode=eval", *eval_flags)
    results = json.loads((workdir / "metrics.json").read_text())
    return {"name": name, "model": model, "task": task or "unpaired",
            "flags": extra + eval_flags + (["(stopped at the time budget)"] if stopped else []),
            "train_seconds": round(seconds, 1), "step": results["step"],
            "translation": results["translation"]}


def budgeted(flags: list[str], seconds: float) -> bool:
    """Train with the runner until done or `seconds` have passed (then interrupt it: the
    runner keeps its last checkpoint); True if it was stopped."""
    import signal
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "aigc_zoo.run", *flags], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    try:
        _, errors = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        process.communicate()
        return True
    if process.returncode:
        raise SystemExit(f"{' '.join(flags)} failed:\n{errors[-2000:]}")
    return False


def table(rows: list[dict]) -> str:
    lines = ["| run | train s | steps | PSNR | baseline PSNR | SSIM | baseline SSIM | FD "
             "| baseline FD | label agr. | baseline label agr. | target label agr. |",
             "|---" * 12 + "|"]
    for row in rows:
        t = row["translation"]
        model, base, target = t["model"], t.get("baseline", {}), t.get("target", {})

        def cell(values, key, digits):
            return f"{values[key]:.{digits}f}" if key in values else "-"

        lines.append(
            f"| {row['name']} {' '.join(row['flags'])} | {row['train_seconds']:.0f} | "
            f"{row['step']} | {cell(model, 'psnr', 2)} | {cell(base, 'psnr', 2)} | "
            f"{cell(model, 'ssim', 3)} | {cell(base, 'ssim', 3)} | {cell(model, 'fd', 2)} | "
            f"{cell(base, 'fd', 2)} | {cell(model, 'label_agreement', 4)} | "
            f"{cell(base, 'label_agreement', 4)} | {cell(target, 'label_agreement', 4)} |")
    return "\n".join(lines)


def plot(names: list[str], root: pathlib.Path, output: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from aigc_zoo import data, trained

    names = [name for name in names if (root / name / "checkpoints").exists()]
    columns = min(2, len(names))
    rows = (len(names) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(11, 1.75 * rows), dpi=110,
                                squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        run, model = trained.restore(str(root / name))
        target = model.knobs(model.config, model.image_shape).target
        batch = next(iter(data.load(run.dataset, run.eval_split, batch_size=8, training=False,
                                    task=model.task.name, target=target)[0]))
        outputs = model.translate(batch["source"]).numpy()
        source = batch["source"].numpy()
        if model.task.kind == "sr":  # shown blown up to the image size, pixel for pixel
            source = np.kron(source, np.ones((1, model.task.factor, model.task.factor, 1)))
        elif model.task.kind == "inpaint":  # the holes shown grey-blue: mid grey in the image
            source = np.where(source[..., -1:] > 0, 0.0, source[..., :-1])
        # Two rows of four (source, output, target) triplets, a grey gap between triplets.
        gap = np.zeros((source.shape[1], 3, 1), np.float32)
        triplets = [np.concatenate([s, o, t, gap], axis=1) for s, o, t in
                    zip(source, outputs, batch["image"].numpy())]
        grid = np.concatenate([np.concatenate(triplets[:4], axis=1),
                               np.full((3, 4 * triplets[0].shape[1], 1), 0.0, np.float32),
                               np.concatenate(triplets[4:], axis=1)], axis=0)
        ax.imshow((grid[..., 0] + 1) / 2, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        what = "an unpaired target-domain image" if target else "target"
        ax.set_title(f"{name}: source | output | {what}", fontsize=9)
        ax.axis("off")
    figure.tight_layout()
    figure.savefig(output)
    print(f"wrote {output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--root", default=str(ROOT / "runs" / "image_to_image"))
    parser.add_argument("--plot", action="store_true")
    parser.add_argument("--results", default=str(ROOT / "experiments" / "results" /
                                                 "image_to_image.md"))
    parser.add_argument("--figure", default=str(ROOT / "docs" / "images" / "image_to_image.png"))
    args = parser.parse_args()
    root = pathlib.Path(args.root)
    if args.plot:
        plot(args.runs, root, pathlib.Path(args.figure))
        return
    # Rows of earlier invocations are kept (the runs may be measured a few at a time).
    saved = pathlib.Path(args.results).with_suffix(".json")
    rows = json.loads(saved.read_text()) if saved.exists() else {}
    for name in args.runs:
        rows[name] = {**measure(name, root), "machine": f"{platform.node()} "
                      f"({os.cpu_count()} cores)", "date": time.strftime("%Y-%m-%d")}
        print(json.dumps(rows[name]), flush=True)
        saved.write_text(json.dumps(rows, indent=1) + "\n")
    ordered = [rows[name] for name in RUNS if name in rows]
    text = ("# Image-to-image runs on digits\n\n`python experiments/image_to_image.py` "
            "(each row: its machine and date in image_to_image.json); eval on the whole "
            "`test` split, 10,000 digits, unless the flags say otherwise.\n\n"
            + table(ordered) + "\n")
    pathlib.Path(args.results).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
