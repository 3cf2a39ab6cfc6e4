"""The VehicleID test protocol (Liu et al., "Deep Relative Distance Learning: Tell the Difference Between Similar
Vehicles", CVPR 2016): from the images of a test list, one randomly drawn image per vehicle forms the gallery and
every other image is a query; CMC, mAP and mINP are averaged over repeated draws (10 in the papers).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reidkit.metrics.rank import as_distance_array, as_ids, check_positive, evaluate_rank


def evaluate_vehicleid(distmat: Any, pids: Any, max_rank: int = 50, repeats: int = 10, seed: int = 0) -> dict:
    """Metrics of the VehicleID protocol from the `[N, N]` distances among the N images of a test list.

    Each repeat draws `keys = numpy.random.default_rng(seed).random(N)` (a fresh `keys` per repeat from the same
    generator); each vehicle's image with the smallest key is its gallery image, the others are queries ranked
    against the whole drawn gallery (one true match each, so AP = INP = 1 / its rank). Vehicles with a single
    image give no query.

    Args:
        distmat: `[N, N]` distances between the test images (numpy or torch).
        pids: `[N]` vehicle ids.
        repeats: draws averaged.
        seed: seed of the draws.

    Returns:
        `cmc` (length max_rank), `mAP`, `mINP` averaged over the draws, and `num_valid_queries` (N − vehicles).

    Raises:
        ValueError: a non-square `distmat`, sizes that differ, or no vehicle with two images.
    """
    check_positive(max_rank=max_rank, repeats=repeats)
    dist = as_distance_array(distmat)
    if dist.shape[0] != dist.shape[1]:
        raise ValueError(f"the VehicleID protocol needs the [N, N] distances among the test images, got {dist.shape}")
    pids = as_ids(pids, "pids", dist.shape[0])
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(repeats):
        keys = rng.random(len(pids))
        order = np.lexsort((keys, pids))
        first = np.r_[True, pids[order][1:] != pids[order][:-1]]
        gallery, queries = np.sort(order[first]), np.sort(order[~first])
        if queries.size == 0:
            raise ValueError("no vehicle of the test list has two images, so the VehicleID protocol has no query")
        results.append(evaluate_rank(dist[np.ix_(queries, gallery)], pids[queries], pids[gallery],
                                     np.zeros(len(queries), np.int64), np.ones(len(gallery), np.int64),
                                     max_rank=max_rank, junk="none"))
    return {"cmc": np.mean([r["cmc"] for r in results], axis=0), "mAP": float(np.mean([r["mAP"] for r in results])),
            "mINP": float(np.mean([r["mINP"] for r in results])), "num_valid_queries": results[0]["num_valid_queries"]}
