"""Every file the runner reads back, damaged: the run record, the checkpoint index and data,
the cached domain classifier, and TF_CONFIG. Each ends in one `error:` line (a `UserError`,
exit status 2) with the workdir untouched, or, where an older good state exists, in one
warning line and a run from that state. In-process through the runner's `parse` and
`execute`, on a tiny VAE trained 2 epochs of 4 steps on 64 digits."""

import json
import pathlib
import shutil

import pytest

from conftest import run_in_process, user_error

STEPS = 4  # per epoch


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_data_dir):
    """A workdir with two epochs' checkpoints (ckpt-1 at step 4, ckpt-2 at step 8) and
    pictures, and the flags that trained it (without --workdir and --epochs)."""
    workdir = tmp_path_factory.mktemp("state") / "run"
    flags = ["--config=tiny", f"--data_dir={digits_data_dir}", "--train_split=train[:64]",
             f"--steps_per_epoch={STEPS}", "--log_every_steps=1000"]
    run_in_process(*flags, f"--workdir={workdir}", "--epochs=2")
    return workdir, flags


@pytest.fixture()
def copy(trained, tmp_path):
    """A fresh copy of the trained workdir (times kept) and a runner for it."""
    source, flags = trained
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)  # copy2: contents and modification times

    def runner(*extra):
        return [*flags, f"--workdir={workdir}", *extra]
    return workdir, runner


def state(folder) -> dict[str, tuple[bytes | None, int]]:
    """Every file and folder under `folder` (and itself) with its bytes (None for a folder)
    and modification time (ns): a folder's changes when an entry is added or removed."""
    folder = pathlib.Path(folder)
    return {str(path.relative_to(folder)): (path.read_bytes() if path.is_file() else None,
                                            path.stat().st_mtime_ns)
            for path in [folder, *sorted(folder.rglob("*"))]}


def _data_file(workdir, number):
    return next((workdir / "checkpoints").glob(f"ckpt-{number}.data-*"))


def _cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep(len(data))])


def _warnings(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" not in err, err
    return [line for line in err.splitlines() if line.startswith("warning:")]


# -- the run record ---------------------------------------------------------------------------

def _edit_record(change):
    def damage(workdir):
        path = workdir / "config.json"
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return damage


def _set(*keys, value):
    def change(record):
        target = record
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
        return record
    return change


def _drop(*keys):
    def change(record):
        target = record
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
        return record
    return change


def _write_bytes(data: bytes):
    def damage(workdir):
        (workdir / "config.json").write_bytes(data)
    return damage


RECORDS = {
    "a list": (_edit_record(lambda record: [record]), "a JSON list, not an object"),
    "a string for an int": (_edit_record(_set("seed", value="0")), "'seed' is '0'"),
    "a string in the config": (_edit_record(_set("config", "latent_dim", value="8")),
                               "latent_dim='8' is not of type int"),
    "a float for an int": (_edit_record(_set("epoch_steps", value=4.0)), "'epoch_steps' is 4.0"),
    "a bool for an int": (_edit_record(_set("config", "batch_size", value=True)),
                          "batch_size=True"),
    "a missing key": (_edit_record(_drop("dataset")), "no 'dataset'"),
    "a missing config key": (_edit_record(_drop("config", "latent_dim")),
                             "lacks the VAEConfig fields ['latent_dim']"),
    "an unknown key": (_edit_record(_set("colour", value="red")), "unknown fields ['colour']"),
    "a bad shape": (_edit_record(_set("image_shape", value=[28, -1, 1])), "'image_shape' is"),
    "an unknown model": (_edit_record(_set("model", value="nope")), "unknown model 'nope'"),
    "a bad stage": (_edit_record(_set("stages", value={"autoencoder": {"model": 1}})),
                    "not a stage description"),
    "binary garbage": (_write_bytes(bytes(range(256)) * 4), "cannot read"),
    "empty": (_write_bytes(b""), "cannot read"),
    "nested too deep": (_write_bytes(b"[" * 100_000), "cannot read"),
}


@pytest.mark.parametrize("mode", [("--epochs=3",), ("--mode=sample", "--num_samples=2")],
                         ids=["train", "sample"])
@pytest.mark.parametrize("case", sorted(RECORDS))
def test_a_damaged_run_record_is_one_line_naming_it_and_changes_nothing(case, mode, copy):
    workdir, runner = copy
    damage, fragment = RECORDS[case]
    damage(workdir)
    before = state(workdir)
    message = user_error(*runner(*mode))
    assert fragment in message
    assert str(workdir / "config.json") in message and "--overwrite" in message, message
    assert state(workdir) == before


def test_overwrite_starts_again_over_a_damaged_record(copy):
    workdir, runner = copy
    (workdir / "config.json").write_bytes(b"\x00\xff garbage")
    run_in_process(*runner("--epochs=1", "--overwrite"))
    assert json.loads((workdir / "config.json").read_text())["epoch_steps"] == STEPS


# -- checkpoints ------------------------------------------------------------------------------

def test_a_binary_index_is_one_warning_and_the_newest_checkpoint_resumes(copy, capsys):
    workdir, runner = copy
    (workdir / "checkpoints" / "checkpoint").write_bytes(bytes(range(128, 256)) * 3)
    capsys.readouterr()
    printed = run_in_process(*runner("--epochs=3"))
    warnings = _warnings(capsys)
    assert len(warnings) == 1 and "checkpoint is damaged" in warnings[0], warnings
    assert f"ckpt-2 at step {2 * STEPS}" in printed
    # The index was rewritten: it names the new checkpoint, which a later run resumes from.
    assert 'model_checkpoint_path: "ckpt-3"' in (workdir / "checkpoints" / "checkpoint"
                                                 ).read_text()
    assert "already trained 3 epochs" in run_in_process(*runner("--epochs=3"))


@pytest.mark.parametrize("keep", [lambda n: n // 2, lambda n: n - 1],
                         ids=["half", "one byte short"])
def test_a_truncated_newest_checkpoint_falls_back_to_the_older_one(keep, copy, capsys):
    workdir, runner = copy
    _cut(_data_file(workdir, 2), keep)
    capsys.readouterr()
    printed = run_in_process(*runner("--epochs=3"))
    warnings = _warnings(capsys)
    assert len(warnings) == 1 and "skipping checkpoint" in warnings[0], warnings
    assert "ckpt-2" in warnings[0] and "using ckpt-1" in warnings[0]
    assert f"resuming from {workdir / 'checkpoints' / 'ckpt-1'} at step {STEPS}" in printed
    # Epochs 2 and 3 were trained again; the damaged ckpt-2 was overwritten by a good one.
    from aigc_zoo import checkpoints
    assert checkpoints.choose(str(workdir / "checkpoints")).endswith("ckpt-3")
    assert checkpoints.unreadable(str(workdir / "checkpoints" / "ckpt-2")) is None
    assert not _warnings(capsys)


def test_a_checkpoint_whose_files_are_gone_falls_back_too(copy, capsys):
    workdir, runner = copy
    for path in (workdir / "checkpoints").glob("ckpt-2.*"):
        path.unlink()
    capsys.readouterr()
    assert f"at step {STEPS}" in run_in_process(*runner("--epochs=3"))
    assert len(_warnings(capsys)) == 1


def test_sampling_falls_back_without_writing_to_the_checkpoints(copy, capsys):
    workdir, runner = copy
    _cut(_data_file(workdir, 2), lambda n: n // 3)
    before = state(workdir / "checkpoints")
    capsys.readouterr()
    run_in_process(*runner("--mode=sample", "--num_samples=2"))
    assert len(_warnings(capsys)) == 1
    assert (workdir / "samples" / "samples_step4_seed0.png").exists()  # ckpt-1's step
    assert state(workdir / "checkpoints") == before


@pytest.mark.parametrize("mode", [("--epochs=3",), ("--mode=export",)], ids=["train", "export"])
def test_no_readable_checkpoint_left_is_one_line_and_changes_nothing(mode, copy, capsys):
    workdir, runner = copy
    _cut(_data_file(workdir, 2), lambda n: n // 2)
    _data_file(workdir, 1).write_bytes(b"\x00" * 64)
    before = state(workdir)
    capsys.readouterr()
    message = user_error(*runner(*mode))
    assert "ckpt-2 is corrupt" in message and "--overwrite" in message, message
    assert not _warnings(capsys)  # the error line is the only line
    assert state(workdir) == before


# -- epoch-end outputs ------------------------------------------------------------------------

@pytest.mark.parametrize("epochs", [3, 2], ids=["resumed", "already trained"])
def test_a_missing_epoch_picture_is_drawn_again_on_resume(epochs, copy):
    workdir, runner = copy
    picture = workdir / "samples" / "epoch_0002.png"
    drawn = picture.read_bytes()
    picture.unlink()  # as if killed after epoch 2's checkpoint, before its picture
    run_in_process(*runner(f"--epochs={epochs}"))
    assert picture.read_bytes() == drawn  # the weights are epoch 2's: the same picture
    assert (workdir / "samples" / "epoch_0003.png").exists() == (epochs == 3)


def test_a_picture_not_due_is_not_drawn(copy):
    workdir, runner = copy
    (workdir / "samples" / "epoch_0002.png").unlink()
    run_in_process(*runner("--epochs=2", "--sample_every_epochs=3"))
    assert not (workdir / "samples" / "epoch_0002.png").exists()


# -- the cached domain classifier -------------------------------------------------------------

@pytest.fixture(scope="module")
def cached_classifier(digits_data_dir, tmp_path_factory):
    """A classifier cache trained quickly (a few steps on a few images), kept whole."""
    cache = tmp_path_factory.mktemp("classifiers")
    _load_classifier(digits_data_dir, str(cache))
    return cache


def _load_classifier(data_dir: str, cache_dir: str):
    from aigc_zoo.metrics import classifier
    original = classifier.MIN_TRAIN_STEPS
    classifier.MIN_TRAIN_STEPS = 1  # its accuracy does not matter here, its files do
    try:
        return classifier.load("digits", train_split="train[:256]", test_split="test[:100]",
                               data_dir=data_dir, cache_dir=cache_dir, verbose=False)
    finally:
        classifier.MIN_TRAIN_STEPS = original


@pytest.fixture()
def small_classifier(cached_classifier, digits_data_dir, tmp_path):
    """A copy of the cached classifier's folder and a loader that reads (or retrains) it."""
    cache = tmp_path / "classifiers"
    shutil.copytree(cached_classifier, cache)
    (path,) = [folder for folder in cache.iterdir() if folder.is_dir()]
    return path, lambda: _load_classifier(digits_data_dir, str(cache))


def _flip_middle(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


CLASSIFIER_DAMAGE = {
    "info garbage": lambda path: (path / "info.json").write_bytes(b"\xff\xfe{"),
    "info wrong type": lambda path: (path / "info.json").write_text(json.dumps(
        {**json.loads((path / "info.json").read_text()), "feature_std": "wide"})),
    "weights truncated": lambda path: _cut(path / "weights.weights.h5", lambda n: n // 2),
    "weights bit flipped": lambda path: _flip_middle(path / "weights.weights.h5"),
}


# One damage to each file in `make test`; every kind in `make test-slow` (each retrains, 3 s).
@pytest.mark.parametrize("case", [
    case if case in ("info garbage", "weights truncated") else pytest.param(
        case, marks=pytest.mark.slow) for case in sorted(CLASSIFIER_DAMAGE)])
def test_a_damaged_cached_classifier_is_trained_again_with_one_warning(case, small_classifier,
                                                                       capsys):
    path, load = small_classifier
    CLASSIFIER_DAMAGE[case](path)
    capsys.readouterr()
    again = load()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: the cached domain classifier"), err
    assert str(path) in lines[0] and "training it again" in lines[0]
    assert again.path == str(path) and 0 <= again.test_accuracy <= 1
    # The cache is whole again: the next load reads it, silently.
    assert "weights_sha256" in json.loads((path / "info.json").read_text())
    assert load().test_accuracy == again.test_accuracy
    assert not capsys.readouterr().err.strip()


def test_an_intact_cached_classifier_is_read_not_trained_again(small_classifier, capsys):
    path, load = small_classifier
    before = state(path)
    capsys.readouterr()
    assert load().path == str(path)
    assert not capsys.readouterr().err.strip()
    assert state(path) == before


# -- TF_CONFIG --------------------------------------------------------------------------------

WORKERS = {"worker": ["localhost:12345", "localhost:12346"]}
TF_CONFIGS = {
    "index beyond the cluster": ({"cluster": WORKERS, "task": {"type": "worker", "index": 2}},
                                 "task index 2 is not in 0..1"),
    "negative index": ({"cluster": WORKERS, "task": {"type": "worker", "index": -1}},
                       "task index -1"),
    "index a string": ({"cluster": WORKERS, "task": {"type": "worker", "index": "0"}},
                       "task index '0'"),
    "unknown task type": ({"cluster": WORKERS, "task": {"type": "boss", "index": 0}},
                          "task type 'boss' does not train"),
    "task type not in the cluster": ({"cluster": WORKERS, "task": {"type": "chief",
                                                                  "index": 0}},
                                     "task type 'chief' is not in the cluster"),
    "unknown type in the cluster": ({"cluster": {**WORKERS, "boss": ["h:1"]},
                                     "task": {"type": "worker", "index": 0}},
                                    "unknown task type 'boss'"),
    "missing cluster": ({"task": {"type": "worker", "index": 0}}, "no 'cluster'"),
    "missing task": ({"cluster": WORKERS}, "no 'task'"),
    "empty worker list": ({"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}},
                          "not a non-empty list"),
    "two chiefs": ({"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief",
                                                                   "index": 0}}, "2 chiefs"),
    "not JSON": ("{cluster", "TF_CONFIG is not JSON"),
}


@pytest.mark.parametrize("case", sorted(TF_CONFIGS))
def test_an_inconsistent_tf_config_is_one_line_before_anything_is_created(case, trained,
                                                                          tmp_path,
                                                                          monkeypatch):
    value, fragment = TF_CONFIGS[case]
    monkeypatch.setenv("TF_CONFIG", value if isinstance(value, str) else json.dumps(value))
    _, flags = trained
    workdir = tmp_path / "new"
    message = user_error(*flags, f"--workdir={workdir}", "--strategy=multiworker")
    assert fragment in message and "TF_CONFIG" in message, message
    assert not workdir.exists()


def test_a_consistent_tf_config_passes_the_check():
    from aigc_zoo import distribute
    for task in ({"type": "worker", "index": 1}, {"type": "chief", "index": 0}):
        distribute.check_tf_config(json.dumps(
            {"cluster": {"chief": ["localhost:1"], **WORKERS}, "task": task}))
    distribute.check_tf_config("")  # unset: this process alone
    with pytest.raises(ValueError):
        distribute.check_tf_config(json.dumps({"cluster": WORKERS,
                                               "task": {"type": "worker", "index": 5}}))


def test_record_remedy_is_named_once():
    # The remedy ends every damaged-record line, once (also after the pre-0.1 reason).
    from aigc_zoo.errors import UserError
    from aigc_zoo.workdir import RunRecord
    with pytest.raises(UserError) as raised:
        RunRecord.from_json({"model": "vae"}, path="x/config.json")
    message = str(raised.value)
    assert message.startswith("x/config.json is not an aigc_zoo run record (no 'dataset'")
    assert message.count("--overwrite") == 1
