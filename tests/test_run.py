"""The runner end to end: train, sample, a toy dataset and the exit statuses in subprocesses,
as a user runs it; reruns of a workdir, eval and bad inputs in-process, through the runner's
own `parse` and `execute` (`run_in_process`, `user_error`)."""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import (SHARED_MNIST, SMALL_SPLIT, checkpoint_values, one_line_error, run_cli,
                      run_in_process, snapshot, tensorboard_events, user_error)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_data_dir):
    """A tiny VAE trained 2 epochs of 3 steps on digits, in its own workdir, one step per
    compiled call (so every step is logged). Its checkpoints after the 2 epochs are copied to
    `checkpoints_epoch2` beside it (the tests go on training in the workdir)."""
    workdir = tmp_path_factory.mktemp("run") / "vae"
    flags = ("--model=vae", "--config=tiny", f"--data_dir={digits_data_dir}",
             f"--workdir={workdir}", "--steps_per_epoch=3", "--log_every_steps=1",
             "--steps_per_execution=1")
    run_cli(*flags, "--epochs=2")
    shutil.copytree(workdir / "checkpoints", workdir.parent / "checkpoints_epoch2")
    return workdir, flags


def test_training_writes_config_checkpoints_samples_and_events(trained, digits_data_dir):
    workdir, _ = trained
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"] == "vae" and saved["dataset"] == "digits"
    assert saved["image_shape"] == [28, 28, 1] and saved["num_classes"] == 10
    assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith("ckpt-2")
    assert (workdir / "samples" / "epoch_0001.png").stat().st_size > 0
    assert (workdir / "samples" / "epoch_0002.png").stat().st_size > 0

    events = tensorboard_events(workdir / "tensorboard")
    tags = set(events.Tags()["tensors"])
    for tag in ("train/loss", "train/reconstruction", "train/kl", "epoch/loss",
                "perf/images_per_second", "learning_rate/vae", "samples"):
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
    assert [e.step for e in events.Tensors("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("train/loss"))
    # An image summary holds [width, height, PNG bytes]; the grid is 8 x 8 digits of 28 pixels.
    width, height, png = tf.make_ndarray(events.Tensors("samples")[-1].tensor_proto)
    assert (int(width), int(height)) == (224, 224)
    assert tf.io.decode_png(png).shape == (224, 224, 1)
    # The VAE encodes: 16 test digits in rows of 8, each row above its reconstructions' row.
    width, height, png = tf.make_ndarray(events.Tensors("reconstructions")[-1].tensor_proto)
    assert (int(width), int(height)) == (224, 112)
    pixels = tf.io.decode_png(png).numpy()
    from aigc_zoo import data, plots
    test_digits = next(iter(data.load("digits", "test", batch_size=8, training=False,
                                      data_dir=digits_data_dir)[0]))["image"]
    np.testing.assert_array_equal(pixels[:28], plots.to_grid(test_digits, columns=8))
    assert not np.array_equal(pixels[28:56], pixels[:28])
    hparams_tags = [t for t in tags if t.startswith("_hparams_")]
    assert hparams_tags, "no hparams plugin summary"


def test_sample_every_epochs_draws_every_nth_picture_or_none(tmp_path, digits_data_dir):
    flags = ("--config=tiny", f"--data_dir={digits_data_dir}", f"--workdir={tmp_path}",
             "--steps_per_epoch=1", f"--train_split={SMALL_SPLIT}")
    run_in_process(*flags, "--epochs=3", "--sample_every_epochs=2")
    assert [p.name for p in (tmp_path / "samples").glob("epoch_*.png")] == ["epoch_0002.png"]
    run_in_process(*flags, "--epochs=4", "--sample_every_epochs=0")
    assert [p.name for p in (tmp_path / "samples").glob("epoch_*.png")] == ["epoch_0002.png"]
    events = tensorboard_events(tmp_path / "tensorboard")
    assert [e.step for e in events.Tensors("samples")] == [2]
    assert [e.step for e in events.Tensors("epoch/loss")] == [1, 2, 3, 4]


def test_rerun_with_more_epochs_resumes_the_step_count(trained):
    workdir, flags = trained
    run_in_process(*flags, "--epochs=3")
    events = tensorboard_events(workdir / "tensorboard")
    steps = sorted({e.step for e in events.Tensors("train/loss")})
    assert steps[-1] == 9 and steps[:6] == [1, 2, 3, 4, 5, 6]
    assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith("ckpt-3")
    assert "already trained 3 epochs (asked for 3)" in run_in_process(*flags, "--epochs=3")
    assert "already trained 3 epochs (asked for 1)" in run_in_process(*flags, "--epochs=1")
    assert json.loads((workdir / "config.json").read_text())["config"]["epochs"] == 3


def test_sample_mode_writes_a_deterministic_grid_and_npz(trained):
    workdir, flags = trained
    run_cli(*flags, "--mode=sample", "--num_samples=10", "--seed=5")
    first = np.load(next((workdir / "samples").glob("samples_*_seed5.npz")))["images"]
    assert first.shape == (10, 28, 28, 1)
    assert first.min() >= -1.0 and first.max() <= 1.0
    assert list((workdir / "samples").glob("samples_*_seed5.png"))
    run_in_process(*flags, "--mode=sample", "--num_samples=10", "--seed=5")
    again = np.load(next((workdir / "samples").glob("samples_*_seed5.npz")))["images"]
    np.testing.assert_array_equal(first, again)


def test_eval_mode_writes_metrics_json(trained, digits_classifier_dir):
    workdir, flags = trained
    printed = run_in_process(*flags, "--mode=eval", "--eval_samples=100",
                             f"--classifier_dir={digits_classifier_dir}")
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["model"] == "vae"
    assert metrics["num_samples"] == 100 and metrics["extractor"] == "classifier"
    values = metrics["metrics"]
    assert values["num_examples"] == 64 and values["importance_samples"] == 4
    assert values["nll_nats"] > 0 and np.isfinite(values["nll_bits_per_dim"])
    assert 0 < values["reconstruction_ssim"] <= 1
    quality = metrics["sample_quality"]
    assert quality["extractor_info"]["test_accuracy"] >= 0.97
    assert quality["num_samples"] == quality["num_real"] == quality["num_reference"] == 100
    for row in ("model", "real_vs_real"):
        assert {"fd", "kid", "kid_std", "is", "is_std", "precision", "recall", "density",
                "coverage"} <= set(quality[row])
        assert all(np.isfinite(value) for value in quality[row].values())
    assert "nll_bits_per_dim" in printed and "real vs real" in printed
    tags = tensorboard_events(workdir / "tensorboard" / "eval").Tags()["tensors"]
    for tag in ("eval/nll_nats", "eval/reconstruction_ssim", "eval/classifier/fd",
                "eval/classifier/kid", "eval/classifier/real_vs_real/fd"):
        assert tag in tags, tags

    # --eval_samples=0 skips sample quality; the model's own metrics remain.
    run_in_process(*flags, "--mode=eval", "--eval_samples=0")
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert "sample_quality" not in metrics and metrics["metrics"]["nll_nats"] > 0


def test_eval_mode_takes_eval_overrides_and_refuses_training_ones(trained):
    workdir, flags = trained
    run_in_process(*flags, "--mode=eval", "--eval_samples=0", "--eval_split=test[:40]",
                   "--set", "eval_importance_samples=2")
    values = json.loads((workdir / "metrics.json").read_text())["metrics"]
    assert values["importance_samples"] == 2 and values["num_examples"] == 40
    assert ("--mode=eval can only change sampling and evaluation config fields "
            "(eval_examples, eval_importance_samples), not 'latent_dim'") in user_error(
        *flags, "--mode=eval", "--eval_samples=0", "--set", "latent_dim=3")
    assert "--mode=sample can only change" in user_error(
        *flags, "--mode=sample", "--set", "beta=2")
    assert "eval_importance_samples=0" in user_error(
        *flags, "--mode=eval", "--eval_samples=0", "--set", "eval_importance_samples=0")


def test_sampling_fields_change_on_resume_without_making_another_run(tmp_path, digits_data_dir):
    flags = ("--config=tiny", f"--data_dir={digits_data_dir}", f"--workdir={tmp_path}",
             "--steps_per_epoch=1", "--epochs=1", "--sample_every_epochs=0",
             f"--train_split={SMALL_SPLIT}")
    run_in_process(*flags)
    run_in_process(*flags, "--epochs=2", "--set", "eval_importance_samples=3")
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["config"]["eval_importance_samples"] == 3 and record["config"]["epochs"] == 2
    assert "holds a different run" in user_error(*flags, "--epochs=3", "--set", "latent_dim=3")


def test_sample_mode_takes_labels_and_records_them_in_the_npz(tmp_path, digits_data_dir):
    flags = ("--model=cvae", "--config=tiny", f"--data_dir={digits_data_dir}",
             f"--workdir={tmp_path}", "--steps_per_epoch=1", "--epochs=1",
             "--sample_every_epochs=0", f"--train_split={SMALL_SPLIT}")
    run_in_process(*flags)
    run_in_process(*flags, "--mode=sample", "--num_samples=5", "--labels=7")
    with np.load(next(tmp_path.glob("samples/samples_*_seed0.npz"))) as saved:
        assert saved["images"].shape == (5, 28, 28, 1) and list(saved["labels"]) == [7] * 5
    run_in_process(*flags, "--mode=sample", "--num_samples=5", "--labels=1,2", "--seed=1")
    with np.load(next(tmp_path.glob("samples/samples_*_seed1.npz"))) as saved:
        assert list(saved["labels"]) == [1, 2, 1, 2, 1]
    run_in_process(*flags, "--mode=sample", "--num_samples=3", "--seed=2")
    with np.load(next(tmp_path.glob("samples/samples_*_seed2.npz"))) as saved:
        assert list(saved["labels"]) == [0, 1, 2]  # the default: cycling
    assert "labels must be in [0, 10)" in user_error(*flags, "--mode=sample", "--labels=10")
    assert "expected integers" in user_error(*flags, "--mode=sample", "--labels=seven")
    assert "--labels is for --mode=sample" in user_error(*flags, "--labels=3")


def test_overwrite_refuses_a_broken_command_first_then_starts_a_fresh_run(tmp_path,
                                                                         digits_data_dir):
    flags = ("--config=tiny", f"--data_dir={digits_data_dir}", f"--workdir={tmp_path}",
             "--steps_per_epoch=2", "--epochs=1", f"--train_split={SMALL_SPLIT}")
    run_in_process(*flags)
    before = snapshot(tmp_path)
    # 30 is not divisible by 4: refused after the new run is built, before anything is cleared.
    assert "not divisible" in user_error(*flags, "--overwrite", "--image_size=30")
    assert snapshot(tmp_path) == before
    run_in_process(*flags, "--set", "latent_dim=3", "--overwrite")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["latent_dim"] == 3
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-1")


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(trained, tmp_path):
    workdir, flags = trained
    run_in_process(*flags, f"--workdir={tmp_path}", "--epochs=1")
    run_in_process(*flags, f"--workdir={tmp_path}", "--epochs=2")
    straight = checkpoint_values(workdir.parent / "checkpoints_epoch2")
    resumed = checkpoint_values(tmp_path / "checkpoints")
    assert straight.keys() == resumed.keys()
    # The object graph names the Python objects (Keras numbers layers per process: conv2d_23
    # here, conv2d in the runner's own process); every value is compared.
    for name in set(straight) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}:
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)


def test_divergence_stops_with_one_line_and_exit_1(tmp_path, digits_data_dir):
    result = run_cli("--config=tiny", f"--data_dir={digits_data_dir}", f"--workdir={tmp_path}",
                     "--set", "likelihood=gaussian", "--set", "learning_rate=1e9",
                     "--steps_per_epoch=20", "--epochs=2", f"--train_split={SMALL_SPLIT}",
                     check=False)
    one_line_error(result, "training diverged", status=1)
    assert "no checkpoint was written" in result.stderr
    assert not list((tmp_path / "checkpoints").glob("ckpt-*.index"))


@pytest.mark.parametrize("flags, fragment", [
    (["--model=nope"], "unknown model 'nope'"),
    (["--dataset=nope"], "unknown dataset 'nope'"),
    (["--batch_size=0"], "batch_size=0"),
    (["--epochs=many"], "--epochs=many"),
    (["--set", "nope=1"], "unknown config field 'nope'"),
    (["--set", "likelihood=poisson"], "likelihood='poisson'"),
    (["--set", "beta=-1"], "beta=-1"),
    (["--dataset=idx:/no/such/dir"], "/no/such/dir"),
    (["--dataset=folder:/no/such/dir"], "/no/such/dir"),
    (["--mode=sample", "--workdir=/no/such/workdir"], "/no/such/workdir"),
    (["--mode=eval", "--workdir=/no/such/workdir"], "/no/such/workdir"),
    (["--steps_per_execution=0"], "steps_per_execution"),
    (["--mode=sample", "--model=cvae", "--workdir=VAE_RUN"], "holds a 'vae' run, not 'cvae'"),
    (["--mode=eval", "--workdir=VAE_RUN", "--extractor=inception",
      "--inception_weights=/no/such/weights.h5"], "--inception_weights=/no/such/weights.h5"),
    (["--mode=eval", "--workdir=VAE_RUN", "--eval_samples=5"], "eval_samples=5"),
    (["--mode=sample", "--workdir=VAE_RUN", "--labels=3"], "vae is unconditional"),
    (["--extractor=vgg"], "--extractor=vgg"),
    (["stray"], "unexpected arguments"),
])
def test_user_errors_are_one_line_and_write_nothing(flags, fragment, tmp_path, trained):
    flags = [flag.replace("VAE_RUN", str(trained[0])) for flag in flags]
    assert fragment in user_error(f"--workdir={tmp_path / 'w'}", *flags)
    assert not (tmp_path / "w").exists()


def test_a_bad_flag_ends_the_process_with_one_line_and_exit_2():
    one_line_error(run_cli("--model=nope", check=False), "unknown model 'nope'")


def test_a_foreign_config_json_is_a_user_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model": "vae"}')
    assert "is not an aigc_zoo run record" in user_error("--mode=sample", f"--workdir={tmp_path}")
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_offline_tfds_dataset_is_one_line_through_the_runner(tmp_path):
    from aigc_zoo import data, network
    from aigc_zoo.errors import UserError
    try:
        network.require_connection(*data._TFDS_HOSTS["cifar10"], message="offline")
    except UserError:
        pass
    else:
        pytest.skip("this machine reaches cifar10's download host; test_data covers the path")
    assert "--dataset=digits" in user_error("--config=tiny", "--dataset=cifar10",
                                            f"--data_dir={tmp_path}", f"--workdir={tmp_path / 'w'}")
    assert not (tmp_path / "w").exists()


def test_unwritable_workdir_is_a_user_error(tmp_path, digits_data_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert "cannot create workdir" in user_error("--config=tiny", f"--data_dir={digits_data_dir}",
                                                 f"--workdir={blocker / 'run'}")


@pytest.mark.slow  # a process for the help text (7 s); the bad-flag process stays
def test_help_lists_models_and_datasets():
    result = run_cli("--help")
    for name in ("vae", "cvae", "digits", "mnist", "cifar10", "celeb_a", "idx:<dir>",
                 "folder:<dir>"):
        assert name in result.stdout


@pytest.mark.skipif(not SHARED_MNIST.exists(),
                    reason="../shared/data/mnist is only beside CI checkouts")
def test_trains_on_real_mnist_idx_files(tmp_path):
    run_in_process("--config=tiny", f"--dataset=idx:{SHARED_MNIST}", "--train_split=test[:9000]",
                   "--eval_split=test[9000:]", f"--workdir={tmp_path}", "--steps_per_epoch=2")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["num_classes"] == 10 and saved["image_shape"] == [28, 28, 1]
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert pathlib.Path(latest + ".index").exists()


@pytest.mark.slow  # a GAN run and its evaluation (15 s); CI runs `make test-slow` too
def test_toy_dataset_run_logs_mode_coverage_scatters_and_evaluates(tmp_path):
    workdir = tmp_path / "wgan"
    flags = ("--model=wgan_gp", "--dataset=ring8", "--config=tiny", f"--workdir={workdir}")
    assert "modes covered" in run_in_process(*flags, "--steps_per_epoch=3", "--epochs=2",
                                             "--log_every_steps=1")
    assert (workdir / "samples" / "epoch_0002.png").stat().st_size > 0
    eval_events = tensorboard_events(workdir / "tensorboard" / "eval")
    for tag in ("eval/modes_covered", "eval/high_quality_share"):
        assert [e.step for e in eval_events.Tensors(tag)] == [3, 6]
    train_events = tensorboard_events(workdir / "tensorboard")
    assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake",
            "train/gradient_penalty", "samples"} <= set(train_events.Tags()["tensors"])
    # The default steps per call: the largest divisor of the 3-step epoch up to the GANs' 4,
    # so Keras calls the logger once per 3 steps.
    assert [e.step for e in train_events.Tensors("train/d_loss")] == [3, 6]

    assert "modes covered" in run_in_process("--mode=eval", f"--workdir={workdir}")
    metrics = json.loads((workdir / "metrics.json").read_text())
    coverage = metrics["mode_coverage"]
    assert coverage["num_modes"] == 8 and coverage["num_samples"] == 2500
    assert 0 <= coverage["modes_covered"] <= 8 and "sample_quality" not in metrics

    run_in_process("--mode=sample", f"--workdir={workdir}", "--num_samples=100")
    npz = np.load(next((workdir / "samples").glob("samples_step6_seed0.npz")))
    assert npz["images"].shape == (100, 2)

    before = snapshot(workdir)
    assert "points" in user_error(*flags, "--image_size=28", "--overwrite")
    assert snapshot(workdir) == before


def test_interleave_rows_alternates_originals_and_their_reconstructions():
    from aigc_zoo import plots
    originals = np.arange(32)[:, None, None, None] * np.ones((1, 2, 2, 1))
    pairs = plots.interleave_rows(originals, -originals)
    assert pairs.shape == (64, 2, 2, 1)
    rows = pairs[:, 0, 0, 0].reshape(8, 8)  # rows of the 8-column grid
    np.testing.assert_array_equal(rows[0], np.arange(8))
    np.testing.assert_array_equal(rows[1], -np.arange(8))
    np.testing.assert_array_equal(rows[6], np.arange(24, 32))
    np.testing.assert_array_equal(rows[7], -np.arange(24, 32))
