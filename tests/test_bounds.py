"""Bounded work and memory: samples drawn in batches and written in shards as they go, every
size checked against what it means before anything is created, and a fuzz test of the whole
validation layer (random flags and `--set` values of every type, in-process: one `UserError`
line or a valid request, never another exception)."""

import json
import typing

import numpy as np
import pytest

from aigc_zoo import config as config_lib
from aigc_zoo import registry, run, shards
from aigc_zoo.errors import UserError
from aigc_zoo.request import Run, TrainRequest
from conftest import run_in_process, snapshot, user_error


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_data_dir):
    """A tiny VAE (batch 16) trained 2 steps, and the flags that name its workdir."""
    workdir = tmp_path_factory.mktemp("bounds") / "run"
    flags = [f"--workdir={workdir}", f"--data_dir={digits_data_dir}"]
    run_in_process("--config=tiny", "--train_split=train[:64]", "--steps_per_epoch=2",
                   "--epochs=1", "--log_every_steps=1000", "--sample_every_epochs=0", *flags)
    return workdir, flags


def _samples(path):
    parts = list(shards.read(str(path)))
    return np.concatenate([part["images"] for part in parts]), parts


def test_samples_are_drawn_in_batches_and_written_in_shards(trained, monkeypatch):
    workdir, flags = trained
    # Shards of 8 digits, so that 40 samples (batches of 16) make 5 of them.
    monkeypatch.setattr(shards, "SHARD_BYTES", 8 * 28 * 28 * 4)
    printed = run_in_process(*flags, "--mode=sample", "--num_samples=40", "--seed=3")
    folder = workdir / "samples" / "samples_step2_seed3"
    index = json.loads((folder / "index.json").read_text())
    assert index["complete"] and index["num_samples"] == 40 and index["shard_size"] == 8
    assert [(s["start"], s["count"]) for s in index["shards"]] == [(i, 8) for i in range(0, 40, 8)]
    assert printed.count("sampled ") == 3 and "sampled 40/40" in printed  # per batch of 16
    images, parts = _samples(folder)
    assert images.shape == (40, 28, 28, 1) and len(parts) == 5
    assert (workdir / "samples" / "samples_step2_seed3.png").exists()

    # Batch b is drawn with the seed (seed, b): the first samples do not depend on how many
    # are asked for, and a single-shard run writes one .npz of the same arrays.
    monkeypatch.setattr(shards, "SHARD_BYTES", shards.SHARD_BYTES * 100)
    run_in_process(*flags, "--mode=sample", "--num_samples=20", "--seed=3")
    single, _ = _samples(workdir / "samples" / "samples_step2_seed3.npz")
    np.testing.assert_array_equal(single, images[:20])
    assert not np.array_equal(images[:16], images[16:32])  # batches differ


def test_an_unfinished_set_of_shards_is_refused_on_read(tmp_path):
    writer = shards.Writer(str(tmp_path / "s"), 5, (1,))
    writer.shard_size, writer.sharded, writer.path = 2, True, str(tmp_path / "s")
    writer.add(np.zeros([3, 1]))  # one shard written, the run "killed" before the end
    with pytest.raises(UserError, match="unfinished"):
        list(shards.read(writer.path))
    writer.add(np.ones([2, 1]))
    assert writer.close() == str(tmp_path / "s")
    assert [len(part["images"]) for part in shards.read(writer.path)] == [2, 2, 1]


def test_samples_beyond_the_free_disk_space_are_refused_before_drawing(trained, monkeypatch):
    import shutil
    workdir, flags = trained
    before = snapshot(workdir)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 10**6))
    assert "0.3 GiB" in user_error(*flags, "--mode=sample", "--num_samples=100000")
    assert snapshot(workdir) == before


def test_evaluation_sizes_are_bounded_once_the_image_shape_is_known(trained):
    workdir, flags = trained
    before = snapshot(workdir)
    message = user_error(*flags, "--mode=eval", "--eval_samples=0",
                         "--set", "eval_importance_samples=100000")
    assert "eval_importance_samples=100000" in message and "2**31 - 1" in message
    message = user_error(*flags, "--mode=eval", "--eval_samples=1000000000000")
    assert "sample quality holds the features" in message and "28x28x1" in message
    assert snapshot(workdir) == before


@pytest.mark.parametrize("flags, fragment", [
    (["--image_size=100000"], "image_size=100000"),
    (["--epochs=9223372036854775808"], "int64"),
    (["--steps_per_epoch=4611686018427387904", "--epochs=2"], "int64 step count"),
    (["--set", "learning_rate=inf"], "expected a finite number"),
    (["--set", "beta=nan"], "expected a finite number"),
    (["--set", "learning_rate=1e400"], "expected a finite number"),
    (["--set", "filters=100000,2"], "3x3 kernel"),
    (["--num_cpu_devices=1000"], "num_cpu_devices=1000"),
    (["--mode=sample", "--num_samples=99999999999999999999"], "int64"),
    (["--seed=-99999999999999999999"], "int64"),
    (["--mode=eval", "--eval_samples=99999999999999999999"], "int64"),
])
def test_sizes_beyond_their_meaning_are_one_line(flags, fragment):
    with pytest.raises(UserError, match=fragment.replace("*", r"\*")) as error:
        run.parse(["aigc_zoo", *flags])
    assert "\n" not in str(error.value)


def test_a_batch_too_large_for_the_images_is_refused_before_the_workdir(tmp_path,
                                                                          digits_data_dir):
    message = user_error("--config=tiny", f"--data_dir={digits_data_dir}",
                         f"--workdir={tmp_path / 'run'}", "--batch_size=10000000")
    assert "batch_size=10000000" in message and "28x28x1" in message
    assert not (tmp_path / "run").exists()


# -- the fuzz test ----------------------------------------------------------------------------

INTS = ["0", "1", "-1", "2", "7", "64", "1000", "2147483647", "2147483648", "-2147483649",
        "9223372036854775807", "9223372036854775808", "-9223372036854775809", "10" * 40,
        "1e3", "0x10", "٣", " 5 ", "+3", "1_000"]
FLOATS = ["0", "0.5", "-0.0", "1e-3", "1", "2.5", "1e308", "1e400", "-1e400", "inf", "-inf",
          "nan", "NaN", "infinity", "1e-400", "5e-324", ".", "1,5"]
TEXTS = ["", " ", "a", "é", "日本語", "🙂", "a=b", "=", ",", "[]", "()", "none", "True", "x" * 300,
         "..", "/", "-", "--", "\t", "zero", "ü,ß", "1,2", "(1, 2)", "[3]", "1,,2", ","]
MODES = ["train"] * 9 + ["sample"] * 3 + ["eval"] * 3 + ["export"] * 3 + ["bogus", ""]


def _value(rng, kind):
    pools = {"int": INTS, "float": FLOATS + INTS[:8], "text": TEXTS}
    pool = pools[kind] if rng.random() < 0.85 else INTS + FLOATS + TEXTS
    return pool[rng.integers(len(pool))]


def _kind(hint):
    return {int: "int", float: "float"}.get(hint, "text")


def _random_command(rng, models, tmp_path):
    """A random command line: a mode, a model, some flags of every type, some `--set`s."""
    model = models[rng.integers(len(models))]
    argv = [f"--model={model}", f"--mode={MODES[rng.integers(len(MODES))]}"]
    if rng.random() < 0.8:
        argv.append(f"--workdir={tmp_path / 'w'}")
    for name in rng.choice(_FLAG_NAMES, size=rng.integers(0, 5), replace=False):
        flag = run.FLAGS[name]
        kind = {"int": "int", "bool": "bool"}.get(flag.flag_type(), "text")
        choices = getattr(flag.parser, "enum_values", None)
        if kind == "bool":
            argv.append(rng.choice([f"--{name}", f"--no{name}", f"--{name}={_value(rng, 'text')}"]))
        elif choices and rng.random() < 0.75:  # mostly valid choices, so later checks run
            argv.append(f"--{name}={choices[rng.integers(len(choices))]}")
        else:
            argv.append(f"--{name}={_value(rng, kind)}")
    config_class = registry.get_model(model).config_class
    types = typing.get_type_hints(config_class)
    # Outside training only sampling fields may change: mostly those, so their checks run.
    names = (sorted(config_lib.sampling_fields(config_class)) or list(types)
             if "--mode=train" not in argv and rng.random() < 0.8 else list(types))
    for _ in range(rng.integers(0, 4)):
        name = names[rng.integers(len(names))] if rng.random() < 0.9 else _value(rng, "text")
        kind = _kind(types.get(name))
        argv += ["--set", f"{name}={_value(rng, kind)}" if rng.random() < 0.95 else name]
    return argv


_FLAG_NAMES = sorted(name for name in ["image_size", "config", "epochs", "steps_per_epoch",
                                       "batch_size", "seed", "jit_compile", "steps_per_execution",
                                       "log_every_steps", "sample_every_epochs", "num_samples",
                                       "labels", "train_split", "eval_split", "eval_samples",
                                       "extractor", "eval_every_epochs", "strategy",
                                       "num_cpu_devices", "precision", "checkpoint_every_steps",
                                       "keep_checkpoints", "deterministic", "overwrite",
                                       "dataset", "data_dir", "export_dir", "tpu"])


def _integers(value):
    if isinstance(value, dict):
        return [n for item in value.values() for n in _integers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _integers(item)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


def _check_description(request):
    """What a valid request must be: a run that survives its own JSON (finite numbers only),
    and `--set`s of a trained run that apply to its config."""
    if isinstance(request, TrainRequest):
        text = json.dumps(request.run.to_json(), allow_nan=False)  # no inf or nan
        assert Run.from_json(json.loads(text)) == request.run
        assert all(-2**63 <= n < 2**63 for n in _integers(json.loads(text)))  # int64
        request.run.check_sizes((28, 28, 1))
        return
    if getattr(request, "overrides", ()):
        model = registry.get_model(request.expected_model or "vae")
        config = config_lib.override_sampling(model.default_config(), request.overrides,
                                              mode="sample")
        Run(model=model.registered_name, dataset=model.default_dataset,
            config=config).check_sizes((28, 28, 1))


def test_fuzz_the_validation_layer_gives_one_line_or_a_valid_request(tmp_path):
    rng = np.random.default_rng(20)
    models = registry.list_models()
    outcomes = {"valid": 0, "refused": 0}
    for _ in range(400):
        argv = _random_command(rng, models, tmp_path)
        try:
            _check_description(run.parse(["aigc_zoo", *argv]))
            outcomes["valid"] += 1
        except UserError as error:
            message = str(error)
            assert message.strip() and "\n" not in message, (argv, message)
            outcomes["refused"] += 1
        except Exception as error:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{argv} escaped as {type(error).__name__}: {error}")
    assert min(outcomes.values()) > 20, outcomes  # both outcomes are exercised
    assert not list(tmp_path.iterdir())  # nothing was created


def test_labels_continue_across_batches():
    from aigc_zoo.request import SampleRequest
    given = SampleRequest("w", num_samples=7, labels=(4, 5, 6))
    assert given.labels_for(2, 6, 10) == [6, 4, 5, 6]  # repeated from the first sample on
    default = SampleRequest("w", num_samples=30)
    assert default.labels_for(8, 13, 10) == [8, 9, 0, 1, 2]  # 0, 1, 2, ... across batches
    assert default.labels_for(0, 3, None) is None  # unconditional
