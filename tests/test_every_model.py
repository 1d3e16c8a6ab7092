"""Every registered model through the shared harness (tests/harness.py): train steps, generate,
checkpoint, `.keras` file, SavedModel export."""

import pytest

import harness
from aigc_zoo import registry

# Models whose family's code runs through the harness in `make test` as a sibling (cvae,
# cddpm, cpixelcnn: the conditional model is the unconditional one plus its labels; cgan and
# dcgan for gan.py, whose losses, gradient penalty and spectral norm tests/test_gan.py checks
# for every GAN; dalle, a vqgpt subclass with a text encoder, whose class token
# tests/test_vqgpt.py checks): these go through the harness in `make test-slow`, which CI runs
# too, so that `make test` keeps within its 8 minutes. A new model runs in `make test`.
SIBLINGS_IN_MAKE_TEST = {"vae": "cvae", "ddpm": "cddpm", "pixelcnn": "cpixelcnn",
                         "gan": "cgan", "wgan_gp": "cgan", "sngan": "cgan", "vqgpt": "dalle"}


@pytest.fixture(scope="module", params=[
    pytest.param(name, marks=pytest.mark.slow) if name in SIBLINGS_IN_MAKE_TEST else name
    for name in registry.list_models()])
def trained(request):
    """Each model with its tiny config after two train steps on made-up digits, and the fit's
    history; shared by this file's tests, which only read it."""
    return harness.trained_model(request.param)


@pytest.mark.parametrize("check", harness.ALL_CHECKS)
def test_every_model(trained, check, tmp_path):
    model, history = trained
    harness.run_check(check, model, history, tmp_path)


def test_each_model_in_make_test_slow_has_its_sibling_in_make_test():
    models = set(registry.list_models())
    assert set(SIBLINGS_IN_MAKE_TEST) <= models
    assert set(SIBLINGS_IN_MAKE_TEST.values()) <= models - set(SIBLINGS_IN_MAKE_TEST)
