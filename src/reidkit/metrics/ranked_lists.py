"""Everything an evaluation shows, from one pass over blocks of the distance matrix, never the whole of it.

:func:`rank_features` computes the distances of one block of queries at a time (on the features' device),
and from each block takes: the per-query scores behind CMC, mAP and mINP (the very functions of
:mod:`reidkit.metrics.rank` and :mod:`reidkit.metrics.rank_torch`, so the metrics equal
``evaluate_rank`` of the full matrix), each query's k nearest gallery items after junk removal (the ranked
lists), and each query's nearest item per gallery camera (the rank-1 per camera pair). What is kept is
O(Q·k); the block is dropped. An ``adjust`` hook may change a block before all of this, e.g. to re-score
each query's nearest items with a pair head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

from reidkit.distances import check_metric
from reidkit.metrics.features_eval import block_scores, distance_blocks
from reidkit.metrics.rank import (
    JUNK_RULES,
    QueryScores,
    as_ids,
    check_positive,
    no_valid_query_message,
    summarize_scores,
)

BlockAdjust = Callable[[int, torch.Tensor], torch.Tensor]  # (first query row, [C, G] block) -> [C, G] block


class RankedLists(NamedTuple):
    """What an evaluation shows, per query, in data set order.

    Attributes:
        metrics: ``evaluate_rank``'s summary: ``cmc``, ``mAP``, ``mINP``, ``num_valid_queries``.
        ap: ``[Q]`` float64 non-interpolated average precision; NaN for a query with no true match left.
        top_indices: ``[Q, k]`` int64 gallery indices of the k nearest items after junk removal, nearest
            first, ties by gallery index; -1 where fewer than k items remain.
        top_distances: ``[Q, k]`` float32 their distances (inf where the index is -1).
        camera_rank1: rank-1 of each query camera's queries searched in each gallery camera alone:
            ``{"query_cameras", "gallery_cameras", "rank1" (None where no query is valid), "queries"}``.
    """

    metrics: dict
    ap: np.ndarray
    top_indices: np.ndarray
    top_distances: np.ndarray
    camera_rank1: dict


def rank_features(query_features: Any, gallery_features: Any, q_pids: Any, g_pids: Any, q_camids: Any,
                  g_camids: Any, metric: str = "euclidean", max_rank: int = 50, junk: str = "market",
                  top_k: int = 10, adjust: BlockAdjust | None = None, query_chunk: int = 512,
                  gallery_chunk: int = 8192, num_threads: int | None = None) -> RankedLists:
    """The :class:`RankedLists` of the query and gallery features, in bounded memory.

    Memory beyond the features is one ``[query_chunk, G]`` block and its ranking buffers (a few blocks'
    worth; see ``reidkit.metrics.evaluate_features``), on the features' device: a GPU computes and ranks its
    blocks there, the CPU ranks them by ``num_threads`` threads.

    Raises:
        ValueError: unknown ``metric`` or ``junk``, mismatched shapes or label lengths, NaN distances, or no
            valid query.
    """
    check_metric(metric)
    query, gallery = torch.as_tensor(query_features), torch.as_tensor(gallery_features)
    if query.dim() != 2 or gallery.dim() != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"expected query_features [Q, D] and gallery_features [G, D], "
                         f"got {tuple(query.shape)} and {tuple(gallery.shape)}")
    check_positive(query_chunk=query_chunk, gallery_chunk=gallery_chunk)
    blocks = distance_blocks(query, gallery, metric, query_chunk, gallery_chunk)
    return rank_blocks(blocks, len(query), q_pids, g_pids, q_camids, g_camids, max_rank, junk, top_k, adjust,
                       num_threads)


def rank_distances(distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, max_rank: int = 50,
                   junk: str = "market", top_k: int = 10, query_chunk: int = 512,
                   num_threads: int | None = None) -> RankedLists:
    """The :class:`RankedLists` of a ``[Q, G]`` distance matrix (numpy or torch), read in row blocks."""
    dist = torch.as_tensor(distmat)
    if dist.dim() != 2:
        raise ValueError(f"distmat must be 2-D [Q, G], got shape {tuple(dist.shape)}")
    check_positive(query_chunk=query_chunk)
    blocks = ((start, dist[start:start + query_chunk]) for start in range(0, len(dist), query_chunk))
    return rank_blocks(blocks, len(dist), q_pids, g_pids, q_camids, g_camids, max_rank, junk, top_k, None,
                       num_threads)


def rank_blocks(blocks: Iterator[tuple[int, torch.Tensor]], num_query: int, q_pids: Any, g_pids: Any,
                q_camids: Any, g_camids: Any, max_rank: int = 50, junk: str = "market", top_k: int = 10,
                adjust: BlockAdjust | None = None, num_threads: int | None = None) -> RankedLists:
    """The :class:`RankedLists` of consecutive row blocks ``(first row, [C, G] distances)`` of a matrix."""
    if junk not in JUNK_RULES:
        raise ValueError(f"junk must be one of {JUNK_RULES}, got {junk!r}")
    check_positive(max_rank=max_rank, top_k=top_k, num_threads=num_threads)
    q_pids, q_camids = as_ids(q_pids, "q_pids", num_query), as_ids(q_camids, "q_camids", num_query)
    g_pids, g_camids = as_ids(g_pids, "g_pids", len(g_pids)), as_ids(g_camids, "g_camids", len(g_camids))
    if len(g_pids) != len(g_camids):
        raise ValueError(f"g_pids and g_camids must have the same length, got {len(g_pids)} and {len(g_camids)}")
    cameras = _CameraPairs(q_camids, g_camids)
    scores: list[QueryScores] = []
    tops: list[tuple[np.ndarray, np.ndarray]] = []
    for start, block in blocks:
        if block.shape[1] != len(g_pids):
            raise ValueError(f"distance blocks have {block.shape[1]} columns, expected {len(g_pids)} (the gallery)")
        block = adjust(start, block) if adjust is not None else block
        stop = start + len(block)
        rows = slice(start, stop)
        scores.append(block_scores(block, q_pids[rows], g_pids, q_camids[rows], g_camids, junk, num_threads))
        kept = _without_junk(block, q_pids[rows], g_pids, q_camids[rows], g_camids, junk)
        tops.append(nearest(kept, top_k))
        cameras.add(kept, q_pids[rows], g_pids, q_camids[rows], junk)
        del block, kept
    joined = QueryScores.concatenate(scores)
    if joined.first_rank.size == 0:
        raise ValueError(no_valid_query_message(q_pids, q_camids, g_pids, g_camids, junk))
    ap = np.full(num_query, np.nan)
    valid = valid_queries(q_pids, q_camids, g_pids, g_camids, junk)
    ap[valid] = joined.ap
    indices = np.concatenate([top[0] for top in tops]) if tops else np.zeros((0, top_k), np.int64)
    distances = np.concatenate([top[1] for top in tops]) if tops else np.zeros((0, top_k), np.float32)
    return RankedLists(summarize_scores(joined, max_rank), ap, indices, distances, cameras.table())


def valid_queries(q_pids: np.ndarray, q_camids: np.ndarray, g_pids: np.ndarray, g_camids: np.ndarray,
                  junk: str = "market") -> np.ndarray:
    """``[Q]`` bool: whether each query keeps a true match after junk removal (from the labels alone).

    Under ``"market"`` a true match has the query's pid (not -1) and another camera; under ``"none"`` any
    gallery item with the query's pid is one.
    """
    by_pid = _count_keys(g_pids, q_pids)
    if junk == "none":
        return by_pid > 0
    same_camera = _count_keys(_pair_keys(g_pids, g_camids), _pair_keys(q_pids, q_camids))
    return (q_pids != -1) & (by_pid - same_camera > 0)


def nearest(block: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices ``[C, k]`` and values of each row's k smallest entries, smallest first, ties by column
    index (the rule of the stable sort that ranks); inf entries come back as index -1.

    Exact without sorting whole rows: the k-th smallest value splits each row into the entries below it,
    all taken, and the entries equal to it, taken by column order until k are held.
    """
    num_rows, num_cols = block.shape
    width = min(k, num_cols)
    indices = np.full((num_rows, k), -1, np.int64)
    values = np.full((num_rows, k), np.inf, np.float32)
    if num_rows == 0 or width == 0:
        return indices, values
    kth = block.kthvalue(width, dim=1, keepdim=True).values
    below = block < kth
    at = block == kth
    room = width - below.sum(dim=1, keepdim=True)
    taken = below | (at & (at.cumsum(dim=1) <= room))
    columns = taken.nonzero()[:, 1].view(num_rows, width)  # row-major: each row's columns in increasing order
    chosen = block.gather(1, columns)
    order = chosen.sort(dim=1, stable=True).indices
    columns, chosen = columns.gather(1, order).cpu().numpy(), chosen.gather(1, order).float().cpu().numpy()
    indices[:, :width] = np.where(np.isinf(chosen), -1, columns)
    values[:, :width] = chosen
    return indices, values


class _CameraPairs:
    """Running rank-1 counts of query camera a searched in gallery camera b alone, over row blocks."""

    def __init__(self, q_camids: np.ndarray, g_camids: np.ndarray) -> None:
        self.q_cams, self.g_cams = sorted(set(q_camids.tolist())), sorted(set(g_camids.tolist()))
        self.columns = [np.flatnonzero(g_camids == camera) for camera in self.g_cams]
        self.row_of = {camera: row for row, camera in enumerate(self.q_cams)}
        self.hits = np.zeros((len(self.q_cams), len(self.g_cams)), np.int64)
        self.valid = np.zeros_like(self.hits)

    def add(self, kept: torch.Tensor, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
            junk: str) -> None:
        rows = np.array([self.row_of[camera] for camera in q_camids.tolist()], np.int64)
        for column, (camera, members) in enumerate(zip(self.g_cams, self.columns)):
            valid = valid_queries(q_pids, q_camids, g_pids[members], np.full(len(members), camera), junk)
            if not valid.any():
                continue
            index = torch.as_tensor(members, device=kept.device)
            first = kept.index_select(1, index).argmin(dim=1).cpu().numpy()  # first minimum: lowest index
            hit = valid & (g_pids[members][first] == q_pids)
            np.add.at(self.valid[:, column], rows, valid)
            np.add.at(self.hits[:, column], rows, hit)

    def table(self) -> dict:
        rank1 = [[float(h / v) if v else None for h, v in zip(hits, valid)]
                 for hits, valid in zip(self.hits, self.valid)]
        return {"query_cameras": self.q_cams, "gallery_cameras": self.g_cams, "rank1": rank1,
                "queries": self.valid.tolist()}


def _without_junk(block: torch.Tensor, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                  g_camids: np.ndarray, junk: str) -> torch.Tensor:
    """The block with its junk entries (the query's pid in its camera, and pid -1) set to inf."""
    if junk == "none":
        return block
    device = block.device
    q_pid, q_cam = (torch.as_tensor(v, device=device)[:, None] for v in (q_pids, q_camids))
    g_pid, g_cam = (torch.as_tensor(v, device=device)[None, :] for v in (g_pids, g_camids))
    junk_entries = ((g_pid == q_pid) & (g_cam == q_cam)) | (g_pid == -1)
    return block.masked_fill(junk_entries, float("inf"))


def _pair_keys(pids: np.ndarray, camids: np.ndarray) -> np.ndarray:
    """One int64 key per (pid, camid) pair (pids from -1, cameras below 2**20)."""
    return (pids.astype(np.int64) + 1) * (1 << 20) + camids.astype(np.int64)


def _count_keys(gallery_keys: np.ndarray, query_keys: np.ndarray) -> np.ndarray:
    """How many gallery keys equal each query key."""
    keys, counts = np.unique(gallery_keys, return_counts=True)
    if len(keys) == 0:
        return np.zeros(len(query_keys), np.int64)
    position = np.minimum(np.searchsorted(keys, query_keys), len(keys) - 1)
    return np.where(keys[position] == query_keys, counts[position], 0)
