"""Model families; importing this package registers every model with `aigc_zoo.registry`."""

from aigc_zoo.models import cyclegan  # noqa: F401
from aigc_zoo.models import dalle  # noqa: F401
from aigc_zoo.models import diffusion  # noqa: F401
from aigc_zoo.models import gan  # noqa: F401
from aigc_zoo.models import image_to_image  # noqa: F401
from aigc_zoo.models import klae  # noqa: F401
from aigc_zoo.models import ldm  # noqa: F401
from aigc_zoo.models import pixelcnn  # noqa: F401
from aigc_zoo.models import sr3  # noqa: F401
from aigc_zoo.models import vae  # noqa: F401
from aigc_zoo.models import vqgpt  # noqa: F401
from aigc_zoo.models import vqvae  # noqa: F401
