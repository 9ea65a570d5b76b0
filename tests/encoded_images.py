"""Encoded test images, written with PIL (an encoder independent of the TensorFlow decoders
under test)."""

import io

import numpy as np
from PIL import Image


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None, **save_options) -> bytes:
    """`array` [H, W, 3] or [H, W] uint8 as a file's bytes in `fmt` (PIL's format name),
    converted to PIL `mode` first if given ("L", "CMYK", "P", ...)."""
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(buffer, format=fmt, **save_options)
    return buffer.getvalue()
