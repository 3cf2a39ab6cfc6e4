"""CMC, mAP and mINP straight from query and gallery features, without the full distance matrix.

Distances are computed for one block of queries at a time (``pairwise_distance`` on gallery tiles,
which bounds its temporaries: it squares its second argument out of place), scored at once by
:func:`reidkit.metrics.rank.query_scores` and dropped; the per-query scores are averaged at the end
by :func:`reidkit.metrics.rank.summarize_scores`. Peak memory is the features plus one
``[query_chunk, G]`` block and its ranking buffers, instead of the ``[Q, G]`` matrix (MSMT17:
11,659 × 82,161 distances are 3.8 GB in float32). Protocol and references as in
:mod:`reidkit.metrics.rank` (Market-1501: Zheng et al., ICCV 2015; mINP: Ye et al., TPAMI 2021).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from reidkit.distances import check_metric, pairwise_distance
from reidkit.metrics.rank import (
    JUNK_RULES,
    QueryScores,
    default_num_threads,
    no_valid_query_message,
    query_scores,
    summarize_scores,
)
from reidkit.metrics.rank_torch import torch_query_scores

_RANK_ROWS = 64  # query rows ranked at once per thread: fastest for wide galleries (cache-sized buffers)


def evaluate_features(
    query_features: Any,
    gallery_features: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    metric: str = "euclidean",
    max_rank: int = 50,
    junk: str = "market",
    query_chunk: int = 512,
    gallery_chunk: int = 8192,
    num_threads: int | None = None,
) -> dict:
    """:func:`~reidkit.metrics.rank.evaluate_rank` of the features' distances, in bounded memory.

    The result equals ``evaluate_rank(pairwise_distance(query_features, gallery_features, metric),
    ...)`` whenever the blocks' distances equal the rows of the full matrix (matrix products may
    round differently by block shape, in the last bits only).

    Args:
        query_features: ``[Q, D]`` features (torch or numpy). On a GPU the distances are computed and
            ranked there block by block (``reidkit.metrics.rank_torch``, the same scores); elsewhere
            they are ranked on the CPU by threads.
        gallery_features: ``[G, D]`` features on the same device.
        q_pids: ``[Q]`` integer query identities.
        g_pids: ``[G]`` integer gallery identities.
        q_camids: ``[Q]`` integer query cameras.
        g_camids: ``[G]`` integer gallery cameras.
        metric: ``"euclidean"`` or ``"cosine"`` (see ``pairwise_distance``).
        max_rank: length of the CMC curve.
        junk: ``"market"`` or ``"none"`` (see ``evaluate_rank``).
        query_chunk: queries per distance block. Memory beyond the features is about
            ``4 · query_chunk · G`` bytes (the float32 block), ``13 · 64 · G`` per ranking thread,
            and the temporaries of one tile (a few ``[query_chunk, gallery_chunk]`` arrays and the
            squared ``[gallery_chunk, D]`` tile). Larger blocks amortise the per-call cost of
            ``pairwise_distance``, which squares the whole gallery tile on every call. The
            defaults evaluate MSMT17 size (2,048-d) in about 1.7 GB of process memory.
        gallery_chunk: gallery rows per ``pairwise_distance`` call (a tile of the block).
        num_threads: ranking threads per block; None uses ``min(4, os.cpu_count())``.

    Returns:
        ``{"cmc": float64 [max_rank], "mAP": float, "mINP": float, "num_valid_queries": int}``.

    Raises:
        ValueError: unknown ``metric`` or ``junk``, mismatched shapes or label lengths, NaN
            distances, or no valid query.
    """
    check_metric(metric)
    if junk not in JUNK_RULES:
        raise ValueError(f"junk must be one of {JUNK_RULES}, got {junk!r}")
    for name, value in (("max_rank", max_rank), ("query_chunk", query_chunk), ("gallery_chunk", gallery_chunk),
                        ("num_threads", num_threads)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    query, gallery = torch.as_tensor(query_features), torch.as_tensor(gallery_features)
    if query.dim() != 2 or gallery.dim() != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"expected query_features [Q, D] and gallery_features [G, D], "
            f"got {tuple(query.shape)} and {tuple(gallery.shape)}"
        )
    for name, labels, size in (("q_pids", q_pids, len(query)), ("q_camids", q_camids, len(query)),
                               ("g_pids", g_pids, len(gallery)), ("g_camids", g_camids, len(gallery))):
        if len(labels) != size:
            raise ValueError(f"{name} must have length {size} (from the features), got {len(labels)}")

    parts = []
    for start, block in distance_blocks(query, gallery, metric, query_chunk, gallery_chunk):
        rows = slice(start, start + len(block))
        parts.append(block_scores(block, q_pids[rows], g_pids, q_camids[rows], g_camids, junk, num_threads))
        del block
    scores = QueryScores.concatenate(parts)
    if scores.first_rank.size == 0:
        raise ValueError(no_valid_query_message(q_pids, q_camids, g_pids, g_camids, junk))
    return summarize_scores(scores, max_rank)


def block_scores(block: torch.Tensor, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, junk: str,
                 num_threads: int | None = None) -> QueryScores:
    """The `QueryScores` of one `[C, G]` block of distances, ranked where it lies: on a GPU by
    ``reidkit.metrics.rank_torch``, on the CPU by ``query_scores`` with ``num_threads`` threads (None:
    ``default_num_threads()``), each taking at most 64 rows at a time (cache-sized buffers)."""
    if ranks_on_device(block):
        return torch_query_scores(block, q_pids, g_pids, q_camids, g_camids, junk)
    workers = num_threads or default_num_threads()
    return query_scores(block.numpy(), q_pids, g_pids, q_camids, g_camids, junk=junk,
                        chunk_size=min(_RANK_ROWS, -(-len(block) // workers)), num_threads=workers)


def distance_blocks(query: torch.Tensor, gallery: torch.Tensor, metric: str, query_chunk: int = 512,
                    gallery_chunk: int = 8192) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first row, [C, G] distances)`` for each block of ``query_chunk`` queries, on the features' device.

    Each block is filled by ``pairwise_distance`` on gallery tiles of ``gallery_chunk`` rows, which bounds
    the temporaries (it squares its second argument out of place) to one tile's.
    """
    with torch.no_grad():
        for start in range(0, len(query), query_chunk):
            rows = query[start:start + query_chunk]
            first = pairwise_distance(rows, gallery[:gallery_chunk], metric)
            block = first.new_empty((len(rows), len(gallery)))
            block[:, :gallery_chunk] = first
            for tile in range(gallery_chunk, len(gallery), gallery_chunk):
                block[:, tile:tile + gallery_chunk] = pairwise_distance(rows, gallery[tile:tile + gallery_chunk],
                                                                        metric)
            yield start, block


def ranks_on_device(features: torch.Tensor) -> bool:
    """Whether blocks of `features`' distances are ranked where they are computed (a GPU) rather than on
    the CPU by threads."""
    return features.device.type != "cpu"
