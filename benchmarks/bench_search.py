"""Gallery search speed and recall: exact torch search vs faiss flat, IVF and HNSW (reidkit.retrieval).

Run: ``python benchmarks/bench_search.py [--gallery 50000] [--queries 1000] [--dim 512] [--metric cosine]``.
Features are random clustered vectors (about 20 gallery items per centre, like identities; queries drawn
around the same centres) from a fixed seed. For each backend: build time (constructor: copy, faiss add,
IVF k-means, HNSW graph), search time of all queries at k (best of ``--repeats``), queries per second,
recall@k against the exact torch search, the search speed-up over exact torch search, and the latency of
one query searched alone (mean over the first ``--single`` queries: no batching across queries). All backends
run in this process on the same CPU threads (torch and faiss thread counts are printed). Needs faiss
(``pip install "reidkit[search]"``) for every row but the first.
"""

from __future__ import annotations

import argparse
import time

import torch

from reidkit.retrieval import GalleryIndex, recall_at_k


def clustered_features(num_gallery: int, num_queries: int, dim: int, noise: float, seed: int):
    """Gallery `[G, D]` and queries `[Q, D]` float32 around `G // 20` shared Gaussian centres."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(1, num_gallery // 20), dim, generator=generator)
    gallery_labels = torch.randint(len(centres), (num_gallery,), generator=generator)
    query_labels = torch.randint(len(centres), (num_queries,), generator=generator)
    gallery = centres[gallery_labels] + noise * torch.randn(num_gallery, dim, generator=generator)
    queries = centres[query_labels] + noise * torch.randn(num_queries, dim, generator=generator)
    return gallery, queries, gallery_labels


def _best_search_seconds(index: GalleryIndex, queries: torch.Tensor, k: int, repeats: int):
    """(fastest of `repeats` searches in seconds, the result of the last one)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = index.search(queries, k=k)
        best = min(best, time.perf_counter() - start)
    return best, result


def _single_query_ms(index: GalleryIndex, queries: torch.Tensor, k: int) -> float:
    """Mean milliseconds per query when each query is searched alone."""
    start = time.perf_counter()
    for row in range(len(queries)):
        index.search(queries[row:row + 1], k=k)
    return 1000 * (time.perf_counter() - start) / max(1, len(queries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=50000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--metric", choices=("cosine", "euclidean"), default="cosine")
    parser.add_argument("--noise", type=float, default=0.8, help="per-coordinate std around a centre (unit)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--backends", nargs="+", default=["exact", "faiss-flat", "faiss-ivf", "faiss-hnsw"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    gallery, queries, labels = clustered_features(args.gallery, args.queries, args.dim, args.noise, args.seed)
    pids, camids, paths = labels, torch.zeros_like(labels), [f"{i}.jpg" for i in range(args.gallery)]
    threads = f"torch threads {torch.get_num_threads()}"
    if any(backend.startswith("faiss") for backend in args.backends):
        import faiss

        threads += f", faiss {faiss.__version__} threads {faiss.omp_get_max_threads()}"
    print(f"gallery {args.gallery} x {args.dim}, {args.queries} queries, {args.metric}, k={args.k}, "
          f"seed {args.seed}; {threads}")
    print(f"{'backend':>11} {'params':>26} {'build s':>8} {'search s':>9} {'queries/s':>10} "
          f"{f'recall@{args.k}':>10} {'speed-up':>9} {'1-query ms':>11}")
    exact = exact_seconds = None
    for backend in ["exact"] + [name for name in args.backends if name != "exact"]:
        start = time.perf_counter()
        index = GalleryIndex(gallery, pids, camids, paths, args.metric, backend)
        build_seconds = time.perf_counter() - start
        seconds, result = _best_search_seconds(index, queries, args.k, args.repeats)
        if exact is None:
            exact, exact_seconds = result, seconds
        single_ms = _single_query_ms(index, queries[:args.single], args.k)
        params = ", ".join(f"{key}={value}" for key, value in index.params.items()) or "-"
        print(f"{backend:>11} {params:>26} {build_seconds:8.2f} {seconds:9.3f} {args.queries / seconds:10.0f} "
              f"{recall_at_k(result, exact, args.k):10.4f} {exact_seconds / seconds:8.1f}x {single_ms:11.2f}")
        del index


if __name__ == "__main__":
    main()
