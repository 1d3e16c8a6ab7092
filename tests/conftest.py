"""Shared fixtures: quiet TensorFlow, one prepared copy of the digits dataset and one trained
digits domain classifier per session, and a private classifier cache."""

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


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Points `$AIGC_ZOO_CACHE` (inherited by runner subprocesses) at a temporary folder, so
    that no test reads or writes the user's `~/.cache/aigc_zoo`."""
    previous = os.environ.get("AIGC_ZOO_CACHE")
    os.environ["AIGC_ZOO_CACHE"] = str(tmp_path_factory.mktemp("aigc_zoo_cache"))
    yield os.environ["AIGC_ZOO_CACHE"]
    if previous is None:
        del os.environ["AIGC_ZOO_CACHE"]
    else:
        os.environ["AIGC_ZOO_CACHE"] = previous


@pytest.fixture(scope="session")
def digits_classifier_dir(digits_data_dir, tmp_path_factory) -> str:
    """A classifier cache holding the `digits` domain classifier, trained once (about 30 s)."""
    from aigc_zoo.metrics import classifier
    directory = str(tmp_path_factory.mktemp("classifiers"))
    classifier.load("digits", data_dir=digits_data_dir, cache_dir=directory, verbose=False)
    return directory
