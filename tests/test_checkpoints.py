"""Checkpointer: a damaged index or data file, a foreign model, and variables added later."""

import pytest

from conftest import tiny_model
from aigc_zoo.checkpoints import Checkpointer
from aigc_zoo.errors import UserError


def _vae(**changes):
    return tiny_model("vae", **changes)


@pytest.fixture()
def saved(tmp_path):
    model = _vae()
    model.global_step.assign(7)
    checkpointer = Checkpointer(tmp_path, model)
    checkpointer.save(epoch=1)
    model.global_step.assign(9)
    checkpointer.save(epoch=2)
    return tmp_path


def test_restores_the_newest_checkpoint(saved):
    model = _vae()
    assert Checkpointer(saved, model).restore_latest() == 2
    assert int(model.global_step.numpy()) == 9


def test_an_unreadable_index_falls_back_to_the_newest_file(saved):
    (saved / "checkpoint").write_text("garbage")
    model = _vae()
    assert Checkpointer(saved, model).restore_latest() == 2
    assert int(model.global_step.numpy()) == 9


def _zero_second_half(data_file):
    data = bytearray(data_file.read_bytes())
    data[len(data) // 2:] = bytes(len(data) - len(data) // 2)
    data_file.write_bytes(bytes(data))


def test_a_corrupt_newest_data_file_falls_back_to_the_older_checkpoint(saved, capsys):
    _zero_second_half(next(saved.glob("ckpt-2.data-*")))
    model = _vae()
    checkpointer = Checkpointer(saved, model)
    assert checkpointer.restore_latest() == 1
    assert int(model.global_step.numpy()) == 7
    assert checkpointer.restored_path.endswith("ckpt-1")
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipping checkpoint")


def test_corrupt_data_files_with_no_good_checkpoint_left_are_a_user_error(saved):
    for data_file in saved.glob("ckpt-*.data-*"):
        _zero_second_half(data_file)
    with pytest.raises(UserError, match="ckpt-2 is corrupt .* no other checkpoint"):
        Checkpointer(saved, _vae()).restore_latest()


def test_a_checkpoint_of_another_model_is_refused(saved):
    with pytest.raises(UserError, match="does not match this model"):
        Checkpointer(saved, _vae(latent_dim=5)).restore_latest()


def test_variables_created_after_the_checkpointer_are_not_silently_dropped(tmp_path):
    model = _vae()
    checkpointer = Checkpointer(tmp_path, model)
    model.extra_keras = model.add_weight(shape=(2,), initializer="zeros", name="late")
    with pytest.raises(RuntimeError, match="variables"):
        checkpointer.save(epoch=1)
