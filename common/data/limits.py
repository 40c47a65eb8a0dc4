"""What keeps one file from stopping the study or exhausting its memory: the pixel limit per
image, and why a file is skipped, whatever the image library raised on it.

Every image's header is read (``Image.open``: width, height, mode; no pixel decoded) before its
pixels are; an image with more pixels than the limit is skipped there (:func:`check_pixels`).
Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, 89,478,485 by default) is
set from the same setting while the data layer opens files (:func:`pixel_limit`), so Pillow
itself refuses an image over twice the limit (``DecompressionBombError``) and its warning
between once and twice the limit (``DecompressionBombWarning``) is silenced: the study's own
check skips those images, with a reason.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator

from PIL import Image

DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192  # 67,108,864 pixels (64 Mpx), width x height; why:
# - real photos fit: full-frame cameras take 45-61 Mpx (9504x6336 = 60.2 Mpx), 64 Mpx phones
#   9248x6936 = 64.1 Mpx; the study resizes to at most 512 px, so a larger original adds nothing;
# - memory: Pillow holds a decoded RGB (also RGBA, CMYK) image in 4 bytes per pixel, and the
#   conversion to RGB copies it: at most 8 bytes per pixel, 512 MiB per decoding process at the
#   limit (measured: 537 MB peak for an 8192x8192 CMYK JPEG or RGBA PNG, 280 MB for RGB), and
#   the decoding pool runs one process per core: within 4 GiB on 8 cores.

SETTING = "--max-image-pixels"  # named in the reasons, so a user knows what to raise

TOO_LARGE = "image too large"  # reasons of images over the limit start with this

CORRUPT = "corrupt image"  # reasons of files the image library refused start with this


class ImageTooLargeError(Exception):
    """An image's header gives more pixels than the limit (raised before anything is decoded)."""


@contextlib.contextmanager
def pixel_limit(max_image_pixels: int) -> Iterator[None]:
    """Pillow's decompression-bomb limit set to ``max_image_pixels`` and its warning silenced
    while the block runs; both restored after. Each decoding process enters it itself (a
    setting made in the parent does not reach a fork server's workers)."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def check_pixels(img: Image.Image, max_image_pixels: int) -> None:
    """Raise ImageTooLargeError when an opened image (its header read, nothing decoded) has more
    pixels than ``max_image_pixels``."""
    width, height = img.size
    if width * height > max_image_pixels:
        raise ImageTooLargeError(_too_large(f"{width}x{height} = {width * height:,}", max_image_pixels))


def unusable_reason(exc: Exception, max_image_pixels: int) -> str:
    """Why a file is skipped, from whatever opening or decoding it raised: ``"image too large:
    ..."`` for the pixel limit (the study's own check or Pillow's ``DecompressionBombError``),
    else ``"corrupt image: <exception type>: <first line of its message>"``."""
    message = first_line(exc)
    if isinstance(exc, ImageTooLargeError):
        return message
    if isinstance(exc, Image.DecompressionBombError):
        found = re.search(r"\((\d+) pixels\)", message)  # "Image size (N pixels) exceeds limit of 2x ..."
        pixels = f"{int(found[1]):,}" if found else "more"
        return _too_large(pixels, max_image_pixels, "DecompressionBombError: ")
    return f"{CORRUPT}: {type(exc).__name__}: {message}".rstrip(": ")


def _too_large(pixels: str, max_image_pixels: int, raised: str = "") -> str:
    return f"{TOO_LARGE}: {raised}{pixels} pixels, over the limit of {max_image_pixels:,} ({SETTING})"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" for none)."""
    text = str(exc)
    return text.splitlines()[0] if text else ""
