"""Reliability through the runner: SIGKILL mid-epoch and resume exactly (`slow`), a kill or a
full disk during a checkpoint write, a diverging run, and bad inputs (one line, nothing lost:
in-process through the runner's `parse` and `execute`; tests/test_run.py checks the exit
status 2 of a subprocess)."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo.errors import UserError
from aigc_zoo.workdir import Workdir
from conftest import (REPO, SMALL_SPLIT, checkpoint_values, cli_command, cli_env, run_cli,
                      run_in_process, snapshot, tiny_model, user_error)

# 200 steps of the tiny VAE take 1.5 s here (3 s beside another test); a checkpoint every 25
# steps leaves the test over a second to see the first one and kill the run inside the epoch.
STEPS_PER_EPOCH = 200
EVERY = 25


# Three runner processes (30 s beside another test); `make test` keeps the resume at an epoch
# boundary (tests/test_run.py) and the kill during a save below; CI runs `make test-slow` too.
@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_ends_bitwise_equal(tmp_path, digits_data_dir):
    flags = ("--config=tiny", f"--data_dir={digits_data_dir}", "--deterministic",
             f"--train_split={SMALL_SPLIT}", f"--steps_per_epoch={STEPS_PER_EPOCH}",
             "--epochs=2", f"--checkpoint_every_steps={EVERY}", "--log_every_steps=50")
    workdir = tmp_path / "killed"
    index = workdir / "checkpoints" / "checkpoint"
    # The uninterrupted run trains beside the one that is killed (and resumed).
    with open(tmp_path / "straight.log", "w+") as straight_log, \
            open(tmp_path / "killed.log", "w") as log:
        straight = subprocess.Popen(cli_command(*flags, f"--workdir={tmp_path / 'straight'}"),
                                    stdout=straight_log, stderr=subprocess.STDOUT,
                                    env=cli_env(), cwd=REPO)
        process = subprocess.Popen(cli_command(*flags, f"--workdir={workdir}"), stdout=log,
                                   stderr=subprocess.STDOUT, env=cli_env(), cwd=REPO)
        try:
            deadline = time.monotonic() + 300
            while not index.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert process.poll() is None, "the run ended before it could be killed"
            # The training holds the workdir's lock, which names it ...
            assert (workdir / "train.lock").read_text().strip() == str(process.pid)
            with pytest.raises(UserError, match=rf"trained by another process \(pid {process.pid}"):
                Workdir(str(workdir)).start(overwrite=False)
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=60) == -signal.SIGKILL
            # ... and the kernel drops when the process dies: the rerun takes it.
            resumed = run_cli(*flags, f"--workdir={workdir}", check=False)
            if straight.wait(timeout=600) != 0:
                straight_log.seek(0)
                pytest.fail(f"the uninterrupted run failed:\n{straight_log.read()[-2000:]}")
        finally:
            for running in (process, straight):
                if running.poll() is None:
                    running.kill()
                    running.wait()

    assert resumed.returncode == 0, resumed.stderr[-2000:]
    match = re.search(r"resuming from \S+ at step (\d+) \(epoch 1, step (\d+) of "
                      rf"{STEPS_PER_EPOCH}\)",
                      resumed.stdout)
    assert match, resumed.stdout[-2000:]
    assert 0 < int(match.group(2)) < STEPS_PER_EPOCH  # mid-epoch: the epoch was not redone
    # The interrupted epoch still had its epoch-end callbacks: checkpoint, samples.
    assert (workdir / "samples" / "epoch_0001.png").exists()

    expected = checkpoint_values(tmp_path / "straight" / "checkpoints")
    got = checkpoint_values(workdir / "checkpoints")
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(expected[name], got[name], err_msg=name)


_KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys
    import tensorflow as tf
    from aigc_zoo import registry
    from aigc_zoo.checkpoints import Checkpointer

    vae = registry.get_model("vae")
    model = vae(vae.tiny_config(), image_shape=(28, 28, 1), num_classes=10)
    model.compile(jit_compile=False)
    checkpointer = Checkpointer(sys.argv[1], model)
    model.global_step.assign(5)
    checkpointer.save(epoch=1)
    # The second save dies when its files are written but before the `checkpoint` index
    # names them: the moment a crash could leave a newer, unrecorded checkpoint.
    def die(self):
        os.kill(os.getpid(), signal.SIGKILL)
    tf.train.CheckpointManager._record_state = die
    model.global_step.assign(9)
    for variable in model.trainable_variables:
        variable.assign(variable * 0 + 7)
    checkpointer.save(epoch=2)
""")


def test_a_kill_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    from aigc_zoo.checkpoints import Checkpointer

    directory = tmp_path / "checkpoints"
    script = tmp_path / "kill_during_save.py"
    script.write_text(_KILL_DURING_SAVE)
    result = subprocess.run([sys.executable, str(script), str(directory)], env=cli_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert (directory / "ckpt-2.index").exists()  # written, never committed

    def restored():
        model = tiny_model("vae")
        checkpointer = Checkpointer(directory, model)
        return checkpointer.restore_latest(), checkpointer, model

    epoch, checkpointer, model = restored()
    assert (epoch, int(model.global_step.numpy())) == (1, 5)
    assert checkpointer.restored_path.endswith("ckpt-1")

    # Without the index, the newest files on disk are tried; a truncated (half-written) newer
    # checkpoint is skipped with a warning, never restored.
    (directory / "checkpoint").unlink()
    data = next(directory.glob("ckpt-2.data-*"))
    data.write_bytes(data.read_bytes()[:len(data.read_bytes()) // 2])
    epoch, checkpointer, model = restored()
    assert (epoch, int(model.global_step.numpy())) == (1, 5)
    assert not np.any(model.trainable_variables[0].numpy() == 7)


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous(tmp_path,
                                                                      digits_data_dir,
                                                                      monkeypatch):
    """ENOSPC injected in-process: the real save writes its files, then the data file is cut
    short and TensorFlow's error for a full disk is raised, as its C++ writer would."""
    from aigc_zoo import config as config_lib
    from aigc_zoo import registry, request, training, trained
    from aigc_zoo.errors import UserError

    original = tf.train.CheckpointManager.save
    calls = []

    def save_on_a_full_disk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) < 2:
            return original(self, *args, **kwargs)
        number = int(self._checkpoint.save_counter.numpy()) + 1
        prefix = os.path.join(self.directory, f"ckpt-{number}")
        self._checkpoint.write(prefix)
        data = pathlib.Path(next(iter(tf.io.gfile.glob(prefix + ".data-*"))))
        data.write_bytes(data.read_bytes()[:100])
        raise tf.errors.ResourceExhaustedError(
            None, None, f"{data}; No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save_on_a_full_disk)
    vae = config_lib.override(registry.get_model("vae").tiny_config(),
                              ["steps_per_epoch=8", "epochs=1"])
    run_ = request.Run(model="vae", dataset="digits", config=vae, train_split=SMALL_SPLIT)
    workdir = tmp_path / "w"
    with pytest.raises(UserError) as raised:
        training.train(run_, workdir=str(workdir), data_dir=digits_data_dir, verbose=0,
                    checkpoint_every_steps=4)
    message = str(raised.value)
    assert "\n" not in message
    assert "cannot write checkpoint ckpt-2" in message and "no space left on device" in message
    assert "ckpt-1, is kept" in message
    names = sorted(os.listdir(workdir / "checkpoints"))
    assert names == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"], names
    monkeypatch.undo()
    _, model = trained.restore(str(workdir))
    assert int(model.global_step.numpy()) == 4


# 100 steps (10 s); tests/test_run.py's divergence through the runner is in `make test`.
@pytest.mark.slow
def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_good_checkpoint(
        tmp_path, digits_data_dir):
    # Adam at 0.07 on the tiny Gaussian VAE diverges within a few dozen steps (steps 25-28 on the
    # 2-core test machine); mid-epoch checkpoints come every 5 steps before that.
    from aigc_zoo import run
    from aigc_zoo.errors import TrainingDiverged
    with pytest.raises(TrainingDiverged) as raised:
        run.execute(run.parse([
            "aigc_zoo", "--config=tiny", f"--data_dir={digits_data_dir}", f"--workdir={tmp_path}",
            "--set", "likelihood=gaussian", "--set", "learning_rate=0.07",
            "--steps_per_epoch=100", "--epochs=2", "--checkpoint_every_steps=5"]))
    line = str(raised.value)
    assert "\n" not in line
    # The VAE runs 4 steps per compiled call by default, so the line names a range of steps.
    match = re.search(r"non-finite loss at steps? (\d+)(?:-\d+)? \((.*)\); the last good "
                      r"checkpoint, (\S+), is kept", line)
    assert match, line
    step, values, kept = int(match.group(1)), match.group(2), match.group(3)
    assert re.search(r"loss=(nan|inf)", values), values
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")) == kept
    saved = checkpoint_values(kept)
    assert all(np.all(np.isfinite(value)) for value in saved.values()
               if np.issubdtype(np.asarray(value).dtype, np.floating))
    from aigc_zoo import trained
    _, model = trained.restore(str(tmp_path))
    assert 0 < int(model.global_step.numpy()) < step  # nothing saved at or after the bad step


# -- bad inputs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def existing(tmp_path_factory, digits_data_dir):
    """A trained tiny VAE workdir, the flags that trained it, and a file that is no folder."""
    root = tmp_path_factory.mktemp("existing")
    workdir = root / "run"
    flags = ["--config=tiny", f"--data_dir={digits_data_dir}", f"--workdir={workdir}",
             "--steps_per_epoch=4", "--epochs=1", f"--train_split={SMALL_SPLIT}"]
    run_in_process(*flags)
    (root / "a_file").write_text("not a folder")
    return workdir, flags, root / "a_file"


@pytest.mark.parametrize("extra, fragment", [
    (["--checkpoint_every_steps=-1"], "checkpoint_every_steps=-1"),
    (["--keep_checkpoints=0"], "keep_checkpoints=0"),
    (["--steps_per_epoch=4", "--steps_per_execution=3"], "not a multiple"),
    (["--steps_per_epoch=4", "--steps_per_execution=3", "--overwrite"], "not a multiple"),
    (["--log_every_steps=0"], "log_every_steps"),
    (["--sample_every_epochs=-1"], "sample_every_epochs=-1"),
    (["--seed=-1"], "seed=-1"),
    (["--image_size=0"], "image_size=0"),
    (["--data_dir=FILE"], "--data_dir"),
    (["--classifier_dir=FILE", "--eval_every_epochs=1"], "--classifier_dir"),
    (["--extractor=inception", "--inception_weights=/no/such.h5", "--eval_every_epochs=1"],
     "--inception_weights"),
    (["--train_split=train+test"], "bad split"),
    (["--set", "latent_dim=7"], "holds a different run"),
    (["--mode=sample", "--num_samples=0"], "num_samples=0"),
    (["--mode=export", "--export_dir="], "--export_dir is empty"),
    (["--mode=eval", "--eval_split=test[", "--eval_samples=0"], "bad split"),
])
def test_bad_inputs_are_one_line_and_change_nothing(extra, fragment, existing):
    workdir, flags, a_file = existing
    before = snapshot(workdir)
    assert fragment in user_error(*flags, *[flag.replace("FILE", str(a_file)) for flag in extra])
    assert snapshot(workdir) == before


def test_a_second_trainer_in_a_workdir_is_one_line_naming_the_first(existing):
    workdir, flags, _ = existing
    holder = Workdir(str(workdir))
    holder.start(overwrite=False)  # what a training process does first, here in this one
    try:
        before = snapshot(workdir)
        for extra in ([], ["--overwrite"], ["--epochs=2"]):
            assert f"being trained by another process (pid {os.getpid()}" in user_error(
                *flags, *extra)
            assert snapshot(workdir) == before
        # Reading a trained workdir takes no lock.
        assert "samples" in run_in_process(*flags, "--mode=sample", "--num_samples=2")
    finally:
        holder.release()
    assert "already trained 1 epochs" in run_in_process(*flags)


def test_default_steps_per_execution_always_divides_the_epoch():
    import dataclasses

    from aigc_zoo import registry, request, training

    def make_run(model, **changes):
        config = registry.get_model(model).default_config("digits")
        return request.Run(model=model, dataset="digits",
                           config=dataclasses.replace(config, **changes))

    shape = (28, 28, 1)
    dcgan = make_run("dcgan")  # 60,000 / 64 = 937 batches, rounded down to a multiple of 4
    assert training.epoch_length(dcgan, 60_000, shape) == 936
    assert training.default_steps_per_execution(dcgan, shape, 936) == 4
    assert training.default_steps_per_execution(dcgan, shape, 6) == 3  # explicit steps_per_epoch
    assert training.epoch_length(make_run("dcgan", steps_per_epoch=937), 60_000, shape) == 937
    assert training.epoch_length(dcgan, 130, shape) == 2  # fewer batches than steps per call: kept
    ddpm = make_run("ddpm")  # diffusion: one step per call, its own 500-step epochs
    assert training.epoch_length(ddpm, 60_000, shape) == 500
    assert training.default_steps_per_execution(ddpm, shape, 500) == 1
    for model in registry.list_models():
        run = make_run(model)
        steps = training.epoch_length(run, 60_000, shape)
        assert steps % training.default_steps_per_execution(run, shape, steps) == 0


def test_a_run_keeps_its_epoch_length_and_older_records_are_refused(tmp_path,
                                                                    digits_data_dir):
    import json

    # 176 examples in batches of 16: 11 steps, rounded down to 8 for the VAE's 4 steps per call.
    workdir = tmp_path / "vae"
    flags = ("--model=vae", "--config=tiny", "--set", "steps_per_epoch=0",
             "--train_split=train[:176]", f"--data_dir={digits_data_dir}", f"--workdir={workdir}")
    run_in_process(*flags, "--epochs=1")
    config_path = workdir / "config.json"
    assert json.loads(config_path.read_text())["epoch_steps"] == 8
    assert "step 8 (epoch 2, step 0 of 8)" in run_in_process(*flags, "--epochs=2")

    # A workdir written before aigc_zoo 0.1 recorded no epoch length: refused in one line.
    saved = json.loads(config_path.read_text())
    del saved["epoch_steps"]
    config_path.write_text(json.dumps(saved))
    before = snapshot(workdir)
    assert "is not an aigc_zoo run record (no 'epoch_steps'; workdirs written before aigc_zoo " \
        "0.1 do not load" in user_error(*flags, "--epochs=3")
    assert snapshot(workdir) == before


def test_a_corrupt_checkpoint_is_one_line_and_left_alone(existing, tmp_path):
    workdir, flags, _ = existing
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(workdir), str(copy)], check=True)
    flags = [flag for flag in flags if not flag.startswith("--workdir")]
    data = next((copy / "checkpoints").glob("ckpt-1.data-*"))
    data.write_bytes(bytes(len(data.read_bytes())))  # zeroed: checksums fail
    before = snapshot(copy)
    assert "is corrupt" in user_error(*flags, f"--workdir={copy}", "--epochs=2")
    assert snapshot(copy) == before
