"""Query expansion: each feature is replaced by a weighted mean of itself and its nearest gallery features.

References:
    Chum et al., "Total Recall: Automatic Query Expansion with a Generative Feature Model for Object
    Retrieval", ICCV 2007 (average query expansion).
    Radenović et al., "Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI 2018 (αQE).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def alpha_query_expansion(
    query_features: Tensor,
    gallery_features: Tensor,
    top_k: int = 5,
    alpha: float = 3.0,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """αQE (Radenović et al., TPAMI 2018) of query and gallery features.

    Features are L2-normalised first. Each feature f becomes normalise(f + Σ_n max(cos(f, g_n), 0)^α ·
    g_n) over its ``top_k`` most similar gallery features g_n; a gallery item skips itself (by index)
    and uses its ``top_k`` most similar other items. ``alpha = 0`` weighs every neighbour 1
    (average query expansion). No gradient flows.

    Args:
        query_features: ``[Q, D]`` query features (torch or numpy).
        gallery_features: ``[G, D]`` gallery features.
        top_k: neighbours per feature (≥ 0), clamped to the gallery size (minus one for gallery items).
        alpha: exponent α ≥ 0 of the similarity weights.
        chunk_size: rows processed at once; memory O(chunk_size · (G + top_k · D)).

    Returns:
        ``(query, gallery)`` expanded L2-normalised features, ``[Q, D]`` and ``[G, D]``, in the promoted
        floating dtype of the inputs (at least float32).

    Raises:
        ValueError: features not 2-D, differing dimensions, non-finite values, or negative
            ``top_k``/``alpha`` or ``chunk_size`` < 1.
    """
    if top_k < 0 or alpha < 0 or chunk_size < 1:
        raise ValueError(f"top_k and alpha must be >= 0 and chunk_size >= 1, got {top_k}, {alpha}, {chunk_size}")
    query, gallery = (torch.as_tensor(x) for x in (query_features, gallery_features))
    dtype = torch.promote_types(torch.promote_types(query.dtype, gallery.dtype), torch.float32)
    query, gallery = query.to(dtype), gallery.to(dtype)
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"features must be [N, D] with equal D, got {tuple(query.shape)} and {tuple(gallery.shape)}")
    if not (torch.isfinite(query).all() and torch.isfinite(gallery).all()):
        raise ValueError("features contain NaN or infinite values")
    query, gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)
    return (_expand(query, gallery, top_k, alpha, chunk_size, skip_self=False),
            _expand(gallery, gallery, top_k, alpha, chunk_size, skip_self=True))


def average_query_expansion(
    query_features: Tensor, gallery_features: Tensor, top_k: int = 5, chunk_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """Average query expansion (Chum et al., ICCV 2007): αQE with α = 0.

    Each L2-normalised feature becomes the L2-normalised mean of itself and its ``top_k`` most similar
    gallery features (a gallery item skips itself). Arguments, returns and errors as
    ``alpha_query_expansion``.
    """
    return alpha_query_expansion(query_features, gallery_features, top_k, 0.0, chunk_size)


def _expand(features: Tensor, gallery: Tensor, top_k: int, alpha: float, chunk_size: int, skip_self: bool) -> Tensor:
    """Rows of ``features`` ``[N, D]`` plus their weighted ``top_k`` gallery neighbours, L2-normalised."""
    num = min(top_k, len(gallery) - int(skip_self))
    expanded = torch.empty_like(features)
    for start in range(0, len(features), chunk_size):
        rows = features[start:start + chunk_size]
        similarity = rows @ gallery.T
        if skip_self:
            index = torch.arange(len(rows), device=rows.device)
            similarity[index, index + start] = -torch.inf
        top_similarity, top_index = similarity.topk(num, dim=1)
        weight = top_similarity.clamp_min(0).pow(alpha)  # 0^0 = 1: alpha = 0 averages
        expanded[start:start + chunk_size] = rows + (weight.unsqueeze(2) * gallery[top_index]).sum(dim=1)
    return F.normalize(expanded, dim=1)
