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

from dataclasses import dataclass, replace

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


def tolerance_for(format: str, min_cosine: float | None = None) -> Tolerance:
    """`TOLERANCES[format]`, with its min-cosine bound replaced by `min_cosine` when given (the user's bound,
    e.g. after measuring the accuracy of the file with `reidkit eval --model`).

    Raises:
        ValueError: `min_cosine` outside [0, 1].
    """
    if min_cosine is not None and not 0 <= min_cosine <= 1:
        raise ValueError(f"min_cosine must be in [0, 1], got {min_cosine}")
    tolerance = TOLERANCES[format]
    return tolerance if min_cosine is None else replace(tolerance, min_cosine=min_cosine)


def check_parity(format: str, actual: np.ndarray, expected: np.ndarray, tolerance: Tolerance | None = None) -> Parity:
    """`measure_parity`, held against `tolerance` (default `TOLERANCES[format]`).

    Raises:
        ReidkitError: the check failed (NaN counts as a failure); for a reduced-precision format the message
            says what to try next.
    """
    tolerance = tolerance or TOLERANCES[format]
    parity = measure_parity(actual, expected)
    diff_ok = tolerance.max_abs_diff is None or parity.max_abs_diff <= tolerance.max_abs_diff
    if not (diff_ok and parity.min_cosine >= tolerance.min_cosine):
        raise ReidkitError(f"{format} parity check failed: max |Δ feature| {parity.max_abs_diff:.3g}, min cosine "
                           f"{parity.min_cosine:.6f} on {parity.images} query images (tolerance: "
                           f"{tolerance.describe()}); the exported file was removed{_NEXT_STEPS.get(format, '')}")
    return parity


_ACCEPT = ("measure its accuracy (export with --min-cosine 0 to keep the file, then `reidkit eval --run RUN --model "
           "FILE`) and accept it with --min-cosine X")
_NEXT_STEPS = {  # what a user can change when a reduced-precision format loses too much
    "onnx-int8": f"; try --calibration-method percentile, --no-per-channel or more --calibration-images, or {_ACCEPT}",
    "onnx-fp16": f"; features may leave float16's range: {_ACCEPT}",
}
