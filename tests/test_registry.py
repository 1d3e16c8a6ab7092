"""The model registry and the package's import-time backend check."""

import os
import subprocess
import sys

import pytest

from aigc_zoo import registry
from aigc_zoo.errors import UserError
from aigc_zoo.models import base
from conftest import REPO


def test_every_family_is_registered_under_its_name():
    assert {"vae", "cvae"} <= set(registry.list_models())
    for name in registry.list_models():
        model_class = registry.get_model(name)
        assert issubclass(model_class, base.GenerativeModel)
        assert model_class.registered_name == name
        model_class.tiny_config().validate()
        model_class.default_config().validate()


def test_unknown_model_names_the_choices():
    with pytest.raises(UserError, match="unknown model 'nope'.*vae"):
        registry.get_model("nope")


def test_a_name_registered_twice_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        @registry.register_model("vae")
        class Impostor(base.GenerativeModel):
            pass


def test_another_keras_backend_fails_at_import_with_one_sentence():
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", "import aigc_zoo"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode != 0
    assert "ImportError: aigc_zoo runs on Keras' TensorFlow backend, but KERAS_BACKEND='jax'" \
        in result.stderr
