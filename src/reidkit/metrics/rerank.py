"""k-reciprocal re-ranking for re-identification retrieval.

Reference:
    Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017.

``re_ranking`` follows the definition of the reference implementations used by the ReID community:
the inputs are plain Euclidean distances and are squared inside; the (Q+G)×(Q+G) matrix assembled from
the three blocks is cast to float32, each item's distances are divided by their maximum; initial ranks
are the ascending order of a row; R(i, k) is the set of the k+1 nearest of i that have i among their
own k+1 nearest; R(i, k1) is expanded by R(j, round(k1/2)) of each member j when more than 2/3 of that
set lies in R(i, k1); V[i, x] = exp(−d(i, x)) over the expanded set, normalised to sum 1; V[i] is
replaced by the mean of V over the k2 nearest rows of i when k2 ≠ 1; the Jaccard distance of a query
q and a gallery item g is 1 − s / (2 − s) with s = Σ_x min(V[q, x], V[g, x]); the result is
(1 − λ)·Jaccard + λ·(normalised squared distance).

Ties. Initial ranks order equal distances by item index, i.e. the first entries of a *stable* argsort.
The original numpy code uses ``np.argsort``'s default (unstable) sort, so on inputs with tied
distances its neighbour sets may differ from these; without ties the results agree.

Algorithm. Nothing of size (Q+G)² is held. Rows of the normalised matrix are built in chunks from the
blocks into reused buffers, and of each row only its maximum and its nearest neighbours are kept: the
columns are split into interleaved groups, the k-th smallest group minimum bounds the k-th smallest
distance from above, and the few entries under the bound are sorted by (distance, index) — the first
entries of a stable argsort, at the cost of one pass over the row. The k-reciprocal sets and their
expansions are computed by vectorised membership tests on the neighbour table; the distances they need
are read from the blocks one entry at a time. V and its query expansion are scipy CSR matrices
(≈1.5·k1 non-zeros per row before expansion), and Σ min is accumulated per chunk of queries through an
inverted index (the gallery rows of V in CSC form). Memory beyond the inputs and the ``[Q, G]``
result is O((Q+G)·k1·k2 + chunk_size·(Q+G)).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from reidkit.distances import check_metric
from reidkit.metrics.rerank_blocks import DistanceBlocks, FeatureBlocks, checked_distances

_TWO_THIRDS = 2.0 / 3.0  # the expansion threshold, evaluated as in the reference: 2/3 · |R(j, k1/2)|
_GROUP_SIZE = 32  # columns per group when bounding a row's nearest neighbours (see _smallest)


def re_ranking(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    chunk_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """k-reciprocal re-ranking of a query-gallery distance matrix (Zhong et al., CVPR 2017).

    Args:
        q_g_dist: ``[Q, G]`` plain (not squared) Euclidean query-gallery distances.
        q_q_dist: ``[Q, Q]`` query-query distances.
        g_g_dist: ``[G, G]`` gallery-gallery distances. All three accept numpy or torch; float32 and
            float64 are squared in their own precision (in the wider one when they differ), other
            dtypes as float64; everything after the square is float32, as in the reference. Not
            modified. As in the reference, the assembled matrix is used transposed: item i's row is
            column i of ``[[q_q, q_g], [q_gᵀ, g_g]]``; for symmetric blocks the two agree.
        k1: size of the k-reciprocal neighbourhood (≥ 1). ``k1 + 1``, ``round(k1 / 2) + 1`` and
            ``k2`` are clamped to Q+G, as numpy slicing does in the reference; with ``k1 + 1 ≥ Q+G``
            every item is a forward neighbour of every other.
        k2: number of nearest rows averaged by local query expansion (≥ 1); 1 turns it off.
        lambda_value: weight λ ∈ [0, 1] of the original distance; 0 gives the Jaccard distance alone,
            1 the row-normalised squared distance.
        chunk_size: rows processed at once (≥ 1); memory of a chunk is O(chunk_size · (Q+G)).
        progress: show a tqdm bar over chunks.

    Returns:
        ``[Q, G]`` float32 re-ranked distances (smaller is closer).

    Raises:
        ValueError: bad shapes or sizes, NaN or infinite distances, distances too large to square
            in float32, an item at distance 0 from every item, or out-of-range parameters.
    """
    _check_parameters(k1, k2, lambda_value, chunk_size)
    blocks = DistanceBlocks(checked_distances(q_g_dist, "q_g_dist"), checked_distances(q_q_dist, "q_q_dist"),
                     checked_distances(g_g_dist, "g_g_dist"))
    return _re_rank(blocks, k1, k2, lambda_value, chunk_size, progress)


def re_ranking_features(
    query_features: Any,
    gallery_features: Any,
    metric: str = "euclidean",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    chunk_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """:func:`re_ranking` of the features' distances, computed chunk by chunk from the features.

    Equals ``re_ranking(pairwise_distance(q, g, metric), pairwise_distance(q, q, metric),
    pairwise_distance(g, g, metric), ...)`` up to the last-bit rounding of matrix products of other
    shapes, without the ``[G, G]`` block (MSMT17: 82,161² float32 distances are 27 GB). Each row of
    the assembled matrix is computed once, for its maximum and nearest neighbours; the query-gallery
    rows a second time for the result.

    Args:
        query_features: ``[Q, D]`` features (torch or numpy, computed in float32 on the CPU).
        gallery_features: ``[G, D]`` features.
        metric: ``"euclidean"`` (the reference's choice) or ``"cosine"``; see ``pairwise_distance``.
        k1, k2, lambda_value, chunk_size, progress: as for :func:`re_ranking`.

    Returns:
        ``[Q, G]`` float32 re-ranked distances (smaller is closer).

    Raises:
        ValueError: bad shapes, NaN or infinite features, an item at distance 0 from every item, or
            out-of-range parameters.
    """
    check_metric(metric)
    _check_parameters(k1, k2, lambda_value, chunk_size)
    return _re_rank(FeatureBlocks(query_features, gallery_features, metric), k1, k2, lambda_value, chunk_size,
                    progress)


def _check_parameters(k1: int, k2: int, lambda_value: float, chunk_size: int) -> None:
    if k1 < 1 or k2 < 1 or chunk_size < 1:
        raise ValueError(f"k1, k2 and chunk_size must be >= 1, got {k1}, {k2}, {chunk_size}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must lie in [0, 1], got {lambda_value}")


def _re_rank(blocks: DistanceBlocks | FeatureBlocks, k1: int, k2: int, lambda_value: float, chunk_size: int,
             progress: bool) -> np.ndarray:
    """The re-ranking of the assembled matrix that ``blocks`` reads (see the module docstring)."""
    size = blocks.size
    num_forward, num_half, num_expand = min(k1 + 1, size), min(round(k1 / 2) + 1, size), min(k2, size)
    row_chunks = blocks.row_chunks(chunk_size)
    query_chunks = [(start, min(start + chunk_size, blocks.num_q)) for start in range(0, blocks.num_q, chunk_size)]
    with tqdm(total=2 * len(row_chunks) + len(query_chunks), desc="re-ranking", disable=None if progress else True) as bar:
        neighbours, row_max = _nearest(blocks, row_chunks, max(num_forward, num_expand), bar)
        weights = reciprocal_weights(blocks, neighbours, row_max, num_forward, num_half, row_chunks, bar)
        if k2 != 1:
            weights = local_query_expansion(weights, neighbours[:, :num_expand])
        return _combine(blocks, weights, row_max, lambda_value, query_chunks, bar)


def _nearest(blocks: DistanceBlocks, row_chunks: list, num: int, bar: tqdm) -> tuple[np.ndarray, np.ndarray]:
    """Initial ranks ``[Q+G, num]`` (first ``num`` of a stable argsort per row) and row maxima ``[Q+G]``."""
    size, rows = blocks.size, max(stop - start for start, stop in row_chunks)
    neighbours = np.empty((size, num), np.intp)
    row_max = np.empty(size, np.float32)
    # Buffers reused by every chunk (fresh large arrays cost page faults); the padding columns stay +inf.
    group_size = min(_GROUP_SIZE, max(1, size // (4 * num)))
    padded = np.full((rows, -(-size // group_size) * group_size), np.inf, np.float32)
    scratch = padded if blocks.dtype == np.float32 else np.empty((rows, size), blocks.dtype)
    for start, stop in row_chunks:
        values = blocks.squared_rows(start, stop, scratch, padded)
        peak = values.max(axis=1)
        if not np.isfinite(peak).all():
            raise ValueError("distances too large to square in float32 (above ~1.8e19); rescale them")
        if not peak.all():
            item = start + int(np.flatnonzero(peak == 0)[0])
            raise ValueError(f"item {item} (queries first, then gallery) is at distance 0 from every item")
        row_max[start:stop] = peak
        values /= peak[:, None]
        neighbours[start:stop] = _smallest(padded[:stop - start], num, group_size)
        bar.update()
    return neighbours, row_max


def _smallest(values: np.ndarray, num: int, group_size: int) -> np.ndarray:
    """Columns of the ``num`` smallest entries of each row, ordered by (value, column): the first ``num``
    of a stable argsort.

    Columns form B interleaved groups (group b = columns b, b + B, b + 2B, ...). The ``num``-th smallest
    group minimum bounds the ``num``-th smallest value from above, so only the groups whose minimum is
    within the bound are sorted: one pass over ``values``, then work on a few ``num · group_size``
    entries per row.

    Args:
        values: ``[C, group_size · B]`` finite values padded at the end with fewer than ``group_size``
            +inf; more than ``num`` finite values per row.
        num: entries kept per row.
        group_size: columns per group.

    Returns:
        ``[C, num]`` column indices.
    """
    count, num_groups = len(values), values.shape[1] // group_size
    if num >= num_groups:
        return np.argsort(values, axis=1, kind="stable")[:, :num]
    groups = values.reshape(count, group_size, num_groups)
    group_min = groups.min(axis=1)
    bound = np.partition(group_min, num - 1, axis=1)[:, num - 1]
    rows, kept = np.nonzero(group_min <= bound[:, None])
    candidates = groups[rows, :, kept]  # [pairs, group_size]
    inside = candidates <= bound[rows, None]
    rows = np.broadcast_to(rows[:, None], inside.shape)[inside]
    cols = (np.arange(group_size) * num_groups + kept[:, None])[inside]
    order = np.lexsort((cols, candidates[inside], rows))  # by row, then value, then column
    per_row = np.bincount(rows, minlength=count)
    first = np.cumsum(per_row) - per_row
    return cols[order][first[:, None] + np.arange(num)]


def _reciprocal_mask(neighbours: np.ndarray, row_chunks: list) -> np.ndarray:
    """``[N, k]`` bool: whether item i is among the k nearest of its j-th nearest ``neighbours[i, j]``."""
    mask = np.empty(neighbours.shape, bool)
    for start, stop in row_chunks:
        backward = neighbours[neighbours[start:stop]]  # [C, k, k]
        mask[start:stop] = (backward == np.arange(start, stop)[:, None, None]).any(axis=2)
    return mask


def reciprocal_weights(blocks: DistanceBlocks, neighbours: np.ndarray, row_max: np.ndarray, num_forward: int,
                        num_half: int, row_chunks: list, bar: tqdm) -> sp.csr_matrix:
    """V ``[Q+G, Q+G]``: exp(−d) over the expanded k-reciprocal set of each row, rows summing to 1."""
    size = blocks.size
    forward, half = neighbours[:, :num_forward], neighbours[:, :num_half]
    in_forward, in_half = _reciprocal_mask(forward, row_chunks), _reciprocal_mask(half, row_chunks)
    half_size = in_half.sum(axis=1)
    data, indices, counts = [], [], []
    for start, stop in row_chunks:
        near, reciprocal = forward[start:stop], in_forward[start:stop]  # R(i, k1) = near[reciprocal]
        candidate_sets, candidate_mask = half[near], in_half[near]  # R(j, k1/2) of each j: [C, k, h]
        in_set = (candidate_sets[..., None] == near[:, None, None, :]) & reciprocal[:, None, None, :]
        overlap = (in_set.any(axis=3) & candidate_mask).sum(axis=2)
        accepted = reciprocal & (overlap > _TWO_THIRDS * half_size[near])
        r_rows, r_cols = np.nonzero(reciprocal)
        e_rows, e_cand, e_pos = np.nonzero(accepted[..., None] & candidate_mask)
        keys = np.unique(np.concatenate([r_rows * size + near[r_rows, r_cols],
                                         e_rows * size + candidate_sets[e_rows, e_cand, e_pos]]))
        rows, cols = np.divmod(keys, size)
        rows += start
        weight = np.exp(-(blocks.squared_entries(rows, cols) / row_max[rows]))
        totals = np.bincount(rows - start, weights=weight, minlength=stop - start)  # an empty set stays empty
        data.append((weight / totals[rows - start]).astype(np.float32))
        counts.append(np.bincount(rows - start, minlength=stop - start))
        indices.append(cols)
        bar.update()
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    return sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=(size, size))


def local_query_expansion(weights: sp.csr_matrix, nearest: np.ndarray) -> sp.csr_matrix:
    """Mean of the rows ``nearest[i]`` ``[N, k2]`` of ``weights``, for every row i (a sparse product)."""
    size, num = nearest.shape
    average = sp.csr_matrix((np.ones(nearest.size, np.float32), nearest.ravel(), np.arange(0, nearest.size + 1, num)),
                            shape=(size, weights.shape[0]))
    expanded = (average @ weights).tocsr()
    expanded.data /= np.float32(num)
    return expanded


def _combine(blocks: DistanceBlocks, weights: sp.csr_matrix, row_max: np.ndarray, lambda_value: float,
             query_chunks: list, bar: tqdm) -> np.ndarray:
    """``[Q, G]`` float32 (1 − λ)·Jaccard + λ·normalised squared distance, by chunks of queries."""
    gallery = weights[blocks.num_q:].tocsc()  # inverted index: column x → gallery items with V[g, x] ≠ 0
    result = np.empty((blocks.num_q, blocks.num_g), np.float32)
    for start, stop in query_chunks:
        shared = _shared_mass(weights[start:stop], gallery)
        out = result[start:stop]
        np.subtract(1.0, np.divide(shared, 2.0 - shared, out=shared), out=out)  # Jaccard distance
        out *= 1.0 - lambda_value
        original = blocks.squared_query_gallery(start, stop)
        original /= row_max[start:stop, None]
        original *= lambda_value
        out += original
        bar.update()
    return result


def _shared_mass(query: sp.csr_matrix, gallery: sp.csc_matrix) -> np.ndarray:
    """``[C, G]`` Σ_x min(query[c, x], gallery[g, x]) over the columns both rows use."""
    num_rows, num_gallery = query.shape[0], gallery.shape[0]
    row_counts = np.diff(query.indptr)
    starts = gallery.indptr[query.indices]
    lengths = (gallery.indptr[query.indices + 1] - starts).astype(np.int64)
    offsets = np.cumsum(lengths) - lengths
    positions = np.arange(int(lengths.sum())) - np.repeat(offsets - starts, lengths)
    mins = np.minimum(np.repeat(query.data, lengths), gallery.data[positions])
    cells = np.repeat(np.repeat(np.arange(num_rows), row_counts), lengths) * num_gallery + gallery.indices[positions]
    shared = np.bincount(cells, weights=mins, minlength=num_rows * num_gallery)  # int64 when nothing is shared
    return shared.astype(np.float64, copy=False).reshape(num_rows, num_gallery)
