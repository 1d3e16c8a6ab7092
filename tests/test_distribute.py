"""tf.distribute and mixed precision: replicas give the single-device result, workers agree,
bfloat16 learns, and bad scaling flags are one-line errors.

Logical CPU devices and multi-worker collectives must be configured before TensorFlow
initialises its devices, so those runs happen in fresh subprocesses.
"""

import contextlib
import json
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from conftest import REPO, SMALL_SPLIT, cli_command, cli_env, user_error
from aigc_zoo import distribute, registry, request, training
from aigc_zoo.errors import UserError

# Trains each named model three epochs of one step, on one device and with MirroredStrategy on
# two logical CPU devices, with the same global batch and seed; prints losses per step and
# weights.
_EQUIVALENCE = textwrap.dedent("""
    import dataclasses, json, sys, tempfile
    import keras
    from aigc_zoo import distribute, registry, request, training
    distribute.split_cpu(2)
    mirrored = distribute.make_strategy("mirrored", num_cpu_devices=2)
    assert mirrored.num_replicas_in_sync == 2
    data_dir, split, workroot, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    results = {}
    for name in names:
        config = dataclasses.replace(registry.get_model(name).tiny_config(), epochs=3,
                                     steps_per_epoch=1)
        # The data order is what both sides must share, so a small split serves.
        run = request.Run(model=name, dataset="digits", config=config, seed=3,
                          train_split=split)
        for label in ("single", "mirrored"):
            keras.utils.set_random_seed(3)  # the data order depends on the global seed state
            model = training.train(run, workdir=tempfile.mkdtemp(dir=workroot),
                                   data_dir=data_dir, verbose=0,
                                   sample_every_epochs=0,  # pictures not compared
                                   strategy=mirrored if label == "mirrored" else None)
            results[f"{name}/{label}"] = {"history": model.history.history,
                                          "weights": [w.numpy().tolist() for w in model.weights]}
    if "dcgan" in names:
        # On a CPU kind where XLA is dcgan's default, two CPU replicas still train in graph
        # mode (XLA cannot run a step whose variables live on two devices), and asking for
        # XLA there is refused.
        import os
        from aigc_zoo.errors import UserError
        os.environ["AIGC_ZOO_CPU_KIND"] = "avx2"
        config = dataclasses.replace(registry.get_model("dcgan").tiny_config(), epochs=1,
                                     steps_per_epoch=1)
        xla = {}
        run = request.Run(model="dcgan", dataset="digits", config=config, seed=3,
                          train_split=split)
        for jit in ("auto", True):
            try:
                model = training.train(run, workdir=tempfile.mkdtemp(dir=workroot),
                                       data_dir=data_dir, verbose=0, sample_every_epochs=0,
                                       strategy=mirrored, jit_compile=jit)
                xla[str(jit)] = model.jit_compile
            except UserError as error:
                xla[str(jit)] = str(error)
        results["xla"] = xla
    print("RESULTS " + json.dumps(results))
""")


# vqvae: its k-means, EMA codebook and restarts use replica-summed and gathered values;
# dcgan: two update groups and batch norm; ddpm: one group, per-example noise draws and an EMA
# (the vae's step has nothing replica-sensitive that ddpm's lacks). ddpm's process (20 s of
# tracing) runs in `make test-slow`, which CI runs too.
@pytest.mark.parametrize("names", [("vqvae", "dcgan"),
                                   pytest.param(("ddpm",), marks=pytest.mark.slow)])
def test_mirrored_on_two_cpu_devices_matches_one_device(names, digits_data_dir, tmp_path):
    finished = subprocess.run([sys.executable, "-c", _EQUIVALENCE, digits_data_dir,
                               SMALL_SPLIT, str(tmp_path), *names],
                              capture_output=True, text=True, env=cli_env(), cwd=REPO,
                              timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    line = next(x for x in finished.stdout.splitlines() if x.startswith("RESULTS "))
    results = json.loads(line[len("RESULTS "):])
    if "dcgan" in names:
        assert results["xla"]["auto"] is False
        assert "jit_compile=true cannot train on 2 CPU replicas" in results["xla"]["True"]
    for name in names:
        single, mirrored = results[f"{name}/single"], results[f"{name}/mirrored"]
        assert single["history"].keys() == mirrored["history"].keys()
        for key, values in single["history"].items():
            assert len(values) == 3  # one value per train step
            np.testing.assert_allclose(mirrored["history"][key], values, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name} {key}")
        # Weights (batch-norm statistics and EMA copies included) after three steps.
        for a, b in zip(single["weights"], mirrored["weights"], strict=True):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5,
                                       err_msg=name)
        # The step changed the weights, so equal weights are not trivially equal.
        assert single["history"][next(iter(single["history"]))][0] != \
            single["history"][next(iter(single["history"]))][-1]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    with contextlib.ExitStack() as stack:
        for s in sockets:
            stack.enter_context(s)
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]


def _run_workers(workdir, data_dir, scratch, *, epochs):
    """Two runner processes of one MultiWorkerMirroredStrategy cluster on localhost."""
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    processes = []
    try:
        for index in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                "index": index}})
            env = cli_env(TF_CONFIG=tf_config, TMPDIR=str(scratch[index]))
            processes.append(subprocess.Popen(
                cli_command("--model=dcgan", "--config=tiny", "--strategy=multiworker",
                            f"--workdir={workdir}", f"--data_dir={data_dir}",
                            f"--epochs={epochs}", "--steps_per_epoch=2", "--batch_size=8",
                            f"--train_split={SMALL_SPLIT}"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO))
        outputs = [process.communicate(timeout=300) for process in processes]
    finally:
        for process in processes:  # always: a worker left alone waits for its peer forever
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    digests = []
    for index, (stdout, _) in enumerate(outputs):
        line = next(x for x in stdout.splitlines() if "weights digest" in x)
        assert line.startswith(f"worker {index} of 2:"), line
        digests.append(line.split()[-1])
    return digests


# A cluster of two runner processes, twice (37 s beside another test); the mirrored
# equivalence above stays in `make test`, and CI runs `make test-slow` too.
@pytest.mark.slow
def test_two_workers_agree_only_the_chief_writes_and_both_resume(digits_data_dir, tmp_path):
    workdir = tmp_path / "run"
    scratch = [tmp_path / "tmp0", tmp_path / "tmp1"]
    for folder in scratch:
        folder.mkdir()
    first = _run_workers(workdir, digits_data_dir, scratch, epochs=1)
    assert first[0] == first[1]
    checkpoints = workdir / "checkpoints"
    assert (checkpoints / "ckpt-1.index").exists()
    # Only the chief wrote TensorBoard events; the other worker's temporary folder is gone.
    assert len(list((workdir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert not any(scratch[1].iterdir())
    # Both restore the chief's checkpoint and continue in step.
    second = _run_workers(workdir, digits_data_dir, scratch, epochs=2)
    assert second[0] == second[1] != first[0]
    assert (checkpoints / "ckpt-2.index").exists()
    config = json.loads((workdir / "config.json").read_text())
    assert config["config"]["epochs"] == 2 and config["precision"] == "float32"


def test_mixed_bfloat16_trains_to_a_finite_decreasing_loss(digits_data_dir, tmp_path):
    model_class = registry.get_model("vae")
    config = model_class.tiny_config()
    config.epochs, config.steps_per_epoch = 4, 2
    run = request.Run(model="vae", dataset="digits", config=config, precision="mixed_bfloat16",
                      train_split=SMALL_SPLIT)
    model = training.train(run, workdir=str(tmp_path), data_dir=digits_data_dir, verbose=0)
    losses = model.history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    assert keras.mixed_precision.global_policy().name == "float32"  # not leaked
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["precision"] == "mixed_bfloat16"
    # Precision is part of the run: the same workdir refuses another one.
    other = request.Run(model="vae", dataset="digits", config=config, train_split=SMALL_SPLIT)
    with pytest.raises(UserError, match="precision"):
        training.train(other, workdir=str(tmp_path), data_dir=digits_data_dir, verbose=0)


@pytest.mark.slow  # 10 s; tests/test_gan.py's float16 check is in `make test`
def test_mixed_float16_scales_each_update_groups_loss(digits_data_dir, tmp_path):
    config = registry.get_model("wgan_gp").tiny_config()
    config.steps_per_epoch = 2
    run = request.Run(model="wgan_gp", dataset="digits", config=config, precision="mixed_float16",
                      train_split=SMALL_SPLIT)
    model = training.train(run, workdir=str(tmp_path), data_dir=digits_data_dir, verbose=0)
    assert all(isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
               for optimizer in model.optimizers.values())
    values = {key: values[-1] for key, values in model.history.history.items()}
    assert "gradient_penalty" in values and all(np.isfinite(list(values.values()))), values


def test_strategy_errors_in_process():
    with pytest.raises(UserError, match="needs --tpu"):
        distribute.make_strategy("tpu")
    with pytest.raises(UserError, match="only used with --strategy=tpu"):
        distribute.make_strategy("default", tpu="local")
    with pytest.raises(UserError, match="num_cpu_devices=0"):
        distribute.split_cpu(0)
    with pytest.raises(UserError, match="precision"):
        distribute.set_precision("float64")


@pytest.mark.parametrize("flags, fragment", [
    (["--num_cpu_devices=0"], "num_cpu_devices=0"),
    (["--strategy=tpu", "--tpu=local"], "no TPU reachable at --tpu=local"),
])
def test_runner_scaling_flag_errors_are_one_line(flags, fragment, tmp_path):
    assert fragment in user_error("--model=vae", "--config=tiny",
                                  f"--workdir={tmp_path / 'run'}", *flags)
    assert not (tmp_path / "run").exists()
