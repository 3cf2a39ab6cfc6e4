"""Hand-crafted retrieval baselines reported beside trained models.

The colour-histogram baseline follows the classic hand-crafted ReID descriptors built from colour
histograms over horizontal stripes (e.g. ELF, Gray and Tao, ECCV 2008; LOMO, Liao et al., CVPR 2015,
without their texture and max-pooling parts): it shows how far clothing colours alone go.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reidkit.data.images import read_rgb


def colour_histogram_features(paths: Sequence[str], bins: int = 8, stripes: int = 6) -> np.ndarray:
    """Joint HSV colour histograms over horizontal stripes, one descriptor per image.

    Each image is split into ``stripes`` equal horizontal bands; each band gets a joint histogram with
    ``bins`` levels per H, S and V channel, normalised to sum 1 (L1); the square root of the concatenation
    (Hellinger mapping) is then L2-normalised, so Euclidean distance between descriptors is meaningful.
    In an image with fewer rows than ``stripes``, the bands that get no row stay zero.

    Args:
        paths: image files.
        bins: quantisation levels per HSV channel (1..256).
        stripes: number of horizontal bands.

    Returns:
        float32 array [N, stripes * bins**3], rows of unit L2 norm.

    Raises:
        ValueError: ``bins`` or ``stripes`` out of range.
    """
    if not 1 <= bins <= 256 or stripes < 1:
        raise ValueError(f"bins must be in 1..256 and stripes >= 1, got bins={bins}, stripes={stripes}")
    cells = bins ** 3
    features = np.zeros((len(paths), stripes * cells), dtype=np.float32)
    for row, path in enumerate(paths):
        hsv = np.asarray(read_rgb(path).convert("HSV"), dtype=np.int64)
        levels = hsv * bins // 256
        colour_cell = (levels[..., 0] * bins + levels[..., 1]) * bins + levels[..., 2]
        stripe = np.arange(hsv.shape[0]) * stripes // hsv.shape[0]
        histogram = np.bincount((stripe[:, None] * cells + colour_cell).ravel(), minlength=stripes * cells)
        rows_per_stripe = np.maximum(np.bincount(stripe, minlength=stripes), 1)
        histogram = histogram.reshape(stripes, cells) / (hsv.shape[1] * rows_per_stripe[:, None])
        features[row] = np.sqrt(histogram).ravel()
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
