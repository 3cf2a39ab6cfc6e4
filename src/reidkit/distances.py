"""Pairwise distances between embedding sets: how far apart two samples are.

Euclidean distance uses the expansion ‖x − y‖² = ‖x‖² + ‖y‖² − 2·x·y (one matrix product, memory O(N·M)),
as in the batch-hard triplet loss of Hermans et al., "In Defense of the Triplet Loss for Person
Re-Identification" (2017). Cosine distance is 1 − cos(x, y).
"""

import torch
import torch.nn.functional as F
from torch import Tensor

METRICS = ("euclidean", "cosine")

# Squared distances at or below this are returned as exactly 0 with a zero gradient: sqrt has an infinite
# slope at 0, and duplicate embeddings (or d(a, a)) would otherwise give NaN/inf gradients.
SQUARED_EPS = 1e-12


def check_metric(metric: str) -> None:
    """Raise if `metric` is not a supported distance.

    Args:
        metric: Name of the distance.

    Raises:
        ValueError: If `metric` is not one of `METRICS`.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def pairwise_distance(x: Tensor, y: Tensor, metric: str = "euclidean") -> Tensor:
    """Distance between every row of `x` and every row of `y`.

    "euclidean": d(x, y) = ‖x − y‖₂, the true (not squared) L2 distance, computed as
    sqrt(max(‖x‖² + ‖y‖² − 2·x·y, 0)). Squared distances ≤ 1e-12 give exactly 0 with a zero gradient, so
    the gradient stays finite for duplicates and on the diagonal of `pairwise_distance(x, x)`.
    "cosine": d(x, y) = 1 − x·y / (‖x‖·‖y‖), clamped to [0, 2]; a zero vector is at distance 1 from all.

    Half-precision inputs (float16, bfloat16) are computed and returned in float32, with autocast
    disabled, because the expansion loses all precision to cancellation (and can overflow) in 16 bits.

    Args:
        x: Embeddings `[N, D]`.
        y: Embeddings `[M, D]`.
        metric: "euclidean" or "cosine".

    Returns:
        Distances `[N, M]`, in the promoted dtype of `x` and `y` (at least float32).

    Raises:
        ValueError: If `metric` is unknown, or `x`, `y` are not 2-D with the same number of columns.
    """
    check_metric(metric)
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected x [N, D] and y [M, D], got {tuple(x.shape)} and {tuple(y.shape)}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.to(dtype), y.to(dtype)
        if metric == "cosine":
            cosine = F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
            return (1.0 - cosine).clamp(0.0, 2.0)
        squared = (x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1) - 2.0 * (x @ y.T)).clamp_min(0.0)
        near_zero = squared <= SQUARED_EPS
        return squared.clamp_min(SQUARED_EPS).sqrt().masked_fill(near_zero, 0.0)
