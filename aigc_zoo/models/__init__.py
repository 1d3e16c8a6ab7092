"""Model families; importing this package registers every model with `aigc_zoo.registry`."""

from aigc_zoo.models import vae  # noqa: F401
