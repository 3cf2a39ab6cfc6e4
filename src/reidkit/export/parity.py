"""The one parity check every export format passes: the exported file, run by its own runtime, against the
PyTorch model on the same real query images.

Two figures per check, over the P parity images and D feature dimensions:
    max |Δ| = max_{i,d} |f_export(x_i)_d − f_torch(x_i)_d|
    min cos = min_i f_export(x_i)·f_torch(x_i) / (‖f_export(x_i)‖·‖f_torch(x_i)‖)
Full-precision formats must agree element-wise (max |Δ|); reduced-precision ones are judged by the direction
of the feature (retrieval ranks by cosine or by distances between similar-scale features), since their
element-wise error scales with the feature's magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidkit.errors import ReidkitError


@dataclass(frozen=True)
class Tolerance:
    """A format passes when max |Δ| ≤ `max_abs_diff` (None: not checked) and min cos ≥ `min_cosine`."""

    max_abs_diff: float | None
    min_cosine: float

    def describe(self) -> str:
        bound = f"max |Δ| ≤ {self.max_abs_diff:g}, " if self.max_abs_diff is not None else ""
        return f"{bound}min cos ≥ {self.min_cosine:g}"


TOLERANCES = {
    "onnx": Tolerance(1e-4, 0.99999),
    "openvino": Tolerance(1e-4, 0.99999),  # compiled with INFERENCE_PRECISION_HINT f32 (no bf16 on AMX CPUs)
    "torchscript": Tolerance(1e-4, 0.99999),
    "tensorrt": Tolerance(1e-3, 0.9999),  # fp32 engine with TF32 off; kernels differ from PyTorch's
    "onnx-fp16": Tolerance(None, 0.999),
    "onnx-int8": Tolerance(None, 0.98),
}


@dataclass(frozen=True)
class Parity:
    """The figures of one parity check on `images` query images."""

    max_abs_diff: float
    min_cosine: float
    images: int


def measure_parity(actual: np.ndarray, expected: np.ndarray) -> Parity:
    """max |Δ| and min cos of `actual` [P, D] against `expected` [P, D] (computed in float64)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise ReidkitError(f"the exported model gives features of shape {actual.shape}, PyTorch {expected.shape}")
    norms = np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1)
    cosines = np.where(norms > 0, (actual * expected).sum(axis=1) / np.maximum(norms, 1e-300), 0.0)
    return Parity(float(np.abs(actual - expected).max()), float(cosines.min()), len(actual))


def check_parity(format: str, actual: np.ndarray, expected: np.ndarray) -> Parity:
    """`measure_parity`, held against `TOLERANCES[format]`.

    Raises:
        ReidkitError: the check failed (NaN counts as a failure).
    """
    parity, tolerance = measure_parity(actual, expected), TOLERANCES[format]
    diff_ok = tolerance.max_abs_diff is None or parity.max_abs_diff <= tolerance.max_abs_diff
    if not (diff_ok and parity.min_cosine >= tolerance.min_cosine):
        raise ReidkitError(f"{format} parity check failed: max |Δ feature| {parity.max_abs_diff:.3g}, min cosine "
                           f"{parity.min_cosine:.6f} on {parity.images} query images (tolerance: "
                           f"{tolerance.describe()}); the exported file was removed")
    return parity
