"""aigc_zoo: a zoo of generative image models (VAEs, GANs, diffusion) for TensorFlow/Keras 3.

Every model is a subclassed `keras.Model` on one shared `train_step`
(`aigc_zoo.models.base.GenerativeModel`); `python -m aigc_zoo.run --model=vae` trains one, and
so does `aigc_zoo.train("vae")`; `aigc_zoo.load(workdir)` returns a trained model.
"""

import os

__version__ = "0.1.0"

_backend = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    raise ImportError(
        f"aigc_zoo runs on Keras' TensorFlow backend, but KERAS_BACKEND={_backend!r}; "
        "unset it or set KERAS_BACKEND=tensorflow."
    )

from aigc_zoo.api import load, train  # noqa: E402  (after the backend check)

__all__ = ["load", "train"]
