"""Speed, memory and agreement of reidkit's evaluation with the reference evaluators users quote.

Run: ``python benchmarks/bench_eval.py [--skip-msmt] [--seed 0]``.

Market-1501 size (3,368 queries × 15,913 gallery items, 751 identities, 6 cameras): reidkit's
``evaluate_rank`` against Torchreid's Python ``eval_market1501`` (``use_cython=False``) and the Cython
``evaluate_cy`` whose source the ``fastreid`` wheel ships (built here with Cython into a temporary
folder). Distances are a random permutation of ``k / G`` per row (float32, no ties), so every
evaluator must agree up to the float32 arithmetic of the references. MSMT17 size (11,659 × 82,161,
2,048-d random float32 features): ``evaluate_features`` alone.

Each method runs in its own subprocess. "peak MiB" is the growth of the resident set during the call:
the peak (``VmHWM``, reset through ``/proc/self/clear_refs`` once the inputs are loaded) minus the
resident set just before; "process MiB" is the whole process's peak (``ru_maxrss``), imports and
inputs included. Linux only. References are imported lazily from their installed files (Torchreid's
package ``__init__`` needs OpenCV and the model zoo, which the evaluator does not use); a missing one
is reported in its row. Then small cases show the references' known defects (FIELD_NOTES.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

MARKET = {"queries": 3368, "gallery": 15913, "pids": 751, "cameras": 6}
MSMT = {"queries": 11659, "gallery": 82161, "pids": 3060, "cameras": 15, "dim": 2048}
MAX_RANK = 50
METHODS = {
    "reidkit": "reidkit evaluate_rank",
    "torchreid": "torchreid eval_market1501 (Python)",
    "fastreid_cy": "fastreid evaluate_cy (Cython)",
}
INSTALL = {"torchreid": "pip install --no-deps torchreid==0.2.5",
           "fastreid_cy": "pip install --no-deps fastreid==1.4.0 cython"}


# ---------------------------------------------------------------------------------------------------
# Reference evaluators, loaded lazily


def _package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None


def _torchreid_rank():
    """Torchreid's ``metrics/rank.py`` module, its Cython import blocked (the Python path is measured)."""
    folder = _package_dir("torchreid")
    if folder is None:
        return None
    sys.modules["torchreid.reid.metrics.rank_cylib.rank_cy"] = None  # ImportError without the package import
    spec = importlib.util.spec_from_file_location("torchreid_rank", folder / "reid" / "metrics" / "rank.py")
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec.loader.exec_module(module)
    return module


def build_fastreid_cython(folder: Path) -> Path | str:
    """Compile the ``rank_cy.pyx`` shipped in the fastreid wheel into ``folder``; the ``.so`` path, or a
    reason why not."""
    package = _package_dir("fastreid")
    if package is None:
        return f"not installed ({INSTALL['fastreid_cy']})"
    if importlib.util.find_spec("Cython") is None:
        return "not built (pip install cython)"
    source = package / "evaluation" / "rank_cylib" / "rank_cy.pyx"
    (folder / "rank_cy.pyx").write_bytes(source.read_bytes())
    (folder / "setup_rank.py").write_text(
        "import numpy\nfrom Cython.Build import cythonize\nfrom setuptools import Extension, setup\n"
        "setup(ext_modules=cythonize([Extension('rank_cy', ['rank_cy.pyx'], "
        "include_dirs=[numpy.get_include()])], quiet=True))\n"
    )
    done = subprocess.run([sys.executable, "setup_rank.py", "build_ext", "--inplace"], cwd=folder,
                          capture_output=True, text=True)
    built = sorted(folder.glob("rank_cy*.so"))
    if done.returncode or not built:
        return f"build failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return built[0]


def _load_extension(path: Path):
    spec = importlib.util.spec_from_file_location("rank_cy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _evaluator(method: str, cython_so: str):
    """A function ``(dist, q_pids, g_pids, q_camids, g_camids, max_rank) -> (cmc, mAP, mINP | None)``."""
    if method == "reidkit":
        from reidkit.metrics.rank import evaluate_rank

        def run(*args):
            result = evaluate_rank(*args)
            return result["cmc"], result["mAP"], result["mINP"]
        return run
    if method == "torchreid":
        module = _torchreid_rank()

        def run(*args):
            cmc, mean_ap = module.evaluate_rank(*args, use_metric_cuhk03=False, use_cython=False)
            return cmc, mean_ap, None
        return run
    module = _load_extension(Path(cython_so))

    def run(*args):
        cmc, all_ap, all_inp = module.evaluate_cy(*args, False)
        return cmc, float(np.mean(all_ap)), float(np.mean(all_inp))
    return run


# ---------------------------------------------------------------------------------------------------
# Measurement in subprocesses


def _memory_kib(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak) of this process in KiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _measure_call(function, *args) -> tuple[object, dict]:
    """Result, seconds, peak growth and whole-process peak (MiB) of ``function(*args)``."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak resident set to the current one
    before = _memory_kib("VmRSS")
    start = time.perf_counter()
    result = function(*args)
    seconds = time.perf_counter() - start
    stats = {"seconds": seconds, "peak_mib": (_memory_kib("VmHWM") - before) / 1024,
             "process_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return result, stats


def _market_worker(method: str, folder: Path, cython_so: str) -> dict:
    run = _evaluator(method, cython_so)
    inputs = [np.load(folder / f"{name}.npy") for name in ("dist", "q_pids", "g_pids", "q_camids", "g_camids")]
    (cmc, mean_ap, mean_inp), stats = _measure_call(run, *inputs, MAX_RANK)
    return stats | {"cmc": np.asarray(cmc, np.float64).tolist(), "mAP": float(mean_ap),
                    "mINP": None if mean_inp is None else float(mean_inp)}


def _msmt_worker(seed: int, device: str = "cpu", what: str = "metrics") -> dict:
    import torch

    from reidkit.metrics.features_eval import evaluate_features
    from reidkit.metrics.ranked_lists import rank_features

    def run(*args):  # "metrics": evaluate_features; "lists": what `reidkit train`/`eval` compute
        return evaluate_features(*args) if what == "metrics" else rank_features(*args).metrics

    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(MSMT["queries"], MSMT["dim"], generator=generator)
    gallery = torch.randn(MSMT["gallery"], MSMT["dim"], generator=generator)
    rng = np.random.default_rng(seed)
    labels = (rng.integers(0, MSMT["pids"], MSMT["queries"]), rng.integers(0, MSMT["pids"], MSMT["gallery"]),
              rng.integers(0, MSMT["cameras"], MSMT["queries"]), rng.integers(0, MSMT["cameras"], MSMT["gallery"]))
    if device != "cpu":  # distances and ranking on the GPU (reidkit.metrics.rank_torch); timed to the result
        query, gallery = query.to(device), gallery.to(device)
        run(query[:512], gallery, *(label[:512] if i % 2 == 0 else label
                                    for i, label in enumerate(labels)))  # warm-up
        torch.cuda.synchronize()
    result, stats = _measure_call(run, query, gallery, *labels)
    return stats | {"mAP": result["mAP"], "rank1": float(result["cmc"][0])}


def _in_subprocess(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["exit code %d" % done.returncode])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write_market(folder: Path, seed: int) -> None:
    """Float32 distances ``permutation(G) / G`` per row (distinct in a row) and random labels."""
    rng = np.random.default_rng(seed)
    num_q, num_g = MARKET["queries"], MARKET["gallery"]
    dist = rng.permuted(np.broadcast_to(np.arange(num_g, dtype=np.int32), (num_q, num_g)), axis=1)
    # `permuted` returns a column-major array; a distance matrix from a matrix product is row-major.
    np.save(folder / "dist.npy", np.ascontiguousarray(dist / np.float32(num_g), dtype=np.float32))
    for name, size, high in (("q_pids", num_q, MARKET["pids"]), ("g_pids", num_g, MARKET["pids"]),
                             ("q_camids", num_q, MARKET["cameras"]), ("g_camids", num_g, MARKET["cameras"])):
        np.save(folder / f"{name}.npy", rng.integers(0, high, size))


# ---------------------------------------------------------------------------------------------------
# Report


def _market_table(seed: int) -> None:
    print(f"Market-1501 size: {MARKET['queries']} x {MARKET['gallery']}, {MARKET['pids']} pids, "
          f"{MARKET['cameras']} cameras, float32 distances without ties, max_rank {MAX_RANK}")
    header = (f"{'method':<36} {'seconds':>8} {'peak MiB':>9} {'process MiB':>12} {'time x':>7} {'mem x':>6} "
              f"{'max|dCMC|':>10} {'|dmAP|':>9} {'|dmINP|':>9}  agree 1e-6")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        _write_market(folder, seed)
        cython_so = build_fastreid_cython(folder)
        ours = None
        for method, label in METHODS.items():
            if method == "torchreid" and _package_dir("torchreid") is None:
                print(f"{label:<36} not installed ({INSTALL['torchreid']})")
                continue
            if method == "fastreid_cy" and isinstance(cython_so, str):
                print(f"{label:<36} {cython_so}")
                continue
            row = _in_subprocess("market", method, str(folder), str(cython_so))
            if "error" in row:
                print(f"{label:<36} failed: {row['error']}")
                continue
            ours = ours or row
            line = (f"{label:<36} {row['seconds']:8.2f} {row['peak_mib']:9.0f} {row['process_mib']:12.0f} "
                    f"{row['seconds'] / ours['seconds']:6.1f}x {row['peak_mib'] / max(ours['peak_mib'], 1):5.1f}x")
            if row is not ours:
                d_cmc = float(np.max(np.abs(np.subtract(row["cmc"], ours["cmc"]))))
                d_ap = abs(row["mAP"] - ours["mAP"])
                d_inp = None if row["mINP"] is None else abs(row["mINP"] - ours["mINP"])
                agree = max(d_cmc, d_ap, d_inp or 0.0) <= 1e-6
                line += (f" {d_cmc:10.1e} {d_ap:9.1e} {'n/a' if d_inp is None else f'{d_inp:9.1e}':>9}  "
                         f"{'yes' if agree else 'NO'}")
            print(line)
        if ours:
            print(f"reidkit: rank-1 {ours['cmc'][0]:.6f}  mAP {ours['mAP']:.8f}  mINP {ours['mINP']:.8f}")
        _defects(cython_so)


def _defects(cython_so: Path | str) -> None:
    """Small cases where the references' known defects show (FIELD_NOTES.md)."""
    from reidkit.metrics.rank import evaluate_rank

    print("\nKnown defects of the references on small cases:")
    references = {"torchreid (Python)": _torchreid_rank,
                  "fastreid (Cython)": lambda: _load_extension(cython_so) if isinstance(cython_so, Path) else None}

    def reference_result(load, args):
        """(cmc, mAP) of a reference, or None when it is not available."""
        module = load()
        if module is None:
            return None
        if hasattr(module, "evaluate_cy"):
            cmc, all_ap, _ = module.evaluate_cy(*args, False)
            return cmc, float(np.mean(all_ap))
        return module.evaluate_rank(*args, use_metric_cuhk03=False, use_cython=False)

    # 1. A query whose gallery is shorter than max_rank after junk removal: 50 items, 3 of them junk
    #    for query 0 (pid 1, camera 0), whose only true match is last; query 1's match is 6th.
    g_pids, g_cams = np.arange(100, 100 + MAX_RANK), np.ones(MAX_RANK, np.int64)
    g_pids[:3], g_cams[:3], g_pids[-1], g_pids[5] = 1, 0, 1, 2
    args = (np.tile(np.arange(MAX_RANK, dtype=np.float32), (2, 1)), np.array([1, 2]), g_pids,
            np.array([0, 0]), g_cams, MAX_RANK)
    print("  short gallery, CMC at ranks 45-50 (truth: 0.5, 0.5, 1, 1, 1, 1):")
    print(f"    reidkit            {np.round(evaluate_rank(*args)['cmc'][44:], 3).tolist()}")
    for label, load in references.items():
        try:
            result = reference_result(load, args)
        except Exception as error:  # noqa: BLE001 - the defect shown is the crash
            print(f"    {label:<18} raises {type(error).__name__}: {str(error)[:80]}")
            continue
        if result is not None:
            monotone = bool(np.all(np.diff(result[0]) >= 0))
            print(f"    {label:<18} {np.round(result[0][44:], 3).tolist()}"
                  f"{'' if monotone else '  NOT monotone: stale values past the kept gallery'}")
    # 2. Ties: 20 queries, 4,000 gallery items at integer distances 0-3 (many ties), 40 identities.
    rng = np.random.default_rng(0)
    dist = rng.integers(0, 4, (20, 4000)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, 40, 20), rng.integers(0, 40, 4000)
    args = (dist, q_pids, g_pids, np.zeros(20, np.int64), np.ones(4000, np.int64), 5)
    stable = []  # AP with ties ordered by gallery index, by a stable sort
    for row, pid in zip(dist, q_pids):
        relevant = g_pids[np.argsort(row, kind="stable")] == pid
        stable.append(np.mean(np.cumsum(relevant)[relevant] / (np.flatnonzero(relevant) + 1)))
    print(f"  ties, mAP (truth with ties in gallery order, by a stable sort: {np.mean(stable):.8f}):")
    print(f"    reidkit            {evaluate_rank(*args)['mAP']:.8f}")
    for label, load in references.items():
        result = reference_result(load, args)
        if result is not None:
            print(f"    {label:<18} {result[1]:.8f}  (np.argsort default kind: unstable, order of ties unspecified)")


def _msmt_row(seed: int) -> None:
    print(f"\nMSMT17 size: evaluate_features, {MSMT['queries']} x {MSMT['gallery']} queries x gallery, "
          f"{MSMT['dim']}-d float32 features ({(MSMT['queries'] + MSMT['gallery']) * MSMT['dim'] * 4 / 2**20:.0f} "
          f"MiB), {MSMT['pids']} pids, {MSMT['cameras']} cameras, Euclidean")
    import torch

    from reidkit.metrics.rank import default_num_threads

    print("metrics: evaluate_features (CMC, mAP, mINP); + lists: rank_features, what `reidkit train`/`eval` run "
          "(the same metrics, each query's AP and 10 nearest, rank-1 per camera pair); ratio against metrics")
    print(f"{'where':<40} {'seconds':>8} {'ratio':>6} {'peak MiB (call)':>16} {'process MiB':>12}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        reference = None
        for what in ("metrics", "lists"):
            row = _in_subprocess("msmt", str(seed), device, what)
            where = (f"CPU, {default_num_threads()} ranking threads" if device == "cpu"
                     else f"GPU ({torch.cuda.get_device_name()})") + (", metrics" if what == "metrics" else ", + lists")
            if "error" in row:
                print(f"{where:<40} failed: {row['error']}")
                continue
            reference = reference or row["seconds"]
            print(f"{where:<40} {row['seconds']:8.2f} {row['seconds'] / reference:6.2f} {row['peak_mib']:16.0f} "
                  f"{row['process_mib']:12.0f}   (rank-1 {row['rank1']:.5f}, mAP {row['mAP']:.5f}: chance level)")
    if devices == ["cpu"]:
        print(f"{'GPU':<32} not measured: no CUDA device")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-msmt", action="store_true", help="skip the MSMT17-size evaluate_features run")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        row = _market_worker(rest[0], Path(rest[1]), rest[2]) if kind == "market" else \
            _msmt_worker(int(rest[0]), rest[1], rest[2])
        print(json.dumps(row))
        return
    _market_table(args.seed)
    if not args.skip_msmt:
        _msmt_row(args.seed)


if __name__ == "__main__":
    main()
