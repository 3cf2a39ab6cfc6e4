"""The k-reciprocal Jaccard distance between the items of one set, as a sparse graph, for clustering.

Reference: Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017; the
clustering form (no row normalisation, distances of unit features) is that of SpCL (Ge et al., NeurIPS 2020)
and Cluster Contrast (Dai et al., 2021).

Definition. d(i, j) = ‖f̂_i − f̂_j‖² = 2 − 2·cos(f_i, f_j) for the unit features f̂; the neighbour lists are
the first entries of a stable argsort of each row (ties by index). The k-reciprocal sets, their expansion and
the weights V[i, x] = exp(−d(i, x)) normalised over the expanded set, and the local query expansion over the k2
nearest rows, are those of `reidkit.metrics.rerank` (the same code, with every row's maximum taken as 1), and
J(i, j) = 1 − s / (2 − s), s = Σ_x min(V[i, x], V[j, x]).

Scale. Only the k nearest of each item are needed: they come from faiss (exact inner-product search on unit
features, blocked: no N × N matrix), re-sorted by the exact distance of `pairwise_distance`'s formula and the
index. V has O(k1·k2) non-zeros per row, and s is summed per chunk of rows over the columns both rows use, as a
sparse matrix; of J only the entries ≤ `max_distance` are kept (for DBSCAN, those within its radius). Memory is
O(N·k1·k2) plus a chunk's candidate pairs; nothing of size N² is held.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from tqdm import tqdm

from reidkit.errors import ReidkitError
from reidkit.metrics.rerank import local_query_expansion, reciprocal_weights
from reidkit.metrics.rerank_blocks import FeatureBlocks

_EXTRA_CANDIDATES = 8  # neighbours fetched beyond k, so that near-ties at the k-th place are ordered exactly


def nearest_neighbours(blocks: FeatureBlocks, k: int) -> np.ndarray:
    """``[N, k]`` indices of the k nearest items of each item (itself included), ordered by (distance, index).

    Candidates come from an exact faiss inner-product search on the (unit) features; they are re-sorted by
    the distances of ``blocks.squared_entries``.

    Raises:
        ReidkitError: faiss is missing (names the extra to install).
    """
    try:
        import faiss
    except ImportError as error:
        raise ReidkitError('the k-reciprocal clustering needs faiss: pip install "reidkit[adapt]"') from error
    features = blocks.features.numpy()
    size = len(features)
    fetched = min(size, k + _EXTRA_CANDIDATES)
    index = faiss.IndexFlatIP(features.shape[1])
    index.add(features)
    _, candidates = index.search(features, fetched)
    rows = np.repeat(np.arange(size), fetched)
    distances = blocks.squared_entries(rows, candidates.ravel()).reshape(size, fetched)
    order = np.lexsort((candidates, distances), axis=1)
    return np.take_along_axis(candidates, order, axis=1)[:, :k].astype(np.intp)


def jaccard_distance_graph(features: Any, k1: int = 30, k2: int = 6, max_distance: float = 1.0,
                           chunk_size: int = 1024, progress: bool = False) -> sp.csr_matrix:
    """The k-reciprocal Jaccard distances J ≤ `max_distance` between the items of `features` (module docstring).

    Args:
        features: ``[N, D]`` features (torch or numpy; normalised here, computed in float32 on the CPU), N ≥ 2.
        k1: size of the k-reciprocal neighbourhood (≥ 1).
        k2: nearest rows averaged by local query expansion (≥ 1; 1 turns it off).
        max_distance: entries above it are left out (1 keeps every pair that shares any weight).
        chunk_size: rows whose shared weights are summed at once.
        progress: show a tqdm bar.

    Returns:
        ``[N, N]`` float32 CSR matrix, symmetric up to float rounding, with explicit entries (zeros included: J(i, i) = 0) for
        the pairs with J ≤ max_distance; absent pairs are farther.

    Raises:
        ValueError: fewer than 2 items, NaN or infinite features, or out-of-range parameters.
    """
    if k1 < 1 or k2 < 1 or chunk_size < 1:
        raise ValueError(f"k1, k2 and chunk_size must be >= 1, got {k1}, {k2}, {chunk_size}")
    units = F.normalize(torch.as_tensor(features).detach().to("cpu", torch.float32), dim=1)
    if units.dim() != 2 or len(units) < 2:
        raise ValueError(f"expected features [N, D] with N >= 2, got shape {tuple(units.shape)}")
    blocks = FeatureBlocks(units[:1], units[1:], "euclidean")  # the assembled items are `units` in order
    size = blocks.size
    num_forward, num_half, num_expand = min(k1 + 1, size), min(round(k1 / 2) + 1, size), min(k2, size)
    row_chunks = blocks.row_chunks(chunk_size)
    with tqdm(total=2 * len(row_chunks), desc="jaccard", disable=None if progress else True) as bar:
        neighbours = nearest_neighbours(blocks, max(num_forward, num_expand))
        weights = reciprocal_weights(blocks, neighbours, np.ones(size, np.float32), num_forward, num_half,
                                      row_chunks, bar)
        if k2 != 1:
            weights = local_query_expansion(weights, neighbours[:, :num_expand])
        columns = weights.tocsc()  # inverted index: column x → the items with V[·, x] ≠ 0
        pieces = []
        for start, stop in row_chunks:
            pieces.append(_jaccard_rows(weights[start:stop], columns, max_distance))
            bar.update()
    return sp.vstack(pieces, format="csr")


def _jaccard_rows(rows: sp.csr_matrix, columns: sp.csc_matrix, max_distance: float) -> sp.csr_matrix:
    """``[C, N]`` Jaccard distances ≤ max_distance of the rows `rows` to every item, from Σ_x min(V[i, x], V[j, x])
    over the columns x both use."""
    num_rows = rows.shape[0]
    starts = columns.indptr[rows.indices]
    lengths = (columns.indptr[rows.indices + 1] - starts).astype(np.int64)
    offsets = np.cumsum(lengths) - lengths
    positions = np.arange(int(lengths.sum())) - np.repeat(offsets - starts, lengths)
    mins = np.minimum(np.repeat(rows.data, lengths), columns.data[positions]).astype(np.float64)
    row_of = np.repeat(np.repeat(np.arange(num_rows), np.diff(rows.indptr)), lengths)
    shared = sp.csr_matrix((mins, (row_of, columns.indices[positions])), shape=(num_rows, columns.shape[0]))
    shared.sum_duplicates()
    distance = np.maximum(1.0 - shared.data / (2.0 - shared.data), 0.0)  # rounding can push s past 1
    keep = distance <= max_distance
    kept_per_row = np.add.reduceat(keep, shared.indptr[:-1]) if num_rows else np.zeros(0, np.int64)
    kept_per_row[np.diff(shared.indptr) == 0] = 0  # reduceat reads the next row's first entry for empty rows
    indptr = np.concatenate([[0], np.cumsum(kept_per_row)])
    return sp.csr_matrix((distance[keep].astype(np.float32), shared.indices[keep], indptr), shape=shared.shape)
