"""Where re-ranking reads its distances: the assembled ``[Q+G, Q+G]`` matrix (queries first), by rows,
single entries, or query-gallery rows, from the three distance blocks or straight from features.

Nothing of size (Q+G)² is built: a caller asks for a few rows at a time. ``DistanceBlocks`` copies them
out of ``q_g``, ``q_q``, ``g_g`` (transposed, as the reference reads its matrix); ``FeatureBlocks``
computes them with one matrix product per chunk from cached rows and squared norms, by the formula of
``reidkit.distances.pairwise_distance``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from reidkit.distances import SQUARED_EPS
from reidkit.metrics.rank import as_distance_array

_TILE_ROWS = 1024  # rows per tile of a transposing copy


class AssembledMatrix:
    """Sizes of an assembled ``[Q+G, Q+G]`` matrix (queries first) and its row chunks."""

    def __init__(self, num_q: int, num_g: int, shape_text: str) -> None:
        if num_q == 0 or num_g == 0:
            raise ValueError(f"need at least one query and one gallery item, got {shape_text}")
        self.num_q, self.num_g, self.size = num_q, num_g, num_q + num_g

    def row_chunks(self, chunk_size: int) -> list[tuple[int, int]]:
        """``(start, stop)`` row ranges of at most ``chunk_size`` rows, none straddling Q."""
        return [(start, min(start + chunk_size, end)) for begin, end in ((0, self.num_q), (self.num_q, self.size))
                for start in range(begin, end, chunk_size)]


class DistanceBlocks(AssembledMatrix):
    """The transposed assembled matrix ``[[q_q, q_g], [q_gᵀ, g_g]]ᵀ``, read by rows or entries."""

    def __init__(self, q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray) -> None:
        super().__init__(*q_g.shape, f"q_g_dist of shape {q_g.shape}")
        for name, block, n in (("q_q_dist", q_q, self.num_q), ("g_g_dist", g_g, self.num_g)):
            if block.shape != (n, n):
                raise ValueError(f"{name} must have shape {(n, n)} to match q_g_dist {q_g.shape}, got {block.shape}")
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.dtype = np.result_type(q_g, q_q, g_g)

    def squared_rows(self, start: int, stop: int, scratch: np.ndarray, out: np.ndarray) -> np.ndarray:
        """float32 squares of rows ``[start, stop)`` (columns of the assembled matrix), written into
        ``out[:stop − start, :Q+G]``; ``scratch`` (input dtype, may be ``out``) receives the raw rows."""
        q, count = self.num_q, stop - start
        raw = scratch[:count, :self.size]
        if stop <= q:
            _copy_transposed(self.q_q[:, start:stop], raw[:, :q])
            raw[:, q:] = self.q_g[start:stop]
        else:
            _copy_transposed(self.q_g[:, start - q:stop - q], raw[:, :q])
            _copy_transposed(self.g_g[:, start - q:stop - q], raw[:, q:])
        return np.square(raw, out=out[:count, :self.size])

    def squared_entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32 squares of the entries ``(rows[i], cols[i])``, i.e. of assembled entries ``(cols[i], rows[i])``."""
        q, out = self.num_q, np.empty(len(rows), self.dtype)
        a, b = cols, rows
        a_query, b_query = a < q, b < q
        m = a_query & b_query
        out[m] = self.q_q[a[m], b[m]]
        m = a_query & ~b_query
        out[m] = self.q_g[a[m], b[m] - q]
        m = ~a_query & b_query
        out[m] = self.q_g[b[m], a[m] - q]
        m = ~a_query & ~b_query
        out[m] = self.g_g[a[m] - q, b[m] - q]
        return np.square(out, out=out).astype(np.float32, copy=False)

    def squared_query_gallery(self, start: int, stop: int) -> np.ndarray:
        """``[stop − start, G]`` float32 squares of the query-gallery rows ``[start, stop)``."""
        rows = self.q_g[start:stop]
        return np.square(rows, out=np.empty(rows.shape, np.float32))  # float32 squares are exact in float64


class FeatureBlocks(AssembledMatrix):
    """The assembled matrix of ``pairwise_distance`` over queries then gallery items, computed from the
    features by rows or entries (it is symmetric, so reading it transposed changes nothing)."""

    _PAIRS = 16384  # entry pairs computed at once: bounds the [pairs, D] temporaries

    def __init__(self, query: Any, gallery: Any, metric: str) -> None:
        query, gallery = (torch.as_tensor(x).detach().to("cpu", torch.float32) for x in (query, gallery))
        if query.dim() != 2 or gallery.dim() != 2 or query.shape[1] != gallery.shape[1]:
            raise ValueError(f"expected query_features [Q, D] and gallery_features [G, D], "
                             f"got {tuple(query.shape)} and {tuple(gallery.shape)}")
        shapes = f"features of shapes {tuple(query.shape)} and {tuple(gallery.shape)}"
        super().__init__(len(query), len(gallery), shapes)
        self.features = torch.cat([query, gallery])
        if not torch.isfinite(self.features).all():
            raise ValueError("the features contain NaN or infinite entries")
        self.metric, self.dtype = metric, np.dtype(np.float32)
        # Computed once, not per chunk as `pairwise_distance` would: unit rows (cosine), squared norms (Euclidean).
        self.units = F.normalize(self.features, dim=1) if metric == "cosine" else None
        self.norms = self.features.pow(2).sum(1)

    def _squared_block(self, start: int, stop: int, first_column: int) -> Tensor:
        """``[stop − start, N − first_column]`` squared distances of items ``[start, stop)`` to items
        ``first_column...``, by ``pairwise_distance``'s formula on the cached rows and norms."""
        if self.metric == "cosine":
            units = self.units
            distance = torch.addmm(torch.ones(1), units[start:stop], units[first_column:].T, alpha=-1.0)
            return distance.clamp_(0.0, 2.0).square_()
        squared = torch.addmm(self.norms[first_column:], self.features[start:stop], self.features[first_column:].T,
                              alpha=-2.0)
        squared.add_(self.norms[start:stop, None]).clamp_min_(0.0)
        return squared.masked_fill_(squared <= SQUARED_EPS, 0.0)

    def squared_rows(self, start: int, stop: int, scratch: np.ndarray, out: np.ndarray) -> np.ndarray:
        """float32 squared distances of items ``[start, stop)`` to every item, written into
        ``out[:stop − start, :Q+G]`` (``scratch`` is not needed)."""
        rows = out[:stop - start, :self.size]
        rows[...] = self._squared_block(start, stop, 0).numpy()
        return rows

    def squared_entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32 squared distances of the item pairs ``(rows[i], cols[i])``, by the formula of
        ``pairwise_distance`` on the cached rows and norms."""
        out = np.empty(len(rows), np.float32)
        source = self.units if self.metric == "cosine" else self.features
        for begin in range(0, len(rows), self._PAIRS):
            a, b = (torch.from_numpy(index[begin:begin + self._PAIRS]) for index in (rows, cols))
            dots = (source[a] * source[b]).sum(1)
            if self.metric == "cosine":
                squared = (1.0 - dots).clamp_(0.0, 2.0).square_()
            else:
                squared = (self.norms[a] + self.norms[b]).sub_(dots, alpha=2.0).clamp_min_(0.0)
                squared.masked_fill_(squared <= SQUARED_EPS, 0.0)
            out[begin:begin + len(a)] = squared.numpy()
        return out

    def squared_query_gallery(self, start: int, stop: int) -> np.ndarray:
        """``[stop − start, G]`` float32 squared distances of queries ``[start, stop)`` to the gallery."""
        return self._squared_block(start, stop, self.num_q).numpy()


def _copy_transposed(source: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = source.T`` by tiles of source rows: a cache-friendly transposing copy."""
    for start in range(0, len(source), _TILE_ROWS):
        out[:, start:start + _TILE_ROWS] = source[start:start + _TILE_ROWS].T


def checked_distances(dist: Any, name: str) -> np.ndarray:
    """`as_distance_array` of a distance block, also refusing NaN and infinite entries."""
    dist = as_distance_array(dist, name)
    if dist.size:
        low, high = dist.min(), dist.max()  # NaN and ±inf propagate; no full-size temporary
        if np.isnan(low) or np.isnan(high):
            raise ValueError(f"{name} contains NaN entries")
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"{name} contains infinite entries")
    return dist
