"""Name -> class registry for models, so that adding a model is one decorated class.

    @registry.register_model("vae")
    class VAE(base.GenerativeModel): ...

The runner's `--model` choices and the every-model test harness (tests/test_every_model.py)
iterate over `list_models()`; nothing outside this module switches on model names.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import keras

from aigc_zoo.errors import UserError

_MODELS: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator that registers a `GenerativeModel` subclass under `name`."""

    def decorate(cls: T) -> T:
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is registered twice "
                             f"({_MODELS[name].__qualname__} and {cls.__qualname__})")
        cls.registered_name = name
        _MODELS[name] = cls
        # `.keras` files name the class as "aigc_zoo>ClassName"; `keras.saving.load_model`
        # (also with safe_mode) finds it here once `aigc_zoo.models` is imported.
        return keras.saving.register_keras_serializable(package="aigc_zoo")(cls)

    return decorate


def unregister_model(name: str) -> None:
    """Forget model `name` (for tests and notebooks that define a model on the fly)."""
    _MODELS.pop(name, None)


def get_model(name: str) -> type:
    """The class registered as `name`; a `UserError` naming the choices otherwise."""
    _import_families()
    try:
        return _MODELS[name]
    except KeyError:
        choices = ", ".join(list_models())
        raise UserError(f"unknown model {name!r}; choose one of: {choices}") from None


def list_models() -> list[str]:
    """Sorted names of every registered model."""
    _import_families()
    return sorted(_MODELS)


def _import_families() -> None:
    # Importing the package runs every family's @register_model decorator.
    import aigc_zoo.models  # noqa: F401
