"""PNG bytes of small uint8 images, for the embedded datasets' builders.

Given a numpy image, TFDS encodes it with one eager TensorFlow op call per example, which was
two thirds of the time `digits` takes to prepare (about 0.25 ms an image on the 2-core VM).
Handing it bytes skips that: TFDS stores them as they are. The format is lossless, so the
decoded pixels are the same whichever encoder wrote them; only the compressed bytes differ.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type: greyscale, RGB
_LEVEL = 6  # zlib's default trade of size for speed


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode(image: np.ndarray) -> bytes:
    """The PNG file of a uint8 [height, width, 1 or 3] image (8 bits a sample, no filter)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in _COLOUR_TYPES:
        raise ValueError(f"expected uint8 [height, width, 1 or 3], got {image.dtype} "
                         f"{list(image.shape)}")
    height, width, channels = image.shape
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[channels], 0, 0, 0)
    # Each scanline starts with its filter type; 0 (none) keeps the encoder this simple.
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)
    return (_SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(rows.tobytes(), _LEVEL)) + _chunk(b"IEND", b""))
