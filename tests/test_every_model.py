"""Every registered model through the shared harness (tests/harness.py): train steps, generate,
checkpoint, `.keras` file, SavedModel export."""

import pytest

import harness
from aigc_zoo import registry


@pytest.fixture(scope="module", params=registry.list_models())
def trained(request):
    """Each model with its tiny config after two train steps on made-up digits, and the fit's
    history; shared by this file's tests, which only read it."""
    return harness.trained_model(request.param)


@pytest.mark.parametrize("check", harness.ALL_CHECKS)
def test_every_model(trained, check, tmp_path):
    model, history = trained
    harness.run_check(check, model, history, tmp_path)
