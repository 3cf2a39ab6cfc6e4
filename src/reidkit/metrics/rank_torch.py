"""The ranking core of :mod:`reidkit.metrics.rank` in torch, on the device of the distances (a GPU).

One block of queries ``[C, G]`` is sorted per row (stable: ties keep gallery order, the rule of the CPU
path), the junk rule is applied to the sorted labels, and each true match's rank among the kept items is a
running count; only those ranks (a few per query) go to the host, where the AP and INP of each query are
summed by the very function the CPU path uses. The scores therefore equal the CPU path's exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from reidkit.metrics.rank import JUNK_RULES, QueryScores, _query_scores


def torch_query_scores(dist: torch.Tensor, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any,
                       junk: str = "market") -> QueryScores:
    """The :class:`QueryScores` of :func:`reidkit.metrics.rank.query_scores` for a block of distances.

    Args:
        dist: ``[C, G]`` float distances on any device (memory: a few ``[C, G]`` int64 buffers there).
        q_pids, q_camids: ``[C]`` integer labels of the block's queries.
        g_pids, g_camids: ``[G]`` integer gallery labels.
        junk: ``"market"`` or ``"none"``.

    Raises:
        ValueError: unknown ``junk``, mismatched sizes or NaN distances.
    """
    if junk not in JUNK_RULES:
        raise ValueError(f"junk must be one of {JUNK_RULES}, got {junk!r}")
    if dist.dim() != 2:
        raise ValueError(f"distances must be [C, G], got shape {tuple(dist.shape)}")
    device, (num_q, num_g) = dist.device, dist.shape
    q_pids, q_camids, g_pids, g_camids = (torch.as_tensor(np.asarray(v), dtype=torch.int64).to(device)
                                          for v in (q_pids, q_camids, g_pids, g_camids))
    if len(q_pids) != num_q or len(q_camids) != num_q or len(g_pids) != num_g or len(g_camids) != num_g:
        raise ValueError(f"labels must have lengths {num_q} (queries) and {num_g} (gallery)")
    if bool(torch.isnan(dist).any()):
        raise ValueError(f"distmat contains {int(torch.isnan(dist).sum())} NaN entries")
    order = torch.sort(dist, dim=1, stable=True).indices
    pids = g_pids[order]
    same = pids == q_pids[:, None]
    if junk == "market":  # the same person seen by the same camera, and pid -1, leave the ranking
        true = same & (g_camids[order] != q_camids[:, None]) & (q_pids != -1)[:, None]
        kept = ~(same & ~true) & (pids != -1)
    else:
        true, kept = same, torch.ones_like(same)
    del order, pids, same
    rank = kept.cumsum(dim=1)  # 1-based rank of each kept item after junk removal
    rows, cols = true.nonzero(as_tuple=True)  # row-major: each query's matches by increasing rank
    ranks = rank[rows, cols].cpu().numpy()
    num_true = np.bincount(rows.cpu().numpy(), minlength=num_q)
    return QueryScores(*_query_scores(ranks.astype(np.int64), num_true[num_true > 0]))
