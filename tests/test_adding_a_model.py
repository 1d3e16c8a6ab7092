"""The model family of docs/adding_a_model.md, taken from the page's code and run through the
shared harness (tests/harness.py), as every model of the zoo is: the page's example works."""

import importlib.util
import pathlib
import re
import sys

import pytest

import harness
from aigc_zoo import registry

PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "adding_a_model.md"


def _page_module(folder):
    """The page's first Python block (its whole model file), imported as the module
    `docs_rae` from a file of its own (AutoGraph reads the source of what it converts)."""
    code = re.search(r"```python\n(.*?)```", PAGE.read_text(), re.S).group(1)
    path = folder / "docs_rae.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("docs_rae", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)  # registers "rae"
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    module = _page_module(tmp_path_factory.mktemp("page"))
    try:
        assert registry.get_model("rae") is module.RAE
        yield harness.trained_model("rae")
    finally:
        registry.unregister_model("rae")
        sys.modules.pop("docs_rae", None)


@pytest.mark.parametrize("check", harness.ALL_CHECKS)
def test_the_pages_model_passes_the_harness(trained, check, tmp_path):
    model, history = trained
    harness.run_check(check, model, history, tmp_path)


def test_the_pages_model_declares_what_it_can(trained):
    model, _ = trained
    knobs = model.knobs(model.config, model.image_shape)
    assert knobs.encodes and knobs.evaluates
    assert list(model.sampling_options()) == ["temperature"]
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        model.generate(2, temperature=-1.0)
