"""Gallery backends at scale: build time, memory, single-query QPS and recall@10 against exact search, for exact
torch search, faiss IVF / HNSW and Milvus Lite (flat, IVF, HNSW) (reidkit.retrieval).

Run: ``python benchmarks/bench_gallery.py [--gallery 1000000] [--dim 512] [--queries 200] [--nlist N]
[--nprobe P ...] [--hnsw-m M] [--backends ...]`` (``make bench``).
Features are the clustered random vectors of bench_search.py (about 20 items per centre, like identities;
queries around the same centres), from a fixed seed. Per backend: build seconds (insertion plus index
construction), the growth of this process's resident memory over the build (``VmRSS``; Milvus Lite keeps its
segments in this process too), single-query QPS (each query searched alone, as the search service does), and
recall@10 against the exact torch search of the same queries. Search-time settings (faiss ``nprobe`` /
``efSearch``, Milvus ``nprobe`` / ``ef``) are swept without rebuilding. Rows print as they finish, so a run cut
short by ``timeout`` keeps its rows. Needs ``reidkit[search]`` (faiss) and ``reidkit[milvus]``.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from pathlib import Path

import torch
from bench_search import clustered_features

from reidkit.retrieval import GalleryIndex, recall_at_k
from reidkit.retrieval import faiss_backend
from reidkit.retrieval.gallery import NewItems


def rss_mib() -> float:
    """Resident memory of this process now, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def single_query_qps(search, queries: torch.Tensor, k: int, seconds: float):
    """(queries per second searching one query at a time for at most `seconds`, ids of the queries done)."""
    ids, start = [], time.perf_counter()
    for row in range(len(queries)):
        ids.append(search(queries[row:row + 1], k).ids[0])
        if time.perf_counter() - start > seconds:
            break
    return len(ids) / (time.perf_counter() - start), ids


def report(name: str, params: str, build_s: float, memory_mib: float, qps: float, recall: float | None) -> None:
    recall_text = "-" if recall is None else f"{recall:.4f}"
    print(f"| {name} | {params} | {build_s:.1f} | {memory_mib:,.0f} | {qps:,.1f} | {recall_text} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--metric", choices=("cosine", "euclidean"), default="cosine")
    parser.add_argument("--noise", type=float, default=0.8)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0, help="most seconds of single-query timing per row")
    parser.add_argument("--backends", nargs="+", default=["faiss-ivf", "faiss-hnsw", "milvus-flat", "milvus-ivf",
                                                            "milvus-hnsw"])
    parser.add_argument("--nlist", type=int, default=None, help="faiss-ivf cells (default round(4·√N))")
    parser.add_argument("--hnsw-m", type=int, default=None, help="faiss-hnsw neighbours per node (default 32)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64],
                        help="faiss-ivf cells visited per query, swept without rebuilding")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    gallery, queries, labels = clustered_features(args.gallery, args.queries, args.dim, args.noise, args.seed)
    camids = torch.zeros_like(labels)
    print(f"{args.gallery} x {args.dim} clustered random features, {args.queries} queries, {args.metric}, "
          f"k={args.k}; torch threads {torch.get_num_threads()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| backend | params | build s | memory MiB | 1-query QPS | recall@10 |\n|---|---|---:|---:|---:|---:|")
    before = rss_mib()
    start = time.perf_counter()
    exact = GalleryIndex(gallery, labels, camids, [""] * args.gallery, args.metric, "exact")
    build_s, memory = time.perf_counter() - start, rss_mib() - before
    truth = exact.search(queries, k=args.k)
    qps, _ = single_query_qps(exact.search, queries, args.k, args.seconds)
    report("exact (torch)", "-", build_s, memory, qps, 1.0)
    for backend in args.backends:
        gc.collect()
        before, start = rss_mib(), time.perf_counter()
        folder = None
        if backend.startswith("faiss"):
            given = {"nlist": args.nlist} if backend == "faiss-ivf" else {"hnsw_m": args.hnsw_m}
            index = GalleryIndex(gallery, labels, camids, [""] * args.gallery, args.metric, backend, **given)
            sweep = [("nprobe", value) for value in args.nprobe] if backend == "faiss-ivf" else \
                [("ef_search", value) for value in (64, 128, 256)]
        else:
            from reidkit.retrieval.milvus_backend import MilvusGallery

            folder = tempfile.mkdtemp(prefix="bench_gallery_")
            index = MilvusGallery.create(Path(folder) / "gallery.db", args.dim, args.metric, backend)
            index.add(gallery, NewItems(labels.tolist(), camids.tolist(), [0.0] * args.gallery,
                                        [-1] * args.gallery, [""] * args.gallery))
            index.save()
            index.search(queries[:1], k=args.k)  # Milvus Lite builds its segment indexes on first use
            sweep = [("nprobe", value) for value in (16, 64)] if backend == "milvus-ivf" else \
                [("ef_search", value) for value in (64, 128)] if backend == "milvus-hnsw" else [(None, None)]
        build_s, memory = time.perf_counter() - start, rss_mib() - before
        for name, value in sweep:
            if name is not None:
                index.params[name] = value
                if backend.startswith("faiss"):
                    faiss_backend.configure(index._faiss_index, backend, index.params)
            qps, found = single_query_qps(index.search, queries, args.k, args.seconds)
            done = len(found)
            recall = recall_at_k(type(truth)(indices=torch.stack([torch.as_tensor(row) for row in found]).numpy(),
                                             distances=truth.distances[:done]),
                                 type(truth)(indices=truth.ids[:done], distances=truth.distances[:done]), args.k)
            params = ", ".join(f"{key}={val}" for key, val in index.params.items()) or "-"
            report(backend, params, build_s, memory, qps, recall)
        del index
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
