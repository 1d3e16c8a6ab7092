"""The installed Keras is one the zoo was checked on: `models/base.py` overrides a private
method of Keras' trainer, which a Keras outside setup.py's range may rename or call otherwise."""

import re

import keras
from packaging import specifiers, version

from conftest import REPO


def _keras_requirement() -> specifiers.SpecifierSet:
    setup = (REPO / "setup.py").read_text()
    match = re.search(r'"keras([<>=!~][^"]*)"', setup)
    assert match, "setup.py pins no Keras range"
    return specifiers.SpecifierSet(match.group(1))


def test_installed_keras_is_inside_the_pinned_range():
    allowed = _keras_requirement()
    installed = version.Version(keras.__version__)
    assert installed in allowed, (
        f"Keras {installed} is outside setup.py's range {allowed}: GenerativeModel overrides "
        "the private Trainer._maybe_symbolic_build; check it still exists and is called as "
        "before (a distributed fit would otherwise skip its first batch), then widen the range")


def test_the_private_method_still_exists_on_keras_model():
    # What the override relies on: Keras' TensorFlow trainer calls this before fit's loop.
    from keras.src.backend.tensorflow import trainer
    assert hasattr(trainer.TensorFlowTrainer, "_maybe_symbolic_build")
