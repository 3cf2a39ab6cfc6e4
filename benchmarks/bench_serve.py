"""Search service under load: p50/p99 latency and throughput with concurrent clients, and the server's memory.

Run: ``python benchmarks/bench_serve.py [--clients 8] [--requests 40] [--mixed 2000] [--time-limit 600]
[--run RUN --index INDEX]``.
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

Then the mixed load test: ``--clients`` clients each send ``--mixed`` requests one after the other, drawn with
a fixed seed from uploads of a query JPEG (25 %), searches by query index (35 %), gallery image fetches
(30 %) and query image fetches (10 %), until done or ``--time-limit`` seconds have passed (bounded in count
and time). It prints per kind and overall: requests, errors (any answer but 200, or no answer), p50/p99
latency, requests per second, and the server's peak RSS. The server listens on 127.0.0.1 only.

``--auth`` runs the service with a tokens file (every client sends a token with the search and write scopes, so
each request is authenticated, scoped, rate-limited and audited; ``--rate-limit`` set high enough not to refuse
the load) and ``--adds`` mixes in additions of a JPEG to the gallery (POST /gallery, 5 %; the index file is
rewritten each time).
"""

from __future__ import annotations

import argparse
import asyncio
import random
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


async def drive(url: str, clients: int, requests: int, send, headers: dict) -> tuple[list[float], float]:
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

    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=clients),
                                 headers=headers) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return latencies, time.perf_counter() - start


MIXED_KINDS = {"upload 1 JPEG": 25, "search query_index": 35, "GET gallery image": 30, "GET query image": 10,
               "add 1 JPEG": 5}


async def drive_mixed(url: str, clients: int, requests: int, time_limit: float, senders: dict, headers: dict,
                      ) -> tuple[dict[str, list[float]], dict[str, int], float]:
    """(latencies in s per kind, errors per kind, wall seconds) of `clients` coroutines each sending `requests`
    requests of kinds drawn by MIXED_KINDS weights (seed: the client's number), stopping at `time_limit` s."""
    import httpx

    latencies: dict[str, list[float]] = {kind: [] for kind in senders}
    errors = dict.fromkeys(senders, 0)
    deadline = time.perf_counter() + time_limit

    async def client(http, number: int) -> None:
        draw = random.Random(number)
        kinds = draw.choices(list(senders), weights=[MIXED_KINDS[kind] for kind in senders], k=requests)
        for kind in kinds:
            if time.perf_counter() > deadline:
                return
            start = time.perf_counter()
            try:
                ok = (await senders[kind](http, draw)).status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies[kind].append(time.perf_counter() - start)
            errors[kind] += not ok

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients),
                                 headers=headers) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http, number) for number in range(clients)))
        return latencies, errors, time.perf_counter() - start


def print_mixed(latencies: dict[str, list[float]], errors: dict[str, int], seconds: float, planned: int,
                peak_mib: float) -> None:
    """The mixed load test's table: one row per kind of request, then all of them."""
    header = f"{'request (mixed)':<22} {'count':>6} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7}"
    print(header + "\n" + "-" * len(header))
    every = [value for values in latencies.values() for value in values]
    for name, values, failed in [*((kind, latencies[kind], errors[kind]) for kind in latencies),
                                 ("all", every, sum(errors.values()))]:
        if values:
            p50, p99 = np.percentile(np.array(values) * 1000, [50, 99])
            print(f"{name:<22} {len(values):6d} {failed:6d} {p50:8.1f} {p99:8.1f} {len(values) / seconds:7.1f}")
    print(f"{len(every)} of {planned} planned requests in {seconds:.1f} s; server peak RSS {peak_mib:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=40, help="requests per client and row (0: no rows)")
    parser.add_argument("--mixed", type=int, default=2000, help="requests per client of the mixed load test (0: none)")
    parser.add_argument("--time-limit", type=float, default=600, help="seconds the mixed load test may take")
    parser.add_argument("--run", type=Path)
    parser.add_argument("--index", type=Path)
    parser.add_argument("--queries", type=Path, help="query feature file (default: the run's query split)")
    parser.add_argument("--auth", action="store_true", help="tokens on: every request authenticated and audited")
    parser.add_argument("--adds", action="store_true", help="mix additions to the gallery into the mixed test")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        if args.run is None:
            args.run, args.index, args.queries = build_run(Path(scratch))
        options = ["--index", str(args.index), "--run", str(args.run)]
        options += ["--queries", str(args.queries)] if args.queries else []
        images = sorted((Path(scratch) / "data" / "query").glob("*.jpg")) or None
        headers = {}
        if args.auth:
            from reidkit.serve.security import add_token

            secret = add_token(Path(scratch) / "tokens.json", "bench", ["search", "write"])
            headers = {"Authorization": f"Bearer {secret}"}
            options += ["--tokens", str(Path(scratch) / "tokens.json"), "--rate-limit", "100000",
                        "--audit-log", str(Path(scratch) / "audit.jsonl")]
        options += ["--allow-add"] if args.adds else []
        with serve_in_process(Path(scratch) / "serve.log", *options, "--max-batch", "8") as (url, process):
            import httpx

            load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
            print(f"authentication {'on' if args.auth else 'off'}; server idle RSS {rss_bytes(process.pid) / 2**20:.0f} MiB; {args.clients} clients × "
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
            print(header + "\n" + "-" * len(header) if args.requests else "")
            reference = None
            for name, per_request, send in rows if args.requests else []:
                latencies, seconds = asyncio.run(drive(url, args.clients, args.requests, send, headers))
                p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
                reference = reference or p50
                count = len(latencies)
                print(f"{name:<30} {p50:8.1f} {p99:8.1f} {p50 / reference:9.1f} {count / seconds:7.1f} "
                      f"{count * per_request / seconds:7.1f} {rss_bytes(process.pid) / 2**20:8.0f} "
                      f"{peak_rss_bytes(process.pid) / 2**20:9.0f}")
            if args.mixed and data:
                info = httpx.get(url + "/info", timeout=30, headers=headers).json()
                gallery_size, num_queries = info["gallery_size"], info["num_queries"]
                senders = {"upload 1 JPEG": lambda http, draw: http.post(
                               "/search", files={"image": ("q.jpg", data, "image/jpeg")}),
                           "search query_index": lambda http, draw: http.post(
                               "/search", json={"query_index": draw.randrange(num_queries)}),
                           "GET gallery image": lambda http, draw: http.get(
                               f"/image/gallery/{draw.randrange(gallery_size)}"),
                           "GET query image": lambda http, draw: http.get(
                               f"/image/query/{draw.randrange(num_queries)}")}
                if args.adds:
                    senders["add 1 JPEG"] = lambda http, draw: http.post(
                        "/gallery", files={"images": ("c1_added.jpg", data, "image/jpeg")})
                latencies, errors, seconds = asyncio.run(drive_mixed(url, args.clients, args.mixed, args.time_limit,
                                                                     senders, headers))
                print_mixed(latencies, errors, seconds, args.clients * args.mixed,
                            peak_rss_bytes(process.pid) / 2**20)


if __name__ == "__main__":
    main()
