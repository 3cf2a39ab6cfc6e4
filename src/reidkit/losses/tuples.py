"""Tuple builders: which pairs, triplets and quadruplets of a PK batch a loss counts.

A PK batch holds P identities × K images. The builders read a distance matrix `[N, N]` and labels `[N]`
and return the distances of the selected tuples, so each element-wise formula of `metric.py`
(`contrastive_loss`, `triplet_loss`, `improved_triplet_loss`, `quadruplet_loss`) becomes trainable on a
batch without a second copy of any hinge. Strategies:

- "all": every valid tuple (O(N³) triplets, O(N⁴) quadruplets: for small batches);
- "random": per anchor, uniformly drawn members (optional `torch.Generator` for determinism);
- "hard": per anchor, the hardest members (Hermans et al. 2017, batch hard; Chen et al. 2017, quadruplet
  margin-based online hard negative mining);
- "nn_adaptive" (triplets only): a distance-based adaptive selection whose width follows the batch's
  nearest-neighbour error — see `build_triplets`. (Formerly "adaptive"; the classifier-based adaptive hard
  sample mining of Chen et al., ICIP 2018, is `reidkit.losses.hard_samples`.)

Anchors lacking what a tuple needs (a positive, a negative, a second negative identity) are left out.
The batch losses composing builders and formulas live in `tuple_losses.py`.
"""

import torch
from torch import Tensor

from reidkit.losses.metric import _anchor_masks, hardest_pairs

PAIR_STRATEGIES = ("all", "random", "hard")
TRIPLET_STRATEGIES = ("all", "random", "hard", "nn_adaptive")
QUADRUPLET_STRATEGIES = ("all", "random", "hard")


def check_strategy(strategy: str, allowed: tuple[str, ...]) -> None:
    """Raise ValueError listing `allowed` if `strategy` is not one of them."""
    if strategy == "adaptive" and "nn_adaptive" in allowed:
        raise ValueError("strategy 'adaptive' was renamed 'nn_adaptive' (a distance-based variant; the "
                         "classifier-based adaptive hard sample mining is reidkit.losses.HardSampleCrossEntropy)")
    if strategy not in allowed:
        raise ValueError(f"strategy must be one of {allowed}, got {strategy!r}")


def _random_choice(mask: Tensor, generator: torch.Generator | None) -> Tensor:
    """One column per row of `mask` `[R, C]`, uniform over its True entries (arbitrary for empty rows)."""
    device = mask.device if generator is None else generator.device
    scores = torch.rand(mask.shape, generator=generator, device=device).to(mask.device)
    return scores.masked_fill(~mask, -1.0).argmax(dim=1)


def _random_pairs(dist: Tensor, labels: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Per valid anchor, the distance to one random positive and to one random negative."""
    positive, negative, valid = _anchor_masks(dist, labels)
    d_ap = dist.gather(1, _random_choice(positive, generator)[:, None]).squeeze(1)
    d_an = dist.gather(1, _random_choice(negative, generator)[:, None]).squeeze(1)
    return d_ap[valid], d_an[valid]


def build_pairs(
    dist: Tensor, labels: Tensor, strategy: str = "hard", generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Pairs for the contrastive loss.

    "all": every unordered pair i < j; "random": per anchor one random positive and one random negative
    (balanced: as many positive as negative pairs); "hard": per anchor its farthest positive and nearest
    negative. For "random"/"hard" anchors without a positive or a negative are left out.

    Args:
        dist: Distance matrix `[N, N]`.
        labels: Identity labels `[N]`.
        strategy: One of `PAIR_STRATEGIES`.
        generator: Random source for "random".

    Returns:
        `(d, y)`, each `[M]`: pair distances and a bool same-identity indicator (positives first for
        "random"/"hard").

    Raises:
        ValueError: If `strategy` is unknown or the shapes do not match.
    """
    check_strategy(strategy, PAIR_STRATEGIES)
    _anchor_masks(dist, labels)  # shape check
    if strategy == "all":
        first, second = torch.triu_indices(len(labels), len(labels), offset=1, device=dist.device)
        return dist[first, second], labels[first] == labels[second]
    if strategy == "hard":
        d_ap, d_an = hardest_pairs(dist, labels)
    else:
        d_ap, d_an = _random_pairs(dist, labels, generator)
    same = torch.cat([torch.ones_like(d_ap, dtype=torch.bool), torch.zeros_like(d_an, dtype=torch.bool)])
    return torch.cat([d_ap, d_an]), same


def _nn_adaptive_triplets(dist: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    positive, negative, valid = _anchor_masks(dist, labels)
    limits = torch.finfo(dist.dtype)
    d_ap = dist.masked_fill(~positive, limits.min).amax(dim=1)
    nearest_positive = dist.masked_fill(~positive, limits.max).amin(dim=1)
    nearest_negative = dist.masked_fill(~negative, limits.max).amin(dim=1)
    errors = int((nearest_negative <= nearest_positive)[valid].sum())  # 1-NN mistakes (ties count)
    num_valid = max(int(valid.sum()), 1)
    k = (errors * negative.sum(dim=1) + num_valid - 1) // num_valid  # ceil(ρ·|N(a)|) in integers
    rank = dist.detach().masked_fill(~negative, limits.max).argsort(dim=1, stable=True).argsort(dim=1)
    anchors, negatives = (negative & valid[:, None] & (rank < k.clamp_min(1)[:, None])).nonzero(as_tuple=True)
    return d_ap[anchors], dist[anchors, negatives]


def build_triplets(
    dist: Tensor, labels: Tensor, strategy: str = "hard", generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Triplets (a, p, n) for the triplet losses, as `(d_ap, d_an)`.

    "all": every (a, p, n) with p ≠ a of a's identity and n of another (memory O(N³));
    "random": per anchor one random positive and one random negative;
    "hard": per anchor max_p d(a, p) and min_n d(a, n) (batch hard, `hardest_pairs`);
    "nn_adaptive": with ρ = the batch's leave-one-out nearest-neighbour error,
    ρ = |{a : min_n d(a, n) ≤ min_p d(a, p)}| / |valid anchors| (a detached, discrete progress signal),
    each anchor keeps its hardest positive and its k_a = max(1, ceil(ρ·|N(a)|)) nearest negatives. Early
    in training ρ is large and many moderately hard negatives are averaged (gentle, semi-hard-like); as
    the embedding improves ρ → 0 and the selection narrows to batch hard (k_a = 1).
    This is not Chen et al.'s adaptive hard sample mining (ICIP 2018), which grades samples by an identity
    classifier's prediction (`reidkit.losses.hard_samples`); it borrows the idea with the 1-NN identity
    inside the batch as the "prediction" and a per-batch top-k on distances, with no state between batches.

    Args:
        dist: Distance matrix `[N, N]`.
        labels: Identity labels `[N]`.
        strategy: One of `TRIPLET_STRATEGIES`.
        generator: Random source for "random".

    Returns:
        `(d_ap, d_an)`, each `[M]` (M = number of triplets; one per valid anchor for "random"/"hard").

    Raises:
        ValueError: If `strategy` is unknown or the shapes do not match.
    """
    check_strategy(strategy, TRIPLET_STRATEGIES)
    if strategy == "hard":
        return hardest_pairs(dist, labels)
    if strategy == "random":
        return _random_pairs(dist, labels, generator)
    if strategy == "nn_adaptive":
        return _nn_adaptive_triplets(dist, labels)
    positive, negative, _ = _anchor_masks(dist, labels)
    anchors, positives, negatives = (positive[:, :, None] & negative[:, None, :]).nonzero(as_tuple=True)
    return dist[anchors, positives], dist[anchors, negatives]


def build_quadruplets(
    dist: Tensor, labels: Tensor, strategy: str = "hard", generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Quadruplets (a, p, n1, n2) for the quadruplet loss (Chen et al., CVPR 2017), as distances.

    n1 and n2 are of two identities different from each other and from the anchor's. "all": every
    (a, p, n1, n2), the pair sharing n1 with the anchor term (memory O(N⁴)); "random": per anchor a random
    p, a random n1 and a random n2 (uniform over (n1, n2) pairs in a PK batch); "hard": per anchor
    max_p d(a, p), min_n d(a, n) and, independently, the closest pair (n1', n2) with both identities ≠ the
    anchor's (margin-based online hard negative mining). Anchors without a positive or without two other
    identities are left out.

    Args:
        dist: Distance matrix `[N, N]`.
        labels: Identity labels `[N]`.
        strategy: One of `QUADRUPLET_STRATEGIES`.
        generator: Random source for "random".

    Returns:
        `(d_ap, d_an1, d_n1n2)`, each `[M]`.

    Raises:
        ValueError: If `strategy` is unknown or the shapes do not match.
    """
    check_strategy(strategy, QUADRUPLET_STRATEGIES)
    positive, negative, valid = _anchor_masks(dist, labels)
    if strategy == "hard":
        identities, inverse = labels.unique(return_inverse=True)
        other = labels[None, :] != identities[:, None]  # [U, N]: image not of identity u
        pair_ok = negative & other[:, :, None] & other[:, None, :]  # [U, N, N]
        closest = dist.masked_fill(~pair_ok, torch.finfo(dist.dtype).max).flatten(1).amin(dim=1)
        has_pair = pair_ok.flatten(1).any(dim=1)[inverse][valid]
        d_ap, d_an1 = hardest_pairs(dist, labels)
        return d_ap[has_pair], d_an1[has_pair], closest[inverse][valid][has_pair]
    if strategy == "random":
        p = _random_choice(positive, generator)
        n1 = _random_choice(negative, generator)
        second = negative & negative[n1]  # n2 differs from the anchor and from n1
        n2 = _random_choice(second, generator)
        keep = valid & second.any(dim=1)
        anchors = keep.nonzero(as_tuple=True)[0]
        return dist[anchors, p[keep]], dist[anchors, n1[keep]], dist[n1[keep], n2[keep]]
    anchors, positives, n1 = (positive[:, :, None] & negative[:, None, :]).nonzero(as_tuple=True)
    index, n2 = (negative[anchors] & negative[n1]).nonzero(as_tuple=True)
    anchors, positives, n1 = anchors[index], positives[index], n1[index]
    return dist[anchors, positives], dist[anchors, n1], dist[n1, n2]
