"""Search service under load: p50/p99 latency and throughput with concurrent clients, and the server's memory.

Run: ``python benchmarks/bench_serve.py [--clients 8] [--requests 40] [--run RUN --index INDEX]``.
Starts ``reidkit serve`` in its own process (defaults: 16 uploads held, 2 decodes) and drives it from this
process with ``--clients`` concurrent HTTP clients, each sending ``--requests`` requests one after the other,
for each kind of request: GET /health (the reference: HTTP and the event loop alone), a search by query
index (the gallery search), an upload of a query JPEG (decode, embedding, search) and a batch of 8 query
JPEGs (one request). Latency percentiles are over all requests of a row; throughput is requests (and
images) per second of wall time; "× /health" divides a row's p50 by the reference's. "RSS MiB" is the
server's resident memory after the row and "peak MiB" its high-water mark (VmHWM) so far. Without
``--run``/``--index`` it builds an untrained ResNet-18 run at 128×64 (the demo's model) on the tiny
synthetic set in a temporary folder. Client and server share the machine's cores: run ``uptime`` first and
report the load.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _live_server import peak_rss_bytes, rss_bytes, serve_in_process  # noqa: E402
from _untrained_run import write_untrained_run  # noqa: E402


def build_run(root: Path) -> tuple[Path, Path, Path]:
    """(run, index, query features) of an untrained demo-sized model on the tiny synthetic set."""
    import torch

    from reidkit.engine.extraction import extract_split
    from reidkit.engine.indexing import build_gallery_index, model_digest

    run, config, dataset, model = write_untrained_run(root, height=128, width=64)
    extract_split(model, dataset.query, config, torch.device("cpu"), root / "query.safetensors", progress=False,
                  model_digest=model_digest(run))
    build_gallery_index(run, root / "data" / "bounding_box_test", progress=False).save(root / "index.safetensors")
    return run, root / "index.safetensors", root / "query.safetensors"


async def drive(url: str, clients: int, requests: int, send) -> tuple[list[float], float]:
    """(latencies in s, wall seconds) of `clients` coroutines each awaiting `send(http)` `requests` times."""
    import httpx

    latencies: list[float] = []

    async def client(http) -> None:
        for _ in range(requests):
            start = time.perf_counter()
            response = await send(http)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=clients)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return latencies, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=40, help="requests per client and row")
    parser.add_argument("--run", type=Path)
    parser.add_argument("--index", type=Path)
    parser.add_argument("--queries", type=Path, help="query feature file (default: the run's query split)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        if args.run is None:
            args.run, args.index, args.queries = build_run(Path(scratch))
        options = ["--index", str(args.index), "--run", str(args.run)]
        options += ["--queries", str(args.queries)] if args.queries else []
        images = sorted((Path(scratch) / "data" / "query").glob("*.jpg")) or None
        with serve_in_process(Path(scratch) / "serve.log", *options, "--max-batch", "8") as (url, process):
            load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
            print(f"server idle RSS {rss_bytes(process.pid) / 2**20:.0f} MiB; {args.clients} clients × "
                  f"{args.requests} requests per row; {load}")
            jpeg = (images[0] if images else None)
            data = jpeg.read_bytes() if jpeg else None
            batch = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in (images or [])[:8]]
            rows = [("GET /health", 1, lambda http: http.get("/health")),
                    ("POST /search query_index", 1, lambda http: http.post("/search", json={"query_index": 0}))]
            if data:
                rows += [("POST /search upload (1 JPEG)", 1,
                          lambda http: http.post("/search", files={"image": ("q.jpg", data, "image/jpeg")})),
                         (f"POST /search/batch ({len(batch)} JPEGs)", len(batch),
                          lambda http: http.post("/search/batch", files=batch))]
            header = (f"{'request':<30} {'p50 ms':>8} {'p99 ms':>8} {'× /health':>9} {'req/s':>7} {'img/s':>7} "
                      f"{'RSS MiB':>8} {'peak MiB':>9}")
            print(header + "\n" + "-" * len(header))
            reference = None
            for name, per_request, send in rows:
                latencies, seconds = asyncio.run(drive(url, args.clients, args.requests, send))
                p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
                reference = reference or p50
                count = len(latencies)
                print(f"{name:<30} {p50:8.1f} {p99:8.1f} {p50 / reference:9.1f} {count / seconds:7.1f} "
                      f"{count * per_request / seconds:7.1f} {rss_bytes(process.pid) / 2**20:8.0f} "
                      f"{peak_rss_bytes(process.pid) / 2**20:9.0f}")


if __name__ == "__main__":
    main()
