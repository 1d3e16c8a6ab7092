"""Reference outputs of every model, recorded through the command line only.

A behaviour-preserving refactor of the training pipeline must leave these bit for bit equal:
the trained weights, the samples of `--mode=sample`, the exported signatures' outputs and the
metrics of `--mode=eval`, for a tiny deterministic run of each model.

    # record on the tree to preserve (a separate checkout, its package first on the path):
    cd /tmp/ref_base && PYTHONPATH=/tmp/ref_base /work/main/.venv/bin/python \\
        /work/main/experiments/reference_outputs.py \\
        --record /work/main/experiments/results/reference_outputs.json
    # after the refactor, in /work/main:
    .venv/bin/python experiments/reference_outputs.py \\
        --check experiments/results/reference_outputs.json [--models=vae,ddpm]

The models are driven by `python -m aigc_zoo.run` in subprocesses and their files are read with
TensorFlow alone: the script imports nothing of aigc_zoo, whose internals the refactor may move.
`--check` prints `same` or `DIFFERENT (old -> new)` per case and field and exits 1 on any
difference. Bitwise equality needs the same CPU model (and TensorFlow, Keras) as the record:
`--check` warns when they differ; record the base tree on the checking machine then.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

MODELS = ["vae", "cvae", "gan", "dcgan", "wgan_gp", "sngan", "cgan", "ddpm", "cddpm"]
POINTS_CASES = {"gan": "ring8", "wgan_gp": "grid25"}  # 2D points, mode coverage as eval
FIELDS = ["weights", "samples", "export", "eval"]


def _run(args: list[str], env: dict[str, str], *, check: bool = True
         ) -> subprocess.CompletedProcess:
    """`python ARGS`; with `check`, a failure raises with stderr's last line."""
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    if check and done.returncode:
        raise RuntimeError(f"exit {done.returncode}: {_last_line(done.stderr)}")
    return done


def _cli(args: list[str], env: dict[str, str]) -> str:
    return _run(["-m", "aigc_zoo.run", *args], env).stdout


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _digest(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    return {"sha256": hashlib.sha256(array.tobytes()).hexdigest(),
            "shape": list(array.shape), "dtype": str(array.dtype)}


def _weights(workdir: str) -> dict[str, Any]:
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(f"{workdir}/checkpoints"))
    dtypes = reader.get_variable_to_dtype_map()
    names = sorted(name for name in reader.get_variable_to_shape_map()
                   if "_CHECKPOINTABLE_OBJECT_GRAPH" not in name)
    digest, step = hashlib.sha256(), None
    for name in names:
        value = np.ascontiguousarray(reader.get_tensor(name))
        digest.update(name.encode() + dtypes[name].name.encode() + value.tobytes())
        if "global_step" in name:
            step = int(value)
    return {"sha256": digest.hexdigest(), "num_variables": len(names), "global_step": step}


def _signature_inputs(signature: Any) -> dict[str, Any]:
    """Fixed inputs for a signature, by input name (docs/export.md lists them)."""
    n, inputs = 4, {}
    for name, spec in sorted(signature.structured_input_signature[1].items()):
        shape = [n if size is None else size for size in spec.shape.as_list()]
        # A fresh generator per input, so an input's values do not depend on the others.
        rng = np.random.default_rng(0)
        scalars = {"num_samples": n, "seed": 5, "steps": 3, "guidance": 2.0}
        if name in scalars:
            value = np.asarray(scalars[name])
        elif name == "labels":
            value = np.arange(n)
        elif name == "images":
            value = rng.uniform(-1.0, 1.0, shape)
        elif name == "latents":
            value = rng.standard_normal(shape)
        else:
            raise ValueError(f"no fixed value for input {name!r}")
        inputs[name] = tf.constant(value, dtype=spec.dtype)
    return inputs


def _export(export_dir: str) -> dict[str, Any]:
    loaded = tf.saved_model.load(export_dir)
    results = {}
    for name in sorted(loaded.signatures):
        signature = loaded.signatures[name]
        try:
            outputs = signature(**_signature_inputs(signature))
            results[name] = {key: _digest(outputs[key].numpy()) for key in sorted(outputs)}
        except Exception as error:  # recorded: the check then shows whether it still fails
            results[name] = {"error": f"{type(error).__name__}: {_last_line(str(error))}"}
    return results


def _case(case: str, root: str, data_dir: str, env: dict[str, str]) -> dict[str, Any]:
    model, _, dataset = case.partition("@")
    workdir, export_dir = os.path.join(root, case), os.path.join(root, case + "-export")
    for path in (workdir, export_dir):  # a leftover run would be resumed, not retrained
        shutil.rmtree(path, ignore_errors=True)
    result: dict[str, Any] = {}
    try:
        _cli([f"--model={model}", "--config=tiny", f"--workdir={workdir}",
              f"--data_dir={data_dir}", "--deterministic", "--seed=0"]
             + ([f"--dataset={dataset}"] if dataset else []), env)
        result["weights"] = _weights(workdir)
    except RuntimeError as error:  # nothing else can run without a trained workdir
        return {field: {"error": f"train: {error}"} for field in FIELDS}
    try:
        out = _cli(["--mode=sample", f"--workdir={workdir}", "--num_samples=16", "--seed=3"], env)
        npz = re.findall(r"(\S+\.npz)", out)[-1]
        with np.load(npz) as samples:
            result["samples"] = {"file": os.path.basename(npz), **_digest(samples["images"])}
    except (RuntimeError, IndexError) as error:
        result["samples"] = {"error": str(error)}
    try:
        _cli(["--mode=export", f"--workdir={workdir}", f"--export_dir={export_dir}"], env)
        result["export"] = _export(export_dir)
    except RuntimeError as error:
        result["export"] = {"error": str(error)}
    # --data_dir too: the workdir does not record where the dataset was prepared.
    done = _run(["-m", "aigc_zoo.run", "--mode=eval", f"--workdir={workdir}",
                 f"--data_dir={data_dir}", "--eval_samples=0", "--seed=0"], env, check=False)
    if done.returncode:  # only the VAEs have an evaluation of their own (GANs on 2D points:
        # mode coverage); the others fail in one line, which is recorded
        result["eval"] = {"exit_code": done.returncode, "stderr": _last_line(done.stderr)}
    else:
        with open(os.path.join(workdir, "metrics.json")) as file:
            metrics = json.load(file)  # not the whole file: it holds the date
        result["eval"] = {key: metrics[key] for key in ("metrics", "mode_coverage")
                          if key in metrics}
    return result


def _environment() -> dict[str, Any]:

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None
    status = git("status", "--porcelain", "--untracked-files=no")
    cpu = None
    if os.path.exists("/proc/cpuinfo"):  # platform.processor() is often empty on Linux
        with open("/proc/cpuinfo") as file:
            cpu = next((line.split(":", 1)[1].strip() for line in file
                        if line.startswith("model name")), None)
    return {"git_commit": git("rev-parse", "HEAD"),
            "git_dirty": None if status is None else bool(status),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "processor": platform.processor(), "cpu_model": cpu}


def _changed(old: Any, new: Any) -> tuple[Any, Any]:
    """`old` and `new` cut down to the keys that differ, so a difference reads at a glance."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return old, new
    pairs = {key: _changed(old.get(key), new.get(key))
             for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)}
    return ({key: pair[0] for key, pair in pairs.items()},
            {key: pair[1] for key, pair in pairs.items()})


def main() -> int:
    tf.config.experimental.enable_op_determinism()  # the exported signatures run in-process
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--record", metavar="OUT.json")
    action.add_argument("--check", metavar="REF.json")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma list; gan and wgan_gp bring their 2D-points case along")
    parser.add_argument("--workroot", help="where the runs go (default: a temp dir); its "
                        "<case> folders are replaced")
    parser.add_argument("--data_dir", help="TFDS data dir; digits is prepared there if missing")
    args = parser.parse_args()
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {MODELS}")
    cases = [case for model in models
             for case in [model] + ([f"{model}@{POINTS_CASES[model]}"]
                                    if model in POINTS_CASES else [])]
    root = os.path.abspath(args.workroot or tempfile.mkdtemp(prefix="reference_outputs_"))
    os.makedirs(root, exist_ok=True)
    data_dir = os.path.abspath(args.data_dir or os.path.join(root, "data"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               AIGC_ZOO_CACHE=tempfile.mkdtemp(prefix="cache_", dir=root))
    # Which tree is measured is decided by PYTHONPATH and the cwd; this shows it.
    package = _run(["-c", "import importlib.util as u; print(u.find_spec('aigc_zoo').origin)"],
                   env).stdout.strip()
    print(f"aigc_zoo from {package}; runs in {root}", flush=True)
    if not glob.glob(os.path.join(data_dir, "digits", "*", "dataset_info.json")):
        _run(["-c", "from aigc_zoo.data import digits; "
              f"digits.Digits(data_dir={data_dir!r}).download_and_prepare()"], env)
    reference = None
    if args.check:
        with open(args.check) as file:
            reference = json.load(file)
        recorded = reference["environment"]
        print(f"reference: commit {recorded['git_commit']}, {recorded['date']}")
        here = _environment()
        for key in ("cpu_model", "tensorflow", "keras"):
            # oneDNN and XLA pick their kernels by CPU: on another CPU model (an Intel
            # reference, an AMD machine) graph-mode weights differ in the last bits.
            if recorded.get(key) != here[key]:
                print(f"warning: recorded with {key} {recorded.get(key)!r}, this is "
                      f"{here[key]!r}; bitwise equality holds only on the same; record the "
                      "tree to preserve here and check against that", flush=True)
    results: dict[str, Any] = {}
    started, differences = time.time(), 0
    for case in cases:
        case_start = time.time()
        # Through JSON, so new values compare as the recorded ones were read back.
        results[case] = json.loads(json.dumps(_case(case, root, data_dir, env)))
        print(f"{case}: {time.time() - case_start:.0f} s", flush=True)
        if reference is not None:
            old = reference["cases"].get(case, {})
            for field in FIELDS:
                was, now = _changed(old.get(field), results[case].get(field))
                differences += was != now
                print(f"  {field}: " + ("same" if was == now else f"DIFFERENT ("
                      f"{json.dumps(was, sort_keys=True)} -> {json.dumps(now, sort_keys=True)})"))
    print(f"total: {time.time() - started:.0f} s")
    if args.record:
        record = {"environment": {**_environment(), "aigc_zoo": package,
                                  "wall_time_s": round(time.time() - started)},
                  "cases": results}
        os.makedirs(os.path.dirname(os.path.abspath(args.record)), exist_ok=True)
        with open(args.record, "w") as file:
            json.dump(record, file, indent=1, sort_keys=True)
            file.write("\n")
        print(f"wrote {args.record}")
        return 0
    print(f"{differences} difference(s)" if differences else "all same")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
