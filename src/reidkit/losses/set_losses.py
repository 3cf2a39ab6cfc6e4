"""Set-based metric losses from the lecture's further reading: each anchor against sets, not single pairs.

References:
    Oh Song, Xiang, Jegelka & Savarese, "Deep Metric Learning via Lifted Structured Feature Embedding",
        CVPR 2016 (lifted structured loss).
    Yu, Dou, Bai, Zhang, Xu & Bai, "Hard-Aware Point-to-Set Deep Metric for Person Re-identification",
        ECCV 2018 (HAP2S, exponential weights).
"""

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit.distances import check_metric, pairwise_distance
from reidkit.losses.metric import _anchor_masks, _check_real, _selected_triplet_loss, softmax_weighted_pairs


def lifted_structured_loss(
    embeddings: Tensor, labels: Tensor, margin: float = 1.0, metric: str = "euclidean"
) -> Tensor:
    """Lifted structured loss (Oh Song et al., CVPR 2016).

    For each positive pair (i, j), i < j: J_ij = log(Σ_{k∈N(i)} exp(margin − d_ik) + Σ_{l∈N(j)}
    exp(margin − d_jl)) + d_ij, computed as logaddexp of two masked logsumexps; L = 1/(2|P|) ·
    Σ_{(i,j)∈P} max(J_ij, 0)², P the set of unordered positive pairs. With no positive pair or a single
    identity returns 0 with a (zero) gradient connected to `embeddings`.

    Args:
        embeddings: Embeddings `[N, D]`.
        labels: Identity labels `[N]`.
        margin: Margin m (units of the metric).
        metric: "euclidean" (the paper's) or "cosine".

    Returns:
        Scalar loss.

    Raises:
        ValueError: If `metric` is unknown or the shapes do not match.
    """
    dist = pairwise_distance(embeddings, embeddings, metric)
    positive, negative, _ = _anchor_masks(dist, labels)
    pairs = positive.triu(diagonal=1)  # unordered positive pairs (i < j), as a mask: no wait for the device
    # a row without negatives has a logsumexp near the dtype's minimum: its J is then far below 0
    log_negatives = (margin - dist).masked_fill(~negative, torch.finfo(dist.dtype).min).logsumexp(dim=1)
    j_values = torch.logaddexp(log_negatives[:, None], log_negatives[None, :]) + dist
    return (F.relu(j_values).pow(2) * pairs).sum() / (2 * pairs.sum().clamp_min(1))


def hap2s_loss(
    embeddings: Tensor, labels: Tensor, margin: float = 0.5, sigma: float = 0.5, metric: str = "euclidean"
) -> Tensor:
    """Hard-aware point-to-set loss, HAP2S with exponential weights (Yu et al., ECCV 2018).

    d(a, P) = Σ_p w_p d(a, p) with w_p ∝ exp(d(a, p)/σ) (far positives weigh more), d(a, N) = Σ_n w_n
    d(a, n) with w_n ∝ exp(−d(a, n)/σ) (near negatives weigh more); L = mean_a max(d(a, P) − d(a, N) +
    margin, 0). This is `softmax_weighted_pairs` at temperature σ: σ = 1 gives the lecture's adaptive-weight
    triplet with a hinge, σ → 0 tends to TriHard. The weights are not detached. Anchors with no positive or
    no negative are excluded; if none remain returns 0 with a (zero) gradient.

    Args:
        embeddings: Embeddings `[N, D]`.
        labels: Identity labels `[N]`.
        margin: Hinge margin (units of the metric).
        sigma: Weight temperature σ > 0 (units of the metric).
        metric: "euclidean" or "cosine".

    Returns:
        Scalar loss.

    Raises:
        ValueError: If `metric` is unknown, `sigma` is not > 0, or the shapes do not match.
    """
    select = partial(softmax_weighted_pairs, temperature=sigma)
    return _selected_triplet_loss(select, embeddings, labels, margin, metric)


class LiftedStructuredLoss(nn.Module):
    """Module form of `lifted_structured_loss`; `forward(embeddings [N, D], labels [N])`."""

    def __init__(self, margin: float = 1.0, metric: str = "euclidean") -> None:
        """Raise ValueError for an unknown metric or a negative margin."""
        super().__init__()
        check_metric(metric)
        _check_real("margin", margin, "a number >= 0", lambda v: v >= 0)
        self.margin = margin
        self.metric = metric

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return lifted_structured_loss(embeddings, labels, self.margin, self.metric)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, metric={self.metric!r}"


class HAP2SLoss(nn.Module):
    """Module form of `hap2s_loss`; `forward(embeddings [N, D], labels [N])`."""

    def __init__(self, margin: float = 0.5, sigma: float = 0.5, metric: str = "euclidean") -> None:
        """Raise ValueError for an unknown metric, a negative margin or a sigma not > 0."""
        super().__init__()
        check_metric(metric)
        _check_real("margin", margin, "a number >= 0", lambda v: v >= 0)
        _check_real("sigma", sigma, "a finite number > 0", lambda v: 0 < v < float("inf"))
        self.margin = margin
        self.sigma = sigma
        self.metric = metric

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return hap2s_loss(embeddings, labels, self.margin, self.sigma, self.metric)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, sigma={self.sigma}, metric={self.metric!r}"
