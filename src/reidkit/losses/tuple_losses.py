"""Batch losses over PK batches: a tuple builder (`tuples.py`) + an element-wise formula (`metric.py`).

References: Hadsell et al., CVPR 2006 (contrastive); Schroff et al., FaceNet, CVPR 2015 (triplet); Cheng
et al., CVPR 2016 (improved triplet); Chen et al., CVPR 2017 (quadruplet); Hermans et al. 2017 (batch
hard); "nn_adaptive" triplets: see `tuples.build_triplets`.

Each loss is `formula(*builder(pairwise_distance(embeddings), labels, strategy))`, the formula's mean over
the selected tuples being the reduction; with no tuple left the loss is 0 with a gradient.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from reidkit.distances import check_metric, pairwise_distance
from reidkit.losses.metric import (
    _check_margin,
    _check_real,
    contrastive_loss,
    improved_triplet_loss,
    quadruplet_loss,
    triplet_loss,
)
from reidkit.losses.tuples import (
    PAIR_STRATEGIES,
    QUADRUPLET_STRATEGIES,
    TRIPLET_STRATEGIES,
    build_pairs,
    build_quadruplets,
    build_triplets,
    check_strategy,
)


def _loss_or_zero(formula: Callable[..., Tensor], dist: Tensor, *distances: Tensor, **params) -> Tensor:
    if distances[0].numel() == 0:
        return dist.sum() * 0.0  # no valid tuple: a zero that keeps the graph to the embeddings
    return formula(*distances, **params)


def batch_contrastive_loss(
    embeddings: Tensor, labels: Tensor, margin: float = 1.0, metric: str = "euclidean",
    strategy: str = "hard", generator: torch.Generator | None = None,
) -> Tensor:
    """Contrastive loss (Hadsell et al. 2006) over the pairs of `build_pairs`.

    L = mean over selected pairs of y·d² + (1 − y)·max(margin − d, 0)². With no pair left (one image, or
    "random"/"hard" with no anchor having both a positive and a negative) returns 0 with a gradient.

    Args:
        embeddings: Embeddings `[N, D]`.
        labels: Identity labels `[N]`.
        margin: Distance beyond which negative pairs cost nothing (units of the metric).
        metric: "euclidean" or "cosine".
        strategy: One of `PAIR_STRATEGIES`.
        generator: Random source for "random".

    Returns:
        Scalar loss.

    Raises:
        ValueError: If `metric` or `strategy` is unknown or the shapes do not match.
    """
    dist = pairwise_distance(embeddings, embeddings, metric)
    d, same = build_pairs(dist, labels, strategy, generator)
    return _loss_or_zero(contrastive_loss, dist, d, same, margin=margin)


def batch_triplet_loss(
    embeddings: Tensor, labels: Tensor, margin: float | None = 0.3, metric: str = "euclidean",
    strategy: str = "hard", generator: torch.Generator | None = None,
) -> Tensor:
    """Triplet loss (Schroff et al. 2015) over the triplets of `build_triplets`.

    L = mean over selected triplets of max(d_ap − d_an + margin, 0) (`margin=None`: log(1 + exp(d_ap −
    d_an))). "hard" equals `trihard_loss`. With no valid anchor returns 0 with a gradient.

    Args:
        embeddings: Embeddings `[N, D]`.
        labels: Identity labels `[N]`.
        margin: Hinge margin (units of the metric), or None for the soft margin.
        metric: "euclidean" or "cosine".
        strategy: One of `TRIPLET_STRATEGIES`.
        generator: Random source for "random".

    Returns:
        Scalar loss.

    Raises:
        ValueError: If `metric` or `strategy` is unknown or the shapes do not match.
    """
    dist = pairwise_distance(embeddings, embeddings, metric)
    d_ap, d_an = build_triplets(dist, labels, strategy, generator)
    return _loss_or_zero(triplet_loss, dist, d_ap, d_an, margin=margin)


def batch_improved_triplet_loss(
    embeddings: Tensor, labels: Tensor, margin: float = 0.3, metric: str = "euclidean",
    strategy: str = "hard", generator: torch.Generator | None = None,
) -> Tensor:
    """Improved triplet loss (Cheng et al., CVPR 2016) over the triplets of `build_triplets`.

    L = mean over selected triplets of d_ap + max(d_ap − d_an + margin, 0). With no valid anchor returns 0
    with a gradient.

    Args:
        embeddings: Embeddings `[N, D]`.
        labels: Identity labels `[N]`.
        margin: Hinge margin (units of the metric).
        metric: "euclidean" or "cosine".
        strategy: One of `TRIPLET_STRATEGIES`.
        generator: Random source for "random".

    Returns:
        Scalar loss.

    Raises:
        ValueError: If `metric` or `strategy` is unknown or the shapes do not match.
    """
    dist = pairwise_distance(embeddings, embeddings, metric)
    d_ap, d_an = build_triplets(dist, labels, strategy, generator)
    return _loss_or_zero(improved_triplet_loss, dist, d_ap, d_an, margin=margin)


def batch_quadruplet_loss(
    embeddings: Tensor, labels: Tensor, alpha: float = 0.3, beta: float = 0.15, metric: str = "euclidean",
    strategy: str = "hard", generator: torch.Generator | None = None,
) -> Tensor:
    """Quadruplet loss (Chen et al., CVPR 2017) over the quadruplets of `build_quadruplets`.

    L = mean over selected quadruplets of max(d_ap − d_an1 + alpha, 0) + max(d_ap − d_n1n2 + beta, 0).
    Needs three identities; with no valid anchor returns 0 with a gradient.

    Args:
        embeddings: Embeddings `[N, D]`.
        labels: Identity labels `[N]`.
        alpha: Margin of the anchor term (units of the metric).
        beta: Margin of the negative-pair term.
        metric: "euclidean" or "cosine".
        strategy: One of `QUADRUPLET_STRATEGIES`.
        generator: Random source for "random".

    Returns:
        Scalar loss.

    Raises:
        ValueError: If `metric` or `strategy` is unknown or the shapes do not match.
    """
    dist = pairwise_distance(embeddings, embeddings, metric)
    quadruplets = build_quadruplets(dist, labels, strategy, generator)
    return _loss_or_zero(quadruplet_loss, dist, *quadruplets, alpha=alpha, beta=beta)


# Modules: validated hyperparameters, then the function.


def _check_common(metric: str, strategy: str, allowed: tuple[str, ...], **margins: float) -> None:
    check_metric(metric)
    check_strategy(strategy, allowed)
    for name, value in margins.items():
        _check_real(name, value, "a number >= 0", lambda v: v >= 0)


class _BatchTupleLoss(nn.Module):
    """Stores `metric`, `strategy` and an optional generator; subclasses store their margins."""

    def __init__(self, metric: str, strategy: str, generator: torch.Generator | None) -> None:
        super().__init__()
        self.metric = metric
        self.strategy = strategy
        self.generator = generator

    def extra_repr(self) -> str:
        return f"metric={self.metric!r}, strategy={self.strategy!r}"


class BatchContrastiveLoss(_BatchTupleLoss):
    """Module form of `batch_contrastive_loss`; `forward(embeddings [N, D], labels [N])`."""

    def __init__(self, margin: float = 1.0, metric: str = "euclidean", strategy: str = "hard",
                 generator: torch.Generator | None = None) -> None:
        """Raise ValueError for an unknown metric/strategy or a negative margin."""
        _check_common(metric, strategy, PAIR_STRATEGIES, margin=margin)
        super().__init__(metric, strategy, generator)
        self.margin = margin

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return batch_contrastive_loss(
            embeddings, labels, self.margin, self.metric, self.strategy, self.generator
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, {super().extra_repr()}"


class BatchTripletLoss(_BatchTupleLoss):
    """Module form of `batch_triplet_loss`; `forward(embeddings [N, D], labels [N])`."""

    def __init__(self, margin: float | None = 0.3, metric: str = "euclidean", strategy: str = "hard",
                 generator: torch.Generator | None = None) -> None:
        """Raise ValueError for an unknown metric/strategy or a negative margin (None: soft margin)."""
        _check_margin(margin)
        _check_common(metric, strategy, TRIPLET_STRATEGIES)
        super().__init__(metric, strategy, generator)
        self.margin = margin

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return batch_triplet_loss(embeddings, labels, self.margin, self.metric, self.strategy, self.generator)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, {super().extra_repr()}"


class BatchImprovedTripletLoss(_BatchTupleLoss):
    """Module form of `batch_improved_triplet_loss`; `forward(embeddings [N, D], labels [N])`."""

    def __init__(self, margin: float = 0.3, metric: str = "euclidean", strategy: str = "hard",
                 generator: torch.Generator | None = None) -> None:
        """Raise ValueError for an unknown metric/strategy or a negative margin."""
        _check_common(metric, strategy, TRIPLET_STRATEGIES, margin=margin)
        super().__init__(metric, strategy, generator)
        self.margin = margin

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return batch_improved_triplet_loss(
            embeddings, labels, self.margin, self.metric, self.strategy, self.generator
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, {super().extra_repr()}"


class BatchQuadrupletLoss(_BatchTupleLoss):
    """Module form of `batch_quadruplet_loss`; `forward(embeddings [N, D], labels [N])`."""

    def __init__(self, alpha: float = 0.3, beta: float = 0.15, metric: str = "euclidean",
                 strategy: str = "hard", generator: torch.Generator | None = None) -> None:
        """Raise ValueError for an unknown metric/strategy or a negative alpha/beta."""
        _check_common(metric, strategy, QUADRUPLET_STRATEGIES, alpha=alpha, beta=beta)
        super().__init__(metric, strategy, generator)
        self.alpha = alpha
        self.beta = beta

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return batch_quadruplet_loss(
            embeddings, labels, self.alpha, self.beta, self.metric, self.strategy, self.generator
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, {super().extra_repr()}"
