"""Shared fixtures: quiet TensorFlow, one prepared copy of the digits dataset per session."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory) -> str:
    """A TFDS data_dir with the full `digits` dataset prepared (about 30 s, once)."""
    from aigc_zoo.data import digits
    directory = str(tmp_path_factory.mktemp("tfds"))
    digits.Digits(data_dir=directory).download_and_prepare()
    return directory
