"""Speed and memory of k-reciprocal re-ranking: reidkit's sparse implementation vs the dense numpy reference.

Run: ``python benchmarks/bench_rerank.py [--queries 1000] [--gallery 5000] [--dim 2048] [--market] [--msmt]``.

The reference is ``re_ranking`` of the ``fastreid`` wheel (``fastreid/evaluation/rerank.py``, the dense
numpy code of Zhong et al. that reid-strong-baseline and fast-reid ship), loaded from its file without
importing the package (``pip install --no-deps fastreid==1.4.0``). Distances come from random clustered
features (Euclidean, float32, ~20 items per centre). Each method runs in its own subprocess on the same
distances saved to disk. "peak MiB" is the growth of the resident set during the call beyond the
``[Q, G]`` float32 result (which both must return): the peak (``VmHWM``, reset through
``/proc/self/clear_refs`` once the inputs are loaded) minus the resident set just before, minus the
result's size (Linux only).

``--market`` adds both methods at Market-1501 size (3,368 × 15,913; the reference needs ~8 GB there).
``--msmt`` adds reidkit's ``re_ranking_features`` alone at MSMT17 size (11,659 × 82,161, 2,048-d
features): the ``[G, G]`` distance block alone would be 27 GB, so the reference cannot run there.
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

from reidkit.distances import pairwise_distance
from reidkit.metrics.rerank import re_ranking, re_ranking_features

MARKET_SIZE = (3368, 15913)
MSMT_SIZE = (11659, 82161)
BLOCKS = ("q_g", "q_q", "g_g")
REFERENCE_INSTALL = "pip install --no-deps fastreid==1.4.0"


def _fastreid_re_ranking():
    """``re_ranking`` of the installed fastreid wheel, or None when it is not installed."""
    spec = importlib.util.find_spec("fastreid")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "evaluation" / "rerank.py"
    module_spec = importlib.util.spec_from_file_location("fastreid_rerank", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.re_ranking


def clustered_features(num_q: int, num_g: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 query and gallery features around ``(num_q + num_g) / 20`` random centres."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn((num_q + num_g) // 20 + 1, dim, generator=generator)
    labels = torch.randint(len(centres), (num_q + num_g,), generator=generator)
    features = centres[labels].add_(torch.randn(num_q + num_g, dim, generator=generator), alpha=0.8)
    return features[:num_q], features[num_q:]


def _write_distances(folder: Path, num_q: int, num_g: int, dim: int, seed: int) -> None:
    """Save the q_g, q_q, g_g float32 Euclidean distances of clustered features."""
    query, gallery = clustered_features(num_q, num_g, dim, seed)
    for name, (x, y) in zip(BLOCKS, ((query, gallery), (query, query), (gallery, gallery))):
        np.save(folder / f"{name}.npy", pairwise_distance(x, y).numpy())


def _memory_kib(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak) of this process in KiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _measured(function, *args) -> tuple[np.ndarray, dict]:
    """Result, seconds and peak growth beyond the result (MiB) of ``function(*args)``."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak resident set to the current one
    before = _memory_kib("VmRSS")
    start = time.perf_counter()
    result = function(*args)
    seconds = time.perf_counter() - start
    peak_kib = _memory_kib("VmHWM") - before - result.nbytes / 1024
    return result, {"seconds": seconds, "peak_mib": peak_kib / 1024}


def _worker(method: str, folder: str) -> None:
    """Run one method; print its seconds and peak memory as JSON (the result is saved for comparison)."""
    if method == "msmt":  # features generated here: `folder` is the seed
        query, gallery = clustered_features(*MSMT_SIZE, 2048, int(folder))
        result, stats = _measured(re_ranking_features, query, gallery)
        print(json.dumps(stats | {"finite": bool(np.isfinite(result).all())}))
        return
    run = re_ranking if method == "reidkit" else _fastreid_re_ranking()
    dists = [np.load(Path(folder) / f"{name}.npy") for name in BLOCKS]
    result, stats = _measured(run, *dists)
    np.save(Path(folder) / f"result_{method}.npy", result)
    print(json.dumps(stats))


def _measure(method: str, folder: Path | int) -> dict:
    """Seconds and peak memory of ``method`` in a fresh subprocess (``{"error": ...}`` when it fails)."""
    done = subprocess.run([sys.executable, __file__, "--worker", method, str(folder)], capture_output=True, text=True)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(size: str, method: str, stats: dict, reference: dict | None) -> str:
    if "error" in stats:
        return f"{size:>15} {method:>9}  failed: {stats['error']}"
    ratios = f"{'-':>11} {'-':>10}"
    if reference and "error" not in reference:
        memory_ratio = reference["peak_mib"] / max(stats["peak_mib"], 1)
        ratios = f"{reference['seconds'] / stats['seconds']:10.1f}x {memory_ratio:9.1f}x"
    return f"{size:>15} {method:>9} {stats['seconds']:9.2f} {stats['peak_mib']:9.0f} {ratios}"


def _compare(num_q: int, num_g: int, dim: int, seed: int) -> None:
    """Both methods on the same distances: a table row each and their largest difference."""
    size = f"{num_q} x {num_g}"
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        _write_distances(folder, num_q, num_g, dim, seed)
        if _fastreid_re_ranking() is None:
            reference = {"error": f"the fastreid wheel is not installed ({REFERENCE_INSTALL})"}
        else:
            reference = _measure("fastreid", folder)
        ours = _measure("reidkit", folder)
        print(_row(size, "fastreid", reference, reference))
        print(_row(size, "reidkit", ours, reference))
        if "error" not in reference and "error" not in ours:
            difference = np.abs(np.load(folder / "result_fastreid.npy") - np.load(folder / "result_reidkit.npy")).max()
            print(f"{'':>15} max |reidkit - fastreid| over all entries = {difference:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--gallery", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--market", action="store_true", help="also compare at Market-1501 size")
    parser.add_argument("--msmt", action="store_true", help="also run re_ranking_features alone at MSMT17 size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
        return
    print(f"k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3), {args.dim}-d clustered features, float32 distances;")
    print("peak MiB: resident-set growth during the call beyond the [Q, G] float32 result; ratios: fastreid / reidkit")
    print(f"{'size (Q x G)':>15} {'method':>9} {'seconds':>9} {'peak MiB':>9} {'time ratio':>11} {'mem ratio':>10}")
    _compare(args.queries, args.gallery, args.dim, args.seed)
    if args.market:
        _compare(*MARKET_SIZE, args.dim, args.seed)
    if args.msmt:
        stats = _measure("msmt", args.seed)
        print(_row(f"{MSMT_SIZE[0]} x {MSMT_SIZE[1]}", "reidkit", stats, None)
              + ("" if "error" in stats else "   (re_ranking_features from 2,048-d features; reference cannot run)"))


if __name__ == "__main__":
    main()
