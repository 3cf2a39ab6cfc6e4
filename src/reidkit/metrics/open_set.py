"""Open-set matching: ROC, EER, TPR at fixed FPRs and the distance threshold for a chosen FPR.

A pair of images is *genuine* when both show the same identity and an *impostor* pair otherwise. The
decision rule is "same person" iff distance < t (strict), so for a threshold t

    FPR(t) = #{impostor pairs with d < t} / N_impostor,   TPR(t) = #{genuine pairs with d < t} / N_genuine,

and FNR = 1 − TPR. The threshold for a target FPR f is the (k+1)-th smallest impostor distance with
k = ⌊f · N_impostor⌋: the largest t whose FPR stays at or below f (ties included: every impostor at that
distance is rejected). The EER is min over t of max(FPR(t), FNR(t)), the point of the step-wise ROC where
the two error rates meet (for data without ties, the usual crossing); its threshold accepts every distance
up to a genuine distance g (t = the next float32 above g). TPR@FPR reported "the right way round": the
share of genuine pairs accepted while at most f of the impostor pairs are (see FIELD_NOTES).

Pairs (query × gallery) follow the ranking protocol of `reidkit.metrics.rank`: under junk="market", pairs of
the same identity and camera and pairs with a pid −1 (junk) image are left out; junk="none" keeps every
pair. `open_set_within` scores the unordered pairs of one set (a validation split), each pair once.

Exact in bounded memory (no Q × G array of pairs is ever held): distances are visited in blocks of rows,
three times (recomputed from the features each pass, or sliced from a given matrix), in float32:
  1. the genuine distances are kept (one per true match: Q × matches-per-query values) and the impostors
     counted;
  2. the number of impostors at or below each genuine distance (searchsorted + bincount: the exact ROC at
     every genuine vertex, hence the exact EER), and a 65,536-bin histogram of the impostors' float32 bit
     patterns by their high 16 bits;
  3. radix selection: within the high-bit bin holding each wanted order statistic, a histogram of the low
     16 bits gives the exact (k+1)-th smallest impostor distance.
Memory beyond the inputs: one `[chunk, G]` block with its masks, the genuine distances, two 65,536-bin
histograms per wanted FPR.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from reidkit.distances import check_metric, pairwise_distance

REPORTED_FPRS = (1e-2, 1e-3, 1e-4)  # TPR@FPR points stored in metrics.json
ROC_POINTS = 200  # ROC vertices kept for plotting (a log-spaced and a linear FPR grid)
HISTOGRAM_BINS = 50
_HIGH = 1 << 16  # radix-select bins of the high and of the low 16 bits of a float32

# A block of rows: (distances [C, G] float32, kept pairs [C, G] bool, genuine pairs [C, G] bool).
Block = tuple[np.ndarray, np.ndarray, np.ndarray]


def open_set_scores(distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, junk: str = "market",
                    target_fpr: float = 1e-3, chunk_size: int = 1024) -> dict:
    """Open-set figures of a `[Q, G]` query-gallery distance matrix (numpy or torch).

    Args:
        distmat: `[Q, G]` distances (cast to float32 block by block).
        q_pids, g_pids: `[Q]`, `[G]` identities; q_camids, g_camids: `[Q]`, `[G]` cameras.
        junk: "market" or "none" (which pairs count; module docstring).
        target_fpr: FPR in (0, 1) whose threshold is reported (`eval.open_set_fpr`).
        chunk_size: query rows per block.

    Returns:
        The dict of `summarize_open_set`.

    Raises:
        ValueError: bad shapes, NaN distances, `target_fpr` outside (0, 1), or no genuine or no impostor pair.
    """
    distances = distmat.detach().cpu().numpy() if isinstance(distmat, torch.Tensor) else np.asarray(distmat)
    q_pids, g_pids, q_camids, g_camids = (np.asarray(a).reshape(-1) for a in (q_pids, g_pids, q_camids, g_camids))
    if distances.shape != (len(q_pids), len(g_pids)) or len(q_camids) != len(q_pids) or len(g_camids) != len(g_pids):
        raise ValueError(f"expected distances [Q, G] = [{len(q_pids)}, {len(g_pids)}] with cameras of the same "
                         f"lengths, got {distances.shape}, {len(q_camids)} and {len(g_camids)} cameras")

    def blocks() -> Iterator[Block]:
        for start in range(0, len(q_pids), chunk_size):
            stop = start + chunk_size
            yield _block(distances[start:stop], q_pids[start:stop], g_pids, q_camids[start:stop], g_camids, junk)

    return summarize_open_set(blocks, target_fpr)


def open_set_features(query_features: Any, gallery_features: Any, q_pids: Any, g_pids: Any, q_camids: Any,
                      g_camids: Any, metric: str = "cosine", junk: str = "market", target_fpr: float = 1e-3,
                      chunk_size: int = 512) -> dict:
    """`open_set_scores` of the features' `pairwise_distance`s, without the `[Q, G]` matrix.

    Args:
        query_features: `[Q, D]`; gallery_features: `[G, D]` (torch or numpy); metric: "cosine" or
            "euclidean"; the rest as `open_set_scores`.
    """
    check_metric(metric)
    query, gallery = torch.as_tensor(query_features), torch.as_tensor(gallery_features)
    q_pids, g_pids, q_camids, g_camids = (np.asarray(a).reshape(-1) for a in (q_pids, g_pids, q_camids, g_camids))

    def blocks() -> Iterator[Block]:
        with torch.no_grad():
            for start in range(0, len(query), chunk_size):
                stop = start + chunk_size
                block = pairwise_distance(query[start:stop], gallery, metric).cpu().numpy()
                yield _block(block, q_pids[start:stop], g_pids, q_camids[start:stop], g_camids, junk)

    return summarize_open_set(blocks, target_fpr)


def open_set_within(features: Any, pids: Any, camids: Any, metric: str = "cosine", junk: str = "market",
                    target_fpr: float = 1e-3, chunk_size: int = 512) -> dict:
    """Open-set figures of the unordered pairs {i, j}, i < j, of one set (a validation split).

    Args: `features` `[N, D]`, `pids` `[N]`, `camids` `[N]`; the rest as `open_set_features`.
    """
    check_metric(metric)
    features = torch.as_tensor(features)
    pids, camids = np.asarray(pids).reshape(-1), np.asarray(camids).reshape(-1)
    columns = np.arange(len(features))

    def blocks() -> Iterator[Block]:
        with torch.no_grad():
            for start in range(0, len(features), chunk_size):
                stop = start + chunk_size
                block = pairwise_distance(features[start:stop], features, metric).cpu().numpy()
                distances, kept, genuine = _block(block, pids[start:stop], pids, camids[start:stop], camids, junk)
                kept &= columns[None, :] > columns[start:stop, None]  # each unordered pair once, no self pair
                yield distances, kept, genuine & kept

    return summarize_open_set(blocks, target_fpr)


def summarize_open_set(blocks: Callable[[], Iterator[Block]], target_fpr: float = 1e-3) -> dict:
    """The open-set figures from a function returning a fresh iterator over the pair blocks (three passes).

    Returns:
        {"num_genuine", "num_impostor", "eer", "eer_threshold", "tpr_at_fpr" {"0.01", "0.001", "0.0001": TPR},
        "target_fpr", "threshold", "fpr_at_threshold", "tpr_at_threshold", "roc" {"fpr", "tpr", "threshold"}
        (exact vertices, at most 2·ROC_POINTS + 1), "histogram" {"edges", "same", "different"}}; thresholds are
        distances (decision: same person iff distance < threshold).

    Raises:
        ValueError: `target_fpr` outside (0, 1), NaN distances, or no genuine or no impostor pair.
    """
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    genuine, num_impostor, low, top = [], 0, 0.0, 0.0
    for distances, kept, same in blocks():  # pass 1
        if np.isnan(distances[kept]).any():
            raise ValueError("the distances contain NaN")
        genuine.append(distances[same])
        num_impostor += int(np.count_nonzero(kept & ~same))
        low, top = min(low, float(distances[kept].min(initial=0.0))), max(top, float(distances[kept].max(initial=0.0)))
    genuine = np.sort(np.concatenate(genuine)) if genuine else np.zeros(0, np.float32)
    if genuine.size == 0 or num_impostor == 0:
        raise ValueError(f"open-set figures need genuine and impostor pairs; found {genuine.size} genuine and "
                         f"{num_impostor} impostor pairs")

    edges = np.linspace(low, top if top > low else low + 1.0, HISTOGRAM_BINS + 1)
    impostors_up_to = np.zeros(genuine.size + 1, np.int64)  # [j]: impostors d with exactly j genuine values < d
    high_counts, impostor_histogram = np.zeros(_HIGH, np.int64), np.zeros(HISTOGRAM_BINS, np.int64)
    for distances, kept, same in blocks():  # pass 2
        impostors = distances[kept & ~same]
        impostors_up_to += np.bincount(np.searchsorted(genuine, impostors, side="left"), minlength=genuine.size + 1)
        high_counts += np.bincount(_ordered_bits(impostors) >> 16, minlength=_HIGH)
        impostor_histogram += np.histogram(impostors, edges)[0]
    # Impostors at or below genuine[j] = those with at most j genuine values strictly below them.
    fpr_at_genuine = np.cumsum(impostors_up_to)[:-1] / num_impostor
    tpr_at_genuine = np.searchsorted(genuine, genuine, side="right") / genuine.size

    wanted = sorted({*REPORTED_FPRS, target_fpr})
    ranks = {fpr: min(math.floor(fpr * num_impostor * (1 + 1e-12)), num_impostor - 1) for fpr in wanted}
    selected = _radix_select(blocks, high_counts, sorted(set(ranks.values())))

    def at(fpr: float) -> tuple[float, float, float]:  # (threshold, achieved FPR, TPR)
        threshold, below = selected[ranks[fpr]]
        return threshold, below / num_impostor, float(np.searchsorted(genuine, threshold, side="left")) / genuine.size

    worst = np.maximum(fpr_at_genuine, 1.0 - tpr_at_genuine)
    best = int(np.argmin(worst))
    eer, eer_threshold = float(worst[best]), float(np.nextafter(genuine[best], np.float32(np.inf)))
    if worst[best] >= 1.0:  # accepting nothing is as good: FPR 0, FNR 1
        eer, eer_threshold = 1.0, float(genuine[0])
    threshold, achieved, tpr = at(target_fpr)
    return {
        "num_genuine": int(genuine.size), "num_impostor": num_impostor,
        "eer": eer, "eer_threshold": eer_threshold,
        "tpr_at_fpr": {str(fpr): at(fpr)[2] for fpr in REPORTED_FPRS},
        "target_fpr": target_fpr, "threshold": threshold, "fpr_at_threshold": achieved, "tpr_at_threshold": tpr,
        "roc": _roc_points(fpr_at_genuine, tpr_at_genuine, genuine),
        "histogram": {"edges": edges.tolist(), "same": np.histogram(genuine, edges)[0].tolist(),
                      "different": impostor_histogram.tolist()},
    }


def _block(distances: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
           g_camids: np.ndarray, junk: str) -> Block:
    """(float32 distances, kept pairs, genuine pairs) of a block of rows under the junk rule."""
    if junk not in ("market", "none"):
        raise ValueError(f"junk must be one of ('market', 'none'), got {junk!r}")
    same = q_pids[:, None] == g_pids[None, :]
    kept = np.ones(same.shape, bool)
    if junk == "market":
        kept = ~(same & (q_camids[:, None] == g_camids[None, :])) & (q_pids[:, None] != -1) & (g_pids[None, :] != -1)
    return np.asarray(distances, np.float32) + np.float32(0.0), kept, same & kept  # + 0: −0.0 becomes +0.0


def _ordered_bits(values: np.ndarray) -> np.ndarray:
    """uint32 keys of float32 values with the order of the values (sign bit flipped, negatives inverted)."""
    bits = values.astype(np.float32, copy=False).view(np.uint32)
    return np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31))


def _float_of(key: int) -> float:
    """The float32 value of an `_ordered_bits` key."""
    bits = key & 0x7FFFFFFF if key >> 31 else ~key & 0xFFFFFFFF
    return float(np.array([bits], np.uint32).view(np.float32)[0])


def _radix_select(blocks: Callable[[], Iterator[Block]], high_counts: np.ndarray,
                  ranks: list[int]) -> dict[int, tuple[float, int]]:
    """{rank r (0-based): (the (r+1)-th smallest impostor distance, impostors strictly below it)} (pass 3)."""
    cumulative = np.cumsum(high_counts)
    bins = np.searchsorted(cumulative, np.asarray(ranks), side="right")  # high-bit bin holding each rank
    low_counts = {int(b): np.zeros(_HIGH, np.int64) for b in bins}
    for distances, kept, same in blocks():
        keys = _ordered_bits(distances[kept & ~same])
        for high, counts in low_counts.items():
            counts += np.bincount(keys[(keys >> 16) == high] & 0xFFFF, minlength=_HIGH)
    selected = {}
    for rank, high in zip(ranks, bins.tolist()):
        before_bin = int(cumulative[high - 1]) if high else 0
        low_cumulative = np.cumsum(low_counts[high])
        low = int(np.searchsorted(low_cumulative, rank - before_bin, side="right"))
        below = before_bin + (int(low_cumulative[low - 1]) if low else 0)
        selected[rank] = (_float_of((high << 16) | low), below)
    return selected


def _roc_points(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray) -> dict:
    """At most 2·ROC_POINTS + 1 exact ROC vertices (on a log-spaced and a linear FPR grid, and the last one);
    a vertex's threshold is its genuine distance, accepted with every distance at or below it."""
    grid = np.concatenate([np.logspace(-6, 0, ROC_POINTS), np.linspace(0, 1, ROC_POINTS)])
    chosen = np.unique(np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, fpr.size - 1))
    chosen = np.unique(np.concatenate([chosen, [fpr.size - 1]]))
    return {"fpr": fpr[chosen].tolist(), "tpr": tpr[chosen].tolist(),
            "threshold": thresholds[chosen].astype(float).tolist()}
