"""The single-gallery-shot protocol of CUHK03's classic splits (Li et al., "DeepReID: Deep Filter Pairing
Neural Network for Person Re-identification", CVPR 2014): one randomly drawn gallery image per identity,
metrics averaged over repeated draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reidkit.metrics.rank import (
    JUNK_RULES,
    QueryScores,
    as_distance_array,
    as_ids,
    check_positive,
    no_valid_query_message,
    summarize_scores,
)


def evaluate_single_gallery_shot(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    junk: str = "market",
    repeats: int = 10,
    seed: int = 0,
    chunk_size: int = 1024,
) -> dict:
    """CMC, mAP and mINP under the single-gallery-shot protocol of CUHK03's classic splits.

    Each repeat draws one gallery image per identity and ranks every query against those images.
    The draw: ``keys = numpy.random.default_rng(seed).random(G)`` (a fresh ``keys`` per repeat,
    from the same generator), and an identity's image is its allowed item with the smallest key.
    For a query, its own identity's allowed items are those that ``junk`` keeps (under
    ``"market"``: other cameras only, and pid -1 is never drawn nor a query with a match); every
    other identity's allowed items are all its images. The draw is shared by all queries of a
    repeat, so each query sees a uniformly drawn image per identity (Torchreid draws anew per
    query: same expectation, different samples). With one true match, AP = INP = 1 / its rank, so
    mAP equals mINP here; Torchreid's ``eval_cuhk03`` instead reports the AP over the full gallery.

    Args:
        distmat: ``[Q, G]`` distances as for :func:`evaluate_rank`.
        q_pids, g_pids, q_camids, g_camids: ``[Q]``/``[G]`` integer labels.
        max_rank: length of the CMC curve.
        junk: ``"market"`` or ``"none"`` (which own-identity images may be drawn).
        repeats: number of draws averaged.
        seed: seed of the draws; equal seeds give equal results.
        chunk_size: query rows compared at once (memory ``chunk_size · num identities``).

    Returns:
        The dictionary of :func:`evaluate_rank`, each value averaged over the ``repeats`` draws;
        ``num_valid_queries`` counts queries with an allowed true match (the same in every draw).

    Raises:
        ValueError: unknown ``junk``, bad shapes, sizes or counts, NaN distances, or no valid query.
    """
    if junk not in JUNK_RULES:
        raise ValueError(f"junk must be one of {JUNK_RULES}, got {junk!r}")
    check_positive(max_rank=max_rank, repeats=repeats, chunk_size=chunk_size)
    dist = as_distance_array(distmat)
    num_q, num_g = dist.shape
    q_pids, q_camids = as_ids(q_pids, "q_pids", num_q), as_ids(q_camids, "q_camids", num_q)
    g_pids, g_camids = as_ids(g_pids, "g_pids", num_g), as_ids(g_camids, "g_camids", num_g)
    for start in range(0, num_q, chunk_size):
        if np.isnan(dist[start : start + chunk_size]).any():
            raise ValueError(f"distmat contains {int(np.isnan(dist).sum())} NaN entries")

    rng = np.random.default_rng(seed)
    results = []
    for _ in range(repeats):
        columns, own = _draw_one_per_identity(rng.random(num_g), q_pids, q_camids, g_pids, g_camids, junk)
        rows = np.flatnonzero(own >= 0)
        if rows.size == 0:
            raise ValueError(no_valid_query_message(q_pids, q_camids, g_pids, g_camids, junk))
        first = np.concatenate([
            _single_match_ranks(dist, rows[i : i + chunk_size], columns, own, q_pids, g_pids)
            for i in range(0, len(rows), chunk_size)
        ])
        results.append(summarize_scores(QueryScores(first, 1.0 / first, 1.0 / first), max_rank))
    return {
        "cmc": np.mean([result["cmc"] for result in results], axis=0),
        "mAP": float(np.mean([result["mAP"] for result in results])),
        "mINP": float(np.mean([result["mINP"] for result in results])),
        "num_valid_queries": results[0]["num_valid_queries"],
    }


def _draw_one_per_identity(keys: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray, g_pids: np.ndarray,
                           g_camids: np.ndarray, junk: str) -> tuple[np.ndarray, np.ndarray]:
    """One draw of :func:`evaluate_single_gallery_shot` from ``keys`` ``[G]``.

    Returns:
        ``columns`` ``[P]``: the drawn gallery item of each identity (smallest key), ascending pid;
        ``own`` ``[Q]``: the drawn true match of each query, -1 when it has none.
    """
    candidates = np.flatnonzero(g_pids != -1) if junk == "market" else np.arange(len(g_pids))
    order = candidates[np.lexsort((keys[candidates], g_pids[candidates]))]  # by pid, then key
    if order.size == 0:
        return order, np.full(len(q_pids), -1)
    new_group = np.r_[True, g_pids[order][1:] != g_pids[order][:-1]]
    group = np.cumsum(new_group) - 1
    columns = order[new_group]
    pids = g_pids[columns]
    slot = np.minimum(np.searchsorted(pids, q_pids), len(pids) - 1)
    own = np.where(pids[slot] == q_pids, columns[slot], -1)
    if junk == "market":
        # Best item from another camera than the identity's best item: the query's own match
        # whenever the best item shares the query's camera.
        other = np.flatnonzero(g_camids[order] != g_camids[columns][group])
        second = np.full(len(columns), -1)
        groups, first = np.unique(group[other], return_index=True)
        second[groups] = order[other[first]]
        same_camera = g_camids[columns[slot]] == q_camids
        own = np.where((own >= 0) & same_camera, second[slot], own)
        own[q_pids == -1] = -1
    return columns, own


def _single_match_ranks(dist: np.ndarray, rows: np.ndarray, columns: np.ndarray, own: np.ndarray,
                        q_pids: np.ndarray, g_pids: np.ndarray) -> np.ndarray:
    """Rank of each query's drawn match ``own[rows]`` among the drawn items of the other identities
    ``columns``, ties ordered by gallery index."""
    matches = own[rows]
    target = dist[rows, matches][:, None]
    others = dist[rows[:, None], columns[None, :]]
    before = (others < target) | ((others == target) & (columns[None, :] < matches[:, None]))
    before &= g_pids[columns][None, :] != q_pids[rows][:, None]
    return 1 + before.sum(axis=1)
