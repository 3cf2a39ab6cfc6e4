"""Curriculum sampling of negatives for the triplet loss, after Mancs (Wang, Zhang, Huang, Liu & Wang, "Mancs:
A Multi-task Attentional Network with Curriculum Sampling for Person Re-identification", ECCV 2018).

For each anchor a of a PK batch its M negatives are ranked by distance, r = 0 the nearest (hardest) to
r = M − 1 the farthest (easiest), with the normalised rank u_r = r / (M − 1) (0 when M = 1). One negative is
drawn per anchor with

    p_a(r) = exp(−u_r² / 2σ²) / Σ_r' exp(−u_r'² / 2σ²),

a half-Gaussian over ranks from the hardest one. Its width follows training progress t ∈ [0, 1] (the
fraction of the run done): with s = clip((t − start) / (end − start), 0, 1),

    σ(s) = σ_start^(1 − s) · σ_end^s      (geometric interpolation),

so a wide σ_start draws nearly uniformly (mostly easy negatives, as random sampling would) and a narrow
σ_end nearly always the hardest (batch hard). The positive is the anchor's farthest positive, and the
loss is `triplet_loss` (mean over anchors of max(d_ap − d_an + m, 0)).

What could not be confirmed from the paper's text here: the exact density over ranks and the form of its
schedule (this module takes a half-Gaussian whose width shrinks geometrically, the reading closest to
"negatives ranked by distance, sampled from easy towards hard as training advances"), and how the
positive is chosen (here the hardest, as in batch hard).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from reidkit.distances import check_metric, pairwise_distance
from reidkit.losses.metric import _anchor_masks, _check_margin, triplet_loss


def check_schedule(sigma_start: float, sigma_end: float, start: float, end: float) -> None:
    """Raise ValueError unless 0 < σ_end ≤ σ_start < ∞ and 0 ≤ start < end ≤ 1."""
    if not 0 < sigma_end <= sigma_start < math.inf:
        raise ValueError(f"need 0 < sigma_end <= sigma_start < inf, got sigma_start={sigma_start!r}, "
                         f"sigma_end={sigma_end!r}")
    if not 0 <= start < end <= 1:
        raise ValueError(f"need 0 <= start < end <= 1 (fractions of training), got start={start!r}, end={end!r}")


def curriculum_sigma(progress: float, sigma_start: float = 10.0, sigma_end: float = 0.02, start: float = 0.0,
                     end: float = 1.0) -> float:
    """σ(s) = σ_start^(1 − s) · σ_end^s with s = clip((progress − start) / (end − start), 0, 1).

    Args:
        progress: Fraction of training done, in [0, 1].
        sigma_start: Width at and before `start` (in normalised ranks; large is nearly uniform).
        sigma_end: Width at and after `end` (small is nearly batch hard).
        start: Fraction of training where the width starts to shrink.
        end: Fraction of training where it reaches `sigma_end`.

    Raises:
        ValueError: If the schedule is out of range.
    """
    check_schedule(sigma_start, sigma_end, start, end)
    s = min(max((progress - start) / (end - start), 0.0), 1.0)
    return sigma_start ** (1.0 - s) * sigma_end ** s


def rank_probabilities(num_negatives: int, sigma: float) -> Tensor:
    """p(r) ∝ exp(−(r / (M − 1))² / 2σ²) over ranks r = 0 (hardest) .. M − 1, float64 `[M]`."""
    ranks = torch.arange(num_negatives, dtype=torch.float64)
    weights = torch.exp(-(ranks / max(num_negatives - 1, 1)) ** 2 / (2 * sigma**2))
    return weights / weights.sum()


def negative_probabilities(dist: Tensor, labels: Tensor, sigma: float) -> Tensor:
    """P[a, n] = p_a(rank of n among a's negatives), `rank_probabilities` placed on each anchor's negatives.

    Args:
        dist: Distance matrix `[N, N]`.
        labels: Identity labels `[N]`.
        sigma: Width of the density over normalised ranks (> 0).

    Returns:
        float64 `[N, N]`: each row of an anchor with a negative sums to 1; 0 off the negatives (rows of
        anchors without a negative are 0). Ties are ranked by index.
    """
    _, negative, _ = _anchor_masks(dist, labels)
    rank = dist.detach().masked_fill(~negative, torch.finfo(dist.dtype).max).argsort(dim=1, stable=True).argsort(dim=1)
    u = rank.double() / (negative.sum(dim=1, keepdim=True) - 1).clamp_min(1)
    weights = torch.exp(-u**2 / (2 * sigma**2)).masked_fill(~negative, 0.0)
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)


def curriculum_triplets(dist: Tensor, labels: Tensor, sigma: float,
                        generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Per valid anchor its farthest positive and one negative drawn from `negative_probabilities`.

    Args:
        dist: Distance matrix `[N, N]`.
        labels: Identity labels `[N]`.
        sigma: Width of the density over normalised ranks (> 0).
        generator: Random source of the draws (default: torch's global one).

    Returns:
        `(d_ap, d_an)`, each `[V]` (V anchors with a positive and a negative).
    """
    positive, _, valid = _anchor_masks(dist, labels)
    d_ap = dist.masked_fill(~positive, torch.finfo(dist.dtype).min).amax(dim=1)[valid]
    probabilities = negative_probabilities(dist, labels, sigma)[valid]
    if not len(probabilities):
        return d_ap, d_ap
    device = dist.device if generator is None else generator.device
    drawn = torch.multinomial(probabilities.to(device), 1, generator=generator).to(dist.device)
    return d_ap, dist[valid].gather(1, drawn).squeeze(1)


def curriculum_triplet_loss(embeddings: Tensor, labels: Tensor, progress: float, margin: float | None = 0.3,
                            metric: str = "euclidean", sigma_start: float = 10.0, sigma_end: float = 0.02,
                            start: float = 0.0, end: float = 1.0,
                            generator: torch.Generator | None = None) -> Tensor:
    """Triplet loss over curriculum-sampled triplets (Mancs, Wang et al. 2018; see the module docstring).

    L = mean over anchors with a positive and a negative of max(max_p d(a,p) − d(a,n_a) + m, 0), n_a drawn
    with p_a(r) ∝ exp(−u_r² / 2σ(t)²); `margin=None`: log(1 + exp(d_ap − d_an)). With no valid anchor
    returns 0 with a gradient.

    Args:
        embeddings: Embeddings `[N, D]`.
        labels: Identity labels `[N]`.
        progress: Fraction of training done, in [0, 1].
        margin: Hinge margin (units of the metric), or None for the soft margin.
        metric: "euclidean" or "cosine".
        sigma_start, sigma_end, start, end: The schedule of `curriculum_sigma`.
        generator: Random source of the draws.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If the metric, margin or schedule is out of range, or the shapes do not match.
    """
    dist = pairwise_distance(embeddings, embeddings, metric)
    sigma = curriculum_sigma(progress, sigma_start, sigma_end, start, end)
    d_ap, d_an = curriculum_triplets(dist, labels, sigma, generator)
    if d_ap.numel() == 0:
        return dist.sum() * 0.0
    return triplet_loss(d_ap, d_an, margin)


class CurriculumTripletLoss(nn.Module):
    """Module form of `curriculum_triplet_loss`; the trainer sets `progress` before each step
    (`Objective.set_progress`). `forward(embeddings [N, D], labels [N])`."""

    def __init__(self, margin: float | None = 0.3, metric: str = "euclidean", sigma_start: float = 10.0,
                 sigma_end: float = 0.02, start: float = 0.0, end: float = 1.0) -> None:
        super().__init__()
        check_metric(metric)
        _check_margin(margin)
        check_schedule(sigma_start, sigma_end, start, end)
        self.margin, self.metric = margin, metric
        self.sigma_start, self.sigma_end, self.start, self.end = sigma_start, sigma_end, start, end
        self.progress = 0.0

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return curriculum_triplet_loss(embeddings, labels, self.progress, self.margin, self.metric,
                                       self.sigma_start, self.sigma_end, self.start, self.end)

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, metric={self.metric!r}, sigma {self.sigma_start} -> {self.sigma_end} "
                f"over progress {self.start}..{self.end}")
