"""Any image file a user brings, as the RGB uint8 pixels the records store.

`prepare_image(data, origin)` decodes with Pillow: JPEG (also CMYK, Adobe-inverted CMYK and
progressive), PNG (also 16-bit, palette, grayscale, with alpha), GIF (the first frame), BMP,
TIFF, WebP; EXIF orientation is applied (a phone's portrait photo stands upright). The result is
the original bytes where TensorFlow decodes them itself to these pixels (a baseline or progressive
RGB / grayscale JPEG, up to its decoder's rounding; an 8-bit RGB / grayscale PNG; neither
rotated), else a lossless PNG of the RGB pixels. Conventions, the same as `tf.io.decode_image(channels=3)` on the registry's data:
alpha is dropped (not composited), 16-bit samples keep their high byte (v >> 8), grayscale is
copied to the three channels; colour profiles are not applied.

A file that is empty, not an image, or truncated raises `UnreadableImageError` naming it.
"""

from __future__ import annotations

import io

import numpy as np

JPEG_START = b"\xff\xd8"
PNG_START = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112


class UnreadableImageError(ValueError):
    """An image file that cannot be decoded (empty, not an image, truncated, corrupt)."""


def _pixels(image) -> np.ndarray:
    """uint8 [H, W, 3] of a loaded Pillow image of any mode."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale (Pillow reads 16-bit RGB as 8-bit itself, keeping the high byte).
        values = np.asarray(image).astype(np.int64)
        gray = np.clip(values >> 8, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        raise UnreadableImageError("32-bit float pixels; convert the file to 8-bit")
    if mode != "RGB":
        image = image.convert("RGB")  # palette, L, LA, RGBA, CMYK, 1, YCbCr, ...
    return np.asarray(image, dtype=np.uint8)


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_rgb(data: bytes, origin: str) -> tuple[np.ndarray, bool]:
    """(uint8 [H, W, 3] pixels, whether TensorFlow decodes the bytes as they are to the same).

    Raises `UnreadableImageError` naming `origin`.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise UnreadableImageError(f"{origin}: the file is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
        kind = image.format
        image.seek(0)  # GIF / multi-page TIFF: the first frame
        image.load()
    except UnidentifiedImageError:
        raise UnreadableImageError(
            f"{origin}: not an image file (no known image format: JPEG, PNG, GIF, BMP, TIFF, WebP)"
        ) from None
    except Image.DecompressionBombError as e:
        raise UnreadableImageError(f"{origin}: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UnreadableImageError(f"{origin}: the image is truncated or corrupt ({e})") from None
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation not in (None, 1):
            image = ImageOps.exif_transpose(image)
        pixels = _pixels(image)
    except UnreadableImageError as e:
        raise UnreadableImageError(f"{origin}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UnreadableImageError(f"{origin}: the image cannot be decoded ({e})") from None
    upright = orientation in (None, 1)
    same_in_tf = upright and (
        (kind == "JPEG" and data.startswith(JPEG_START) and image.mode in ("RGB", "L"))
        # Bit depth 8 (IHDR byte 24): TensorFlow and Pillow read the same samples.
        or (
            kind == "PNG"
            and data.startswith(PNG_START)
            and image.mode in ("RGB", "L")
            and len(data) > 24
            and data[24] == 8
        )
    )
    return pixels, same_in_tf


def prepare_image(data: bytes, origin: str) -> bytes:
    """Bytes for a record: `data` itself where TensorFlow decodes it to the pixels Pillow does,
    else a PNG of the RGB pixels (see the module docstring)."""
    pixels, same_in_tf = decode_rgb(data, origin)
    return data if same_in_tf else _png(pixels)
