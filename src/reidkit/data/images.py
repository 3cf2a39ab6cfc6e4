"""Reading any image file as upright 8-bit RGB, high-bit-depth greyscale included: the one reader of
training, indexing, search, evaluation, export and the service.

PIL's `convert("RGB")` clips 16-bit and 32-bit greyscale values at 255, so a 16-bit PNG would become an
all-white picture; such images are scaled to 8 bits first (16-bit range: value / 257). An EXIF orientation
tag (cameras and phones store pictures sideways with a tag saying how to turn them) is always applied, so
the same picture gives the same features whichever command reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` upright (its EXIF orientation applied) as 8-bit RGB; 16-bit, 32-bit-integer and float greyscale
    are scaled from their range.

    Raises:
        ValueError: a float or 32-bit image whose values lie outside [0, 65535] (no known range).
    """
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)  # a copy without the tag
    if image.mode not in WIDE_GREY_MODES:
        return image.convert("RGB")
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F" and values.size and np.nanmax(values) <= 1.0:
        scale = 255.0  # float images in [0, 1]
    elif image.mode.startswith("I;16") or (values.size and np.nanmax(values) > 255):
        scale = 255.0 / 65535.0
    else:
        scale = 1.0
    if values.size and (np.isnan(values).any() or values.min() < 0 or values.max() > 65535):
        raise ValueError(f"{image.mode} image with values outside [0, 65535]; save it as an 8-bit image")
    return Image.fromarray(np.round(values * scale).astype(np.uint8)).convert("RGB")


def read_rgb(path: str | Path) -> Image.Image:
    """The image file at `path` as 8-bit RGB (see `to_rgb`); PIL's OSError/ValueError for unreadable files,
    and a ValueError for an image over PIL's pixel limit (a possible decompression bomb), so that every
    reader reports or skips it like any unreadable file."""
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except Image.DecompressionBombError as error:
        raise ValueError(f"{error} It is refused as a possible decompression bomb: shrink the image, or raise "
                         "PIL.Image.MAX_IMAGE_PIXELS if you trust it") from error
