"""Activation maps drawn over images: a blue → green → yellow → red colour ramp blended onto the picture.

The maps come from the engine (`reidkit.engine.activation`) as arrays in [0, 1]; this module only draws them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Colour ramp anchors at 0, 1/3, 2/3, 1 (low → high activation).
_RAMP = np.array([(30, 60, 200), (40, 200, 120), (250, 220, 40), (220, 30, 30)], dtype=np.float64)


def colour_ramp(values: np.ndarray) -> np.ndarray:
    """uint8 RGB `[..., 3]` of values in [0, 1] (clipped), linearly between the ramp's anchors."""
    scaled = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.minimum(np.floor(scaled).astype(int), len(_RAMP) - 2)
    weight = (scaled - low)[..., None]
    return np.round(_RAMP[low] * (1 - weight) + _RAMP[low + 1] * weight).astype(np.uint8)


def overlay_activation(image: Image.Image, activation: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """`image` with the map `activation` `[h, w]` in [0, 1] resized to it (bilinear) and blended at `alpha`.

    Raises:
        ValueError: `activation` is not 2-D or `alpha` is outside [0, 1].
    """
    if np.ndim(activation) != 2:
        raise ValueError(f"activation must be a [h, w] map, got shape {np.shape(activation)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    resized = Image.fromarray(np.asarray(activation, np.float32), mode="F").resize(image.size, Image.BILINEAR)
    colours = Image.fromarray(colour_ramp(np.asarray(resized)))
    return Image.blend(image.convert("RGB"), colours, alpha)
