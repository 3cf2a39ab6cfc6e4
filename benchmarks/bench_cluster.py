"""Time and peak memory of adaptation's clustering at scale: 100,000 unlabelled features → faiss k-NN → sparse
k-reciprocal Jaccard graph → DBSCAN (`reidkit.engine.clustering.pseudo_labels`), never an N × N matrix.

Run: ``python benchmarks/bench_cluster.py [--images 100000] [--dim 512] [--per-identity 20]``.

Features are random clustered unit vectors (``--per-identity`` images around each random centre, Gaussian noise of
``--noise`` per coordinate), float32. Reported: seconds of each stage (k-NN search and the whole graph, DBSCAN),
the peak resident memory growth over the features already loaded (``VmHWM`` reset through ``/proc/self/clear_refs``,
Linux), what a dense float32 N × N matrix would take, and the pseudo labels' purity, NMI and ARI against the
centres (a check that the clustering is the intended one, not a benchmark of it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def resident_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--per-identity", type=int, default=20)
    parser.add_argument("--noise", type=float, default=0.03)
    parser.add_argument("--k1", type=int, default=30)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--eps", type=float, default=0.6)
    parser.add_argument("--min-samples", type=int, default=4)
    args = parser.parse_args()

    from reidkit.engine.clustering import dbscan_labels
    from reidkit.metrics import jaccard
    from reidkit.metrics.pseudo_labels import pseudo_label_quality

    rng = np.random.default_rng(0)
    identities = args.images // args.per_identity
    centres = rng.normal(size=(identities, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    true = np.repeat(np.arange(identities), args.per_identity)
    features = centres[true] + args.noise * rng.normal(size=(len(true), args.dim)).astype(np.float32)
    del centres
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the resident set now
    before = resident_mib("VmRSS")

    timings = {}
    search = jaccard.nearest_neighbours

    def timed_search(*search_args):
        started = time.perf_counter()
        result = search(*search_args)
        timings["knn_seconds"] = time.perf_counter() - started
        return result

    jaccard.nearest_neighbours = timed_search
    started = time.perf_counter()
    graph = jaccard.jaccard_distance_graph(features, args.k1, args.k2, max_distance=args.eps, progress=True)
    timings["jaccard_graph_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    labels = dbscan_labels(graph, args.eps, args.min_samples)
    timings["dbscan_seconds"] = time.perf_counter() - started
    result = {"images": len(features), "dim": args.dim, "k1": args.k1, "k2": args.k2, "eps": args.eps,
              **{key: round(value, 1) for key, value in timings.items()},
              "graph_entries": int(graph.nnz), "peak_growth_mib": round(resident_mib("VmHWM") - before),
              "dense_matrix_mib": round(len(features) ** 2 * 4 / 2**20),
              **pseudo_label_quality(labels, true)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
