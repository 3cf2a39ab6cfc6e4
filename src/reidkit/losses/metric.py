"""Metric-learning losses of the lecture: per-element formulas, pair selectors, batch losses, modules.

References:
    Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an Invariant Mapping", CVPR 2006
        (contrastive).
    Schroff, Kalenichenko & Philbin, "FaceNet", CVPR 2015 (triplet).
    Cheng et al., "Person Re-Identification by Multi-Channel Parts-Based CNN with Improved Triplet Loss",
        CVPR 2016 (improved triplet).
    Chen et al., "Beyond Triplet Loss: a Deep Quadruplet Network for Person Re-Identification", CVPR 2017
        (quadruplet).
    Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person Re-Identification", 2017 (TriHard,
        soft margin).
    Ristani & Tomasi, "Features for Multi-Target Multi-Camera Tracking and Re-Identification", CVPR 2018,
        and Ye et al., "Deep Learning for Person Re-Identification: A Survey and Outlook" (AGW), TPAMI 2021
        (adaptive weights).

The axes stay separate: `distances.pairwise_distance` (how far), `hardest_pairs` / `softmax_weighted_pairs`
(which pairs count), `triplet_loss` and friends (the formula and the mean reduction).
"""

from collections.abc import Callable
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit.distances import check_metric, pairwise_distance

PairSelector = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"expected tensors of equal shape, got {shapes}")


# 1. Element-wise formulas on distance tensors; each returns the mean over elements.


def contrastive_loss(d: Tensor, y: Tensor, margin: float) -> Tensor:
    """Contrastive loss (Hadsell et al. 2006).

    L = mean(y·d² + (1 − y)·max(margin − d, 0)²), with y = 1 for a pair of the same identity.

    Args:
        d: Pair distances, any shape.
        y: Same-identity indicator (bool or float), same shape as `d`.
        margin: Distance beyond which negative pairs cost nothing.

    Returns:
        Scalar mean over elements (NaN for empty inputs, like `Tensor.mean`).

    Raises:
        ValueError: If `d` and `y` differ in shape.
    """
    _check_same_shape(d=d, y=y)
    y = y.to(d.dtype)
    return (y * d.pow(2) + (1.0 - y) * F.relu(margin - d).pow(2)).mean()


def triplet_loss(d_ap: Tensor, d_an: Tensor, margin: float | None = 0.3) -> Tensor:
    """Triplet loss (Schroff et al., FaceNet 2015); soft margin from Hermans et al. 2017.

    L = mean(max(d_ap − d_an + margin, 0)); with `margin=None`, L = mean(log(1 + exp(d_ap − d_an))).

    Args:
        d_ap: Anchor-positive distances, any shape.
        d_an: Anchor-negative distances, same shape as `d_ap`.
        margin: Hinge margin, or None for the soft margin (softplus).

    Returns:
        Scalar mean over elements (NaN for empty inputs, like `Tensor.mean`).

    Raises:
        ValueError: If `d_ap` and `d_an` differ in shape.
    """
    _check_same_shape(d_ap=d_ap, d_an=d_an)
    if margin is None:
        return F.softplus(d_ap - d_an).mean()
    return F.relu(d_ap - d_an + margin).mean()


def improved_triplet_loss(d_ap: Tensor, d_an: Tensor, margin: float = 0.3) -> Tensor:
    """Improved triplet loss (Cheng et al., CVPR 2016), in the lecture's form.

    L = mean(d_ap + max(d_ap − d_an + margin, 0)): the triplet hinge plus a pull on the positive distance.

    Args:
        d_ap: Anchor-positive distances, any shape.
        d_an: Anchor-negative distances, same shape as `d_ap`.
        margin: Hinge margin.

    Returns:
        Scalar mean over elements (NaN for empty inputs, like `Tensor.mean`).

    Raises:
        ValueError: If `d_ap` and `d_an` differ in shape.
    """
    return d_ap.mean() + triplet_loss(d_ap, d_an, margin)


def quadruplet_loss(
    d_ap: Tensor, d_an1: Tensor, d_n1n2: Tensor, alpha: float = 0.3, beta: float = 0.15
) -> Tensor:
    """Quadruplet loss (Chen et al., CVPR 2017).

    L = mean(max(d_ap − d_an1 + alpha, 0) + max(d_ap − d_n1n2 + beta, 0)), where n1 and n2 are two
    negatives of different identities; the second term pushes apart pairs that do not share the anchor.

    Args:
        d_ap: Anchor-positive distances, any shape.
        d_an1: Anchor-to-first-negative distances, same shape.
        d_n1n2: Distances between the two negatives, same shape.
        alpha: Margin of the anchor term.
        beta: Margin of the negative-pair term (smaller than `alpha` in the paper).

    Returns:
        Scalar mean over elements (NaN for empty inputs, like `Tensor.mean`).

    Raises:
        ValueError: If the three inputs differ in shape.
    """
    _check_same_shape(d_ap=d_ap, d_an1=d_an1, d_n1n2=d_n1n2)
    return triplet_loss(d_ap, d_an1, alpha) + triplet_loss(d_ap, d_n1n2, beta)


# 2. Selectors on a distance matrix: one (d_ap, d_an) per valid anchor.


def _anchor_masks(dist: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Positive mask `[N, N]` (same label, not itself), negative mask `[N, N]`, valid anchors `[N]`."""
    n = dist.shape[0] if dist.dim() == 2 else -1
    if dist.shape != (n, n) or labels.shape != (n,):
        shapes = f"{tuple(dist.shape)} and {tuple(labels.shape)}"
        raise ValueError(f"expected dist [N, N] and labels [N], got {shapes}")
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(n, dtype=torch.bool, device=dist.device)
    negative = ~same
    return positive, negative, positive.any(dim=1) & negative.any(dim=1)


def hardest_pairs(dist: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Batch-hard selection (Hermans et al. 2017): the farthest positive and nearest negative per anchor.

    d_ap[a] = max_p d(a, p) over p ≠ a with the label of a; d_an[a] = min_n d(a, n) over other labels.

    Args:
        dist: Distance matrix `[N, N]`.
        labels: Identity labels `[N]`.

    Returns:
        `(d_ap, d_an)`, each `[N']`, for the N' anchors having a positive and a negative (in batch order).

    Raises:
        ValueError: If `dist` is not `[N, N]` or `labels` not `[N]`.
    """
    positive, negative, valid = _anchor_masks(dist, labels)
    limits = torch.finfo(dist.dtype)
    d_ap = dist.masked_fill(~positive, limits.min).amax(dim=1)
    d_an = dist.masked_fill(~negative, limits.max).amin(dim=1)
    return d_ap[valid], d_an[valid]


def softmax_weighted_pairs(dist: Tensor, labels: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Adaptive-weight selection (Ristani & Tomasi 2018; AGW, Ye et al. 2021): softmax-weighted averages.

    d_ap[a] = Σ_p w_p·d(a, p) with w = softmax over the positives of d(a, p)/T (far positives weigh more);
    d_an[a] = Σ_n w_n·d(a, n) with w = softmax over the negatives of −d(a, n)/T (near negatives weigh more).
    T = 1 is the lecture's L3; T → 0 tends to the hardest pair, T → ∞ to the plain mean (the hard-aware
    point-to-set weights of Yu et al. 2018 with σ = T). The weights are part of the formula and are NOT
    detached: gradients flow through them.

    Args:
        dist: Distance matrix `[N, N]`.
        labels: Identity labels `[N]`.
        temperature: Softmax temperature T > 0, in units of the distance.

    Returns:
        `(d_ap, d_an)`, each `[N']`, for the N' anchors having a positive and a negative (in batch order).

    Raises:
        ValueError: If `dist` is not `[N, N]`, `labels` not `[N]`, or `temperature` is not > 0.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    positive, negative, valid = _anchor_masks(dist, labels)
    lowest = torch.finfo(dist.dtype).min  # exp(lowest − row max) is exactly 0: masked pairs get no weight
    scaled = dist / temperature
    weights_ap = scaled.masked_fill(~positive, lowest).softmax(dim=1)
    weights_an = (-scaled).masked_fill(~negative, lowest).softmax(dim=1)
    d_ap = (weights_ap * dist).sum(dim=1)
    d_an = (weights_an * dist).sum(dim=1)
    return d_ap[valid], d_an[valid]


# 3. Batch losses: selector + formula.


def _selected_triplet_loss(
    select: PairSelector, embeddings: Tensor, labels: Tensor, margin: float | None, metric: str
) -> Tensor:
    dist = pairwise_distance(embeddings, embeddings, metric)
    d_ap, d_an = select(dist, labels)
    if d_ap.numel() == 0:
        return dist.sum() * 0.0  # no valid anchor: a zero that keeps the graph to `embeddings`
    return triplet_loss(d_ap, d_an, margin)


def trihard_loss(
    embeddings: Tensor, labels: Tensor, margin: float | None = 0.3, metric: str = "euclidean"
) -> Tensor:
    """Batch-hard triplet loss, TriHard (Hermans et al. 2017, "In Defense of the Triplet Loss").

    L = mean_a max(max_p d(a, p) − min_n d(a, n) + margin, 0); with `margin=None` the soft margin
    L = mean_a log(1 + exp(max_p d(a, p) − min_n d(a, n))). Anchors with no positive or no negative in the
    batch are excluded from the mean; if none remain (one identity, or all singletons) the result is 0
    with a (zero) gradient connected to `embeddings`.

    Args:
        embeddings: Embeddings `[N, D]`.
        labels: Identity labels `[N]`.
        margin: Hinge margin (in units of the metric), or None for the soft margin.
        metric: "euclidean" or "cosine", see `pairwise_distance`.

    Returns:
        Scalar loss (float32 for half-precision embeddings).

    Raises:
        ValueError: If `metric` is unknown or the shapes do not match.
    """
    return _selected_triplet_loss(hardest_pairs, embeddings, labels, margin, metric)


def adaptive_weighted_triplet_loss(
    embeddings: Tensor, labels: Tensor, margin: float | None = None, metric: str = "euclidean"
) -> Tensor:
    """Triplet loss on adaptively weighted pairs (Ristani & Tomasi 2018; AGW, Ye et al. 2021).

    L = mean_a log(1 + exp(Σ_p w_p d(a, p) − Σ_n w_n d(a, n))) with w_p = softmax_p d(a, p) and
    w_n = softmax_n −d(a, n) (weights not detached, see `softmax_weighted_pairs`); the default
    `margin=None` is AGW's weighted regularisation triplet, a float margin uses the hinge
    max(· + margin, 0) instead. Anchors with no positive or no negative are excluded from the mean; if none
    remain the result is 0 with a (zero) gradient connected to `embeddings`.

    Args:
        embeddings: Embeddings `[N, D]`.
        labels: Identity labels `[N]`.
        margin: Hinge margin (in units of the metric), or None for the soft margin.
        metric: "euclidean" or "cosine", see `pairwise_distance`.

    Returns:
        Scalar loss (float32 for half-precision embeddings).

    Raises:
        ValueError: If `metric` is unknown or the shapes do not match.
    """
    return _selected_triplet_loss(softmax_weighted_pairs, embeddings, labels, margin, metric)


# 4. Modules: store validated hyperparameters, call the function.


def _check_margin(margin: float | None) -> None:
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, Real) or not margin >= 0):
        raise ValueError(f"margin must be None (soft margin) or a number >= 0, got {margin!r}")


def _check_real(name: str, value: float, allowed: str, accept: Callable[[float], bool]) -> None:
    """Raise ValueError naming `allowed` unless `value` is a real number (not bool, not NaN) `accept`s."""
    if isinstance(value, bool) or not isinstance(value, Real) or not accept(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _check_count(name: str, value: int, minimum: int) -> None:
    """Raise ValueError unless `value` is an int (not bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


class TriHardLoss(nn.Module):
    """Module form of `trihard_loss`; `forward(embeddings [N, D], labels [N])` returns a scalar."""

    def __init__(self, margin: float | None = 0.3, metric: str = "euclidean") -> None:
        """Store the hyperparameters; raise ValueError if `metric` is unknown or `margin` is negative."""
        super().__init__()
        _check_margin(margin)
        check_metric(metric)
        self.margin = margin
        self.metric = metric

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return trihard_loss(embeddings, labels, self.margin, self.metric)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, metric={self.metric!r}"


class AdaptiveWeightedTripletLoss(nn.Module):
    """Module form of `adaptive_weighted_triplet_loss`; `forward(embeddings [N, D], labels [N])`."""

    def __init__(self, margin: float | None = None, metric: str = "euclidean") -> None:
        """Store the hyperparameters; raise ValueError if `metric` is unknown or `margin` is negative."""
        super().__init__()
        _check_margin(margin)
        check_metric(metric)
        self.margin = margin
        self.metric = metric

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return adaptive_weighted_triplet_loss(embeddings, labels, self.margin, self.metric)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, metric={self.metric!r}"
