"""Speed and memory of k-reciprocal re-ranking: reidkit's sparse implementation vs the dense reference.

Run: ``python benchmarks/bench_rerank.py [--queries 1000] [--gallery 5000] [--dim 2048] [--market]``.
Distances come from random clustered features (Euclidean, float32). Each method runs in its own
subprocess on the same distances saved to disk; peak memory is the process's peak resident set
during the call minus its resident set just before (inputs loaded), read from ``/proc/self/status``
after resetting the peak through ``/proc/self/clear_refs`` (Linux). The dense reference is
the ground truth of ``tests/test_rerank.py``. ``--market`` adds reidkit alone at Market-1501 size
(3368 queries × 15913 gallery items).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from reidkit.losses.distances import pairwise_distance
from reidkit.metrics.rerank import re_ranking

MARKET_SIZE = (3368, 15913)
BLOCKS = ("q_g", "q_q", "g_g")


def _dense_reference():
    """``dense_re_ranking`` of the tests, loaded from its file (the tests folder is not a package)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "test_rerank.py"
    spec = importlib.util.spec_from_file_location("test_rerank", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dense_re_ranking


def _write_distances(folder: Path, num_q: int, num_g: int, dim: int, seed: int) -> None:
    """Save q_g, q_q, g_g float32 Euclidean distances of clustered features (~20 items per centre)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn((num_q + num_g) // 20 + 1, dim, generator=generator)
    labels = torch.randint(len(centres), (num_q + num_g,), generator=generator)
    features = centres[labels] + 0.8 * torch.randn(num_q + num_g, dim, generator=generator)
    query, gallery = features[:num_q], features[num_q:]
    for name, (x, y) in zip(BLOCKS, ((query, gallery), (query, query), (gallery, gallery))):
        np.save(folder / f"{name}.npy", pairwise_distance(x, y).numpy())


def _memory_kib(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak) of this process in KiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _worker(method: str, folder: Path) -> None:
    """Run one method on the saved distances; print seconds and peak-RSS growth (MiB) as JSON."""
    run = re_ranking if method == "reidkit" else _dense_reference()
    dists = [np.load(folder / f"{name}.npy") for name in BLOCKS]
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak resident set to the current one
    before = _memory_kib("VmRSS")
    start = time.perf_counter()
    result = run(*dists)
    seconds = time.perf_counter() - start
    peak = _memory_kib("VmHWM") - before
    np.save(folder / f"result_{method}.npy", result)
    print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024}))


def _measure(method: str, folder: Path) -> dict:
    """Seconds and peak memory of ``method`` in a fresh subprocess."""
    done = subprocess.run([sys.executable, __file__, "--worker", method, str(folder)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--gallery", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--market", action="store_true", help="also run reidkit alone at Market-1501 size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker[0], Path(args.worker[1]))
        return
    print(f"k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3), {args.dim}-d clustered features, float32 distances")
    print(f"{'size (Q x G)':>15} {'method':>8} {'seconds':>9} {'peak MiB':>9} {'time ratio':>11} {'mem ratio':>10}")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        _write_distances(folder, args.queries, args.gallery, args.dim, args.seed)
        dense, ours = _measure("dense", folder), _measure("reidkit", folder)
        size = f"{args.queries} x {args.gallery}"
        print(f"{size:>15} {'dense':>8} {dense['seconds']:9.2f} {dense['peak_mib']:9.0f} {'1.0':>11} {'1.0':>10}")
        print(f"{size:>15} {'reidkit':>8} {ours['seconds']:9.2f} {ours['peak_mib']:9.0f} "
              f"{dense['seconds'] / ours['seconds']:10.1f}x {dense['peak_mib'] / max(ours['peak_mib'], 1e-9):9.1f}x")
        difference = np.abs(np.load(folder / "result_dense.npy") - np.load(folder / "result_reidkit.npy")).max()
    print(f"max |reidkit - dense| = {difference:.2e}")
    if args.market:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            _write_distances(folder, *MARKET_SIZE, args.dim, args.seed)
            market = _measure("reidkit", folder)
        size = f"{MARKET_SIZE[0]} x {MARKET_SIZE[1]}"
        print(f"{size:>15} {'reidkit':>8} {market['seconds']:9.2f} {market['peak_mib']:9.0f} {'-':>11} {'-':>10}")


if __name__ == "__main__":
    main()
