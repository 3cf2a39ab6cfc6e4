"""Ranking metrics for re-identification: CMC, mAP and mINP under the Market-1501 protocol.

References:
    Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015 (Market-1501, CMC, mAP).
    Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook", TPAMI 2021 (mINP).

AP is the non-interpolated average precision of the common Python tools, (1/R)·Σ_k P@k·rel_k; the
official MATLAB code uses a trapezoidal AP and gives different numbers.

Algorithm. No gallery is sorted: the metrics only need the rank of each true match, i.e. how many
kept gallery items precede it in the order (distance, gallery index). Per chunk of queries, a
monotone map sends each distance to one of ``_NUM_CELLS`` cells of its row; a per-row histogram of
the kept non-matching items gives, for each true match, how many of them lie in earlier cells. Items
sharing a cell with a true match are compared with it exactly (distance, then gallery index), so the
ranks equal those of a stable sort, for a few vectorised passes over the chunk and no Q×G index
array. :func:`query_scores` returns the per-query scores (first-match rank, AP, INP) and
:func:`summarize_scores` averages them, so callers that produce distances chunk by chunk
(``reidkit.metrics.features_eval``) aggregate exactly as :func:`evaluate_rank` does.

The single-gallery-shot protocol of CUHK03's classic splits is in :mod:`reidkit.metrics.single_shot`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

JUNK_RULES = ("market", "none")
_NUM_CELLS = 2048  # histogram cells per query row; more cells = fewer exact comparisons


class QueryScores(NamedTuple):
    """Scores of the valid queries of an evaluation, in query order (``n`` valid queries).

    Attributes:
        first_rank: ``[n]`` int64 1-based rank of each query's first true match after junk removal.
        ap: ``[n]`` float64 non-interpolated average precision.
        inp: ``[n]`` float64 inverse negative penalty, R / (rank of the last true match).
    """

    first_rank: np.ndarray
    ap: np.ndarray
    inp: np.ndarray

    @classmethod
    def concatenate(cls, parts: list[QueryScores]) -> QueryScores:
        """Scores of consecutive query blocks joined in order (empty when ``parts`` is empty)."""
        empty = np.zeros(0, np.int64)
        parts = [cls(empty, empty.astype(np.float64), empty.astype(np.float64)), *parts]
        return cls(*(np.concatenate(column) for column in zip(*parts)))


def evaluate_rank(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    junk: str = "market",
    chunk_size: int = 256,
    num_threads: int | None = None,
) -> dict:
    """CMC, mAP and mINP of a query-gallery distance matrix.

    Under ``junk="market"``, gallery items with the query's pid and camera, and gallery items with
    pid -1, are removed from that query's ranking; ``junk="none"`` removes nothing (single-camera
    data). A query left with no true match is skipped and counted in no denominator.

    Args:
        distmat: ``[Q, G]`` distances (numpy or torch; float32 and float64 are used as they are,
            other dtypes are converted to float64). Smaller is closer. Not modified.
        q_pids: ``[Q]`` integer query identities.
        g_pids: ``[G]`` integer gallery identities.
        q_camids: ``[Q]`` integer query cameras.
        g_camids: ``[G]`` integer gallery cameras.
        max_rank: length of the CMC curve.
        junk: ``"market"`` or ``"none"``.
        chunk_size: queries processed at once by one thread; memory is about
            ``13 · chunk_size · G`` bytes per thread (float32), never O(Q · G).
        num_threads: threads working on chunks; None uses ``min(4, os.cpu_count())``. Results do
            not depend on it nor on ``chunk_size``.

    Returns:
        ``{"cmc": float64 [max_rank], "mAP": float, "mINP": float, "num_valid_queries": int}``;
        ``cmc[k]`` is the fraction of valid queries whose first true match has rank ≤ k + 1. Ties in
        distance are ordered by gallery index.

    Raises:
        ValueError: unknown ``junk``, bad shapes or sizes, NaN distances, or no valid query.
    """
    check_positive(max_rank=max_rank)
    scores = query_scores(distmat, q_pids, g_pids, q_camids, g_camids, junk, chunk_size, num_threads)
    if scores.first_rank.size == 0:
        raise ValueError(no_valid_query_message(q_pids, q_camids, g_pids, g_camids, junk))
    return summarize_scores(scores, max_rank)


def query_scores(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    junk: str = "market",
    chunk_size: int = 256,
    num_threads: int | None = None,
) -> QueryScores:
    """Per-query scores behind :func:`evaluate_rank` (same arguments, same rules, same memory).

    Returns:
        The :class:`QueryScores` of the valid queries, in query order; empty when no query is
        valid (no error: a caller scoring query blocks one by one decides at the end).

    Raises:
        ValueError: unknown ``junk``, bad shapes or sizes, or NaN distances.
    """
    if junk not in JUNK_RULES:
        raise ValueError(f"junk must be one of {JUNK_RULES}, got {junk!r}")
    check_positive(chunk_size=chunk_size, num_threads=num_threads)
    if getattr(distmat, "is_cuda", False):  # a GPU ranks its own rows (same scores; no copy to the host)
        from reidkit.metrics.rank_torch import torch_query_scores

        if distmat.dim() != 2:
            raise ValueError(f"distmat must be 2-D [Q, G], got shape {tuple(distmat.shape)}")
        return QueryScores.concatenate([
            torch_query_scores(distmat[start:start + chunk_size], q_pids[start:start + chunk_size], g_pids,
                               q_camids[start:start + chunk_size], g_camids, junk)
            for start in range(0, len(distmat), chunk_size)])
    dist = as_distance_array(distmat)
    num_q, num_g = dist.shape
    q_pids, q_camids = as_ids(q_pids, "q_pids", num_q), as_ids(q_camids, "q_camids", num_q)
    g_pids, g_camids = as_ids(g_pids, "g_pids", num_g), as_ids(g_camids, "g_camids", num_g)

    gallery = _Gallery(g_pids, g_camids, junk)
    starts = range(0, num_q, chunk_size)
    workers = max(1, min(num_threads or default_num_threads(), len(starts)))

    def run(worker: int) -> list[QueryScores]:
        """Scores of chunks ``worker``, ``worker + workers``, ...; each worker owns its buffers."""
        rows = min(chunk_size, num_q)
        work = (np.empty((rows, num_g), dist.dtype), np.empty((rows, num_g), np.int64))
        return [_chunk_scores(dist, start, chunk_size, q_pids, q_camids, gallery, work)
                for start in starts[worker::workers]]

    if workers == 1:
        per_worker = [run(0)]
    else:
        with ThreadPoolExecutor(workers) as pool:
            per_worker = list(pool.map(run, range(workers)))
    return QueryScores.concatenate([per_worker[i % workers][i // workers] for i in range(len(starts))])


def summarize_scores(scores: QueryScores, max_rank: int = 50) -> dict:
    """CMC, mAP and mINP averaged over the valid queries of ``scores``.

    Returns:
        The dictionary of :func:`evaluate_rank`.

    Raises:
        ValueError: ``max_rank`` < 1, or ``scores`` is empty (no valid query).
    """
    check_positive(max_rank=max_rank)
    first = scores.first_rank
    if first.size == 0:
        raise ValueError("no valid query: no query has a true match left in the gallery")
    hits = np.bincount(np.minimum(first, max_rank + 1) - 1, minlength=max_rank + 1)[:max_rank]
    return {
        "cmc": np.cumsum(hits) / first.size,
        "mAP": float(np.mean(scores.ap)),
        "mINP": float(np.mean(scores.inp)),
        "num_valid_queries": int(first.size),
    }


def default_num_threads() -> int:
    """Threads used when ``num_threads`` is None: ``min(4, os.cpu_count())``."""
    return min(4, os.cpu_count() or 1)


def check_positive(**values: int | None) -> None:
    """Raise ``ValueError`` naming every given value that is not None and below 1."""
    bad = {name: value for name, value in values.items() if value is not None and value < 1}
    if bad:
        raise ValueError(", ".join(f"{name} must be >= 1, got {value}" for name, value in bad.items()))


def _chunk_scores(dist: np.ndarray, start: int, size: int, q_pids: np.ndarray, q_camids: np.ndarray,
                  gallery: _Gallery, work: tuple[np.ndarray, np.ndarray]) -> QueryScores:
    """First-match rank, AP and INP of the valid queries among rows ``[start, start + size)``."""
    chunk = np.ascontiguousarray(dist[start : start + size])
    if chunk.shape[1] and np.isnan(chunk.min(axis=1)).any():
        raise ValueError(f"distmat contains {int(np.isnan(dist).sum())} NaN entries")
    ranks, num_true = _match_ranks(chunk, q_pids[start : start + size], q_camids[start : start + size],
                                   gallery, work)
    return QueryScores(*_query_scores(ranks, num_true))


class _Gallery:
    """Gallery labels with columns grouped by pid (columns ascending within a group)."""

    def __init__(self, pids: np.ndarray, camids: np.ndarray, junk: str) -> None:
        self.pids, self.camids, self.junk = pids, camids, junk
        self.junk_columns = np.flatnonzero(pids == -1) if junk == "market" else np.zeros(0, np.intp)
        self.order = np.argsort(pids, kind="stable")
        self.groups, self.starts, self.sizes = np.unique(
            pids[self.order], return_index=True, return_counts=True
        )

    def same_pid(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, cols)`` of every gallery item whose pid equals ``q_pids[row]``, row-major."""
        if len(self.groups) == 0:
            return np.zeros(0, np.intp), np.zeros(0, np.intp)
        pos = np.minimum(np.searchsorted(self.groups, q_pids), len(self.groups) - 1)
        sizes = np.where(self.groups[pos] == q_pids, self.sizes[pos], 0)
        rows = np.repeat(np.arange(len(q_pids)), sizes)
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return rows, self.order[np.repeat(self.starts[pos], sizes) + offsets]

    def is_kept_negative(self, q_pids: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Whether gallery item ``cols[i]`` stays in the ranking of a query of pid ``q_pids[i]`` and
        is not a match."""
        keep = self.pids[cols] != q_pids
        return keep & (self.pids[cols] != -1) if self.junk == "market" else keep


def _match_ranks(dist: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray, gallery: _Gallery,
                 work: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of the true matches of one chunk of queries ``dist`` ``[C, G]`` (``work``: buffers for
    :func:`_cells`).

    Returns ``(ranks, num_true)`` for the valid queries only: ``num_true`` ``[n]`` counts true
    matches per query and ``ranks`` ``[sum(num_true)]`` holds their 1-based ranks after junk
    removal, query by query, increasing within a query.
    """
    rows, cols = gallery.same_pid(q_pids)
    is_true = np.ones(len(rows), bool)
    if gallery.junk == "market":
        is_true = (gallery.camids[cols] != q_camids[rows]) & (q_pids[rows] != -1)
    valid = np.bincount(rows[is_true], minlength=len(q_pids)) > 0
    if not valid.all():
        keep = valid[rows]
        rows, cols, is_true = np.cumsum(valid)[rows[keep]] - 1, cols[keep], is_true[keep]
        dist, q_pids = dist[valid], q_pids[valid]
    n = len(dist)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)

    # True matches in the order (query, distance, column); `local` = matches before it in its query.
    t_rows, t_cols = rows[is_true], cols[is_true]
    t_dist = dist[t_rows, t_cols]
    order = np.lexsort((t_cols, t_dist, t_rows))
    t_rows, t_cols, t_dist = t_rows[order], t_cols[order], t_dist[order]
    num_true = np.bincount(t_rows, minlength=n)
    local = np.arange(len(t_rows)) - np.repeat(np.cumsum(num_true) - num_true, num_true)

    # Kept non-matches per cell; those in cells before a match's cell all precede it.
    cells = _cells(dist, work[0][:n], work[1][:n])
    t_cells = cells[t_rows, t_cols]  # non-decreasing: cells are monotone in distance
    counts = np.bincount(cells.reshape(-1), minlength=n * _NUM_CELLS)
    counts -= np.bincount(cells[rows, cols], minlength=n * _NUM_CELLS)
    if gallery.junk_columns.size:
        counts -= np.bincount(cells[:, gallery.junk_columns].reshape(-1), minlength=n * _NUM_CELLS)
    counts = counts.reshape(n, _NUM_CELLS)
    before = (np.cumsum(counts, axis=1) - counts).reshape(-1)[t_cells]

    # Kept non-matches sharing a cell with a match: compare with that cell's matches exactly.
    has_match = np.zeros(n * _NUM_CELLS, bool)
    has_match[t_cells] = True
    shared = np.flatnonzero(np.take(has_match, cells.reshape(-1)))
    s_rows, s_cols = np.divmod(shared, dist.shape[1])
    negative = gallery.is_kept_negative(q_pids[s_rows], s_cols)
    shared, s_rows, s_cols = shared[negative], s_rows[negative], s_cols[negative]
    s_dist, s_cells = dist.reshape(-1)[shared], cells.reshape(-1)[shared]
    lo, hi = np.searchsorted(t_cells, s_cells, "left"), np.searchsorted(t_cells, s_cells, "right")
    preceding = lo.copy()  # matches before the item = index of the first match it precedes
    for offset in range(int((hi - lo).max(initial=0))):
        pos = np.minimum(lo + offset, len(t_dist) - 1)
        earlier = (t_dist[pos] < s_dist) | ((t_dist[pos] == s_dist) & (t_cols[pos] < s_cols))
        preceding += (lo + offset < hi) & earlier
    # Items of a match's cell that precede it = items whose `preceding` lies in [cell start, match];
    # items after every match of their cell (preceding == hi) only count for later cells.
    per_match = np.bincount(preceding[preceding < hi], minlength=len(t_cells))
    running = np.cumsum(per_match)
    cell_start = np.searchsorted(t_cells, t_cells, "left")
    before += running - (running - per_match)[cell_start]
    return local + 1 + before, num_true


def _cells(dist: np.ndarray, scratch: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Global cell ``row * K + k`` (``k`` in ``[0, K)``) of each distance, written to ``out``.

    The map is non-decreasing in distance within a row (IEEE rounding is monotone); rows whose
    span is zero or not finite map to cell 0.

    Args:
        dist: ``[n, G]`` distances without NaN.
        scratch: ``[n, G]`` buffer of ``dist.dtype``.
        out: ``[n, G]`` int64 buffer.
    """
    low, high = dist.min(axis=1), dist.max(axis=1)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        span = high - low
        scale = ((_NUM_CELLS - 1) / span.astype(np.float64)).astype(dist.dtype)
        regular = np.isfinite(span) & (span > 0) & np.isfinite(scale)
        np.subtract(dist, np.where(regular, low, 0)[:, None], out=scratch)
        np.multiply(scratch, np.where(regular, scale, 0)[:, None], out=scratch)  # [0, K - 1 + tiny]
    scratch[~regular] = 0
    np.copyto(out, scratch, casting="unsafe")
    out += (np.arange(len(dist)) * _NUM_CELLS)[:, None]
    return out


def _query_scores(ranks: np.ndarray, num_true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First-match rank, non-interpolated AP and INP per query from the ranks of its true matches."""
    start = np.cumsum(num_true) - num_true
    local = np.arange(len(ranks)) - np.repeat(start, num_true)
    owner = np.repeat(np.arange(len(num_true)), num_true)
    # bincount sums each query's terms in order, so results do not depend on the chunking.
    ap = np.bincount(owner, weights=(local + 1) / ranks, minlength=len(num_true)) / num_true
    return ranks[start], ap, num_true / ranks[start + num_true - 1]


def as_distance_array(distmat: Any, name: str = "distmat") -> np.ndarray:
    """Numpy ``[Q, G]`` view of ``distmat`` (numpy or torch): float32/float64 kept, other dtypes converted
    to float64. Raises ValueError naming ``name`` unless it is 2-D."""
    if hasattr(distmat, "detach"):
        distmat = distmat.detach().cpu()
        if not (distmat.is_floating_point() and distmat.element_size() in (4, 8)):
            distmat = distmat.double()
        distmat = distmat.numpy()
    dist = np.asarray(distmat)
    if dist.dtype not in (np.float32, np.float64):
        dist = dist.astype(np.float64)
    if dist.ndim != 2:
        raise ValueError(f"{name} must be 2-D [num_query, num_gallery], got shape {dist.shape}")
    return dist


def as_ids(values: Any, name: str, size: int) -> np.ndarray:
    """1-D int64 copy of ``values`` of length ``size``."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    ids = np.asarray(values)
    if ids.ndim != 1 or len(ids) != size:
        raise ValueError(f"{name} must be 1-D of length {size} (from distmat), got shape {ids.shape}")
    if ids.size and ids.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {ids.dtype}")
    return ids.astype(np.int64)


def no_valid_query_message(q_pids: Any, q_camids: Any, g_pids: Any, g_camids: Any, junk: str) -> str:
    """Explain why no query kept a true match (for the ``ValueError`` of the evaluators)."""
    names = ("q_pids", "q_camids", "g_pids", "g_camids")
    q_pids, q_camids, g_pids, g_camids = (
        as_ids(ids, name, len(ids)) for ids, name in zip((q_pids, q_camids, g_pids, g_camids), names)
    )
    shared = np.isin(q_pids, g_pids)
    message = (
        f"no valid query: none of the {len(q_pids)} queries has a true match left in the gallery "
        f"({int(shared.sum())} have their pid in the gallery)"
    )
    if junk == "market" and shared.any():
        cameras = np.unique(np.concatenate([q_camids, g_camids]))
        message += (
            f"; under junk='market' every match sharing the query's camera is removed, and the data "
            f"has {len(cameras)} camera(s). For single-camera data use junk='none'"
        )
    return message
