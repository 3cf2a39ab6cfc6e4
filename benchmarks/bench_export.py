"""Deployment table: every export format of the demo run against PyTorch fp32, measured in the same process.

Run: ``python benchmarks/bench_export.py [--run runs/demo] [--formats onnx onnx-int8 ...]``. The run folder is
reused when it holds a model, else trained first with ``reidkit train --config configs/demo.yaml`` (minutes
on a CPU). For PyTorch fp32 (the reference, the run's model in eval mode) and each format written by
``reidkit.export.export`` (parity check included) into ``RUN/exports/``:

- size on disk of the exported file(s) (OpenVINO: .xml + .bin);
- extraction img/s of the model alone (input already preprocessed, the same float32 array for every row):
  batch 1 (the first ``--single`` query images one at a time) and batch 64 (``--batches`` batches of 64
  query images), each the best of ``--repeats`` passes after one warm-up pass;
- max |Δ feature| and min cosine against PyTorch on those 64 query images (same input array);
- rank-1 and mAP of the run's query/gallery with `reidkit.export.evaluation.evaluate_exported` (the code
  path of ``reidkit eval --model``) and `evaluate_model` for PyTorch, with the run's eval config.

Ratios are against the PyTorch fp32 row, or with ``--reference-run TEACHER`` against that run's PyTorch fp32
row, measured first in the same process on the same query images (e.g. a distilled student's int8 file against
its teacher; accuracy on the same query/gallery when both runs test on one data set). ``--min-cosine X`` is
handed to each export's parity check (e.g. 0 to measure an int8 file the default bound refuses). TensorRT is
measured only where `tensorrt` and a CUDA GPU exist; its row says why otherwise. Every runtime uses its default CPU thread count (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reidkit.config import resolve_protocol
from reidkit.data.build import build_dataset
from reidkit.engine.evaluation import evaluate_model
from reidkit.engine.saved_runs import load_run_config, load_run_model
from reidkit.errors import ReidkitError
from reidkit.export import FORMATS, SUFFIXES, export, load_model, preprocess_images
from reidkit.export.evaluation import evaluate_exported
from reidkit.export.parity import measure_parity
from reidkit.export.source import feature_module

BATCH = 64


def ensure_run(run: Path, config: str) -> None:
    """Train `config` into `run` unless it already holds a model."""
    if (run / "model.safetensors").is_file():
        print(f"reusing the trained run {run}")
        return
    print(f"training {config} into {run} (minutes on a CPU) ...", flush=True)
    subprocess.run([sys.executable, "-m", "reidkit", "--quiet", "train", "--config", config, "--out", str(run)],
                   check=True)


def best_images_per_second(model, images: np.ndarray, batch_size: int, repeats: int) -> float:
    """Images per second of `model` over `images` in batches of `batch_size`: best of `repeats` timed passes,
    after one warm-up pass."""
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    best = float("inf")
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        for batch in batches:
            model(batch)
        if attempt:  # the first pass warms caches and lazy compilation up
            best = min(best, time.perf_counter() - start)
    return len(images) / best


def files_size(path: Path) -> int:
    """Bytes on disk of an exported model: the file, and the OpenVINO weights beside an .xml."""
    companions = [path.with_suffix(".bin")] if path.suffix == ".xml" else []
    return sum(p.stat().st_size for p in [path, *companions])


def pytorch_row(run: Path, config, dataset, images: np.ndarray, args, label: str) -> tuple[dict, np.ndarray]:
    """The PyTorch fp32 row of `run` (its model in eval mode; accuracy on `dataset` with its eval config) and its
    features of the first batch of `images`."""
    model = load_run_model(run, config).cpu().eval()
    module = feature_module(model, config.eval.feature, config.eval.flip)

    def pytorch(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).numpy()

    metrics = evaluate_model(model, dataset, config.eval, config.data.height, config.data.width, "cpu",
                             progress=False, protocol=resolve_protocol(config),
                             interpolation=config.data.interpolation).metrics
    return ({"format": label, "size": (run / "model.safetensors").stat().st_size,
             "batch1": best_images_per_second(pytorch, images[:args.single], 1, args.repeats),
             "batch64": best_images_per_second(pytorch, images[:args.batches * BATCH], BATCH, args.repeats),
             "max_diff": 0.0, "min_cos": 1.0, "rank1": metrics["rank1"], "mAP": metrics["mAP"]},
            pytorch(images[:BATCH]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--config", default="configs/demo.yaml", help="config to train when --run has no model")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--single", type=int, default=64, help="images timed one at a time (batch 1)")
    parser.add_argument("--batches", type=int, default=4, help="batches of 64 images timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibration-images", type=int, default=128)
    parser.add_argument("--min-cosine", type=float, default=None, help="parity bound of every export (default: "
                        "the format's own)")
    parser.add_argument("--reference-run", type=Path, default=None,
                        help="another run (e.g. the teacher) measured first in PyTorch fp32: the ratios' reference")
    args = parser.parse_args()
    if args.min_cosine is not None and not 0 <= args.min_cosine <= 1:
        parser.error(f"--min-cosine must be in [0, 1], got {args.min_cosine}")
    if args.reference_run and not (args.reference_run / "model.safetensors").is_file():
        parser.error(f"--reference-run {args.reference_run} holds no model.safetensors: name a finished run folder")

    ensure_run(args.run, args.config)
    config = load_run_config(args.run)
    dataset = build_dataset(config.data, progress=False)
    protocol = resolve_protocol(config)
    query_paths = [s[0] for s in dataset.query]
    needed = max(args.single, args.batches * BATCH)
    timing_paths = (query_paths * (needed // len(query_paths) + 1))[:needed]
    images = preprocess_images(timing_paths, config.data.height, config.data.width)
    print(f"{os.cpu_count()} CPUs; torch threads {torch.get_num_threads()}; onnxruntime and OpenVINO use their "
          f"default thread counts; input {config.data.height}×{config.data.width}, feature {config.eval.feature}, "
          f"flip {config.eval.flip}; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    if args.reference_run:
        reference_config = load_run_config(args.reference_run)
        reference_images = preprocess_images(timing_paths, reference_config.data.height, reference_config.data.width)
        rows.append(pytorch_row(args.reference_run, reference_config, dataset, reference_images, args,
                                f"pytorch fp32 ({args.reference_run.name})")[0])
    student_row, reference = pytorch_row(args.run, config, dataset, images, args, "pytorch fp32")
    rows.append(student_row)
    for format in args.formats:
        out = args.run / "exports" / f"model_{format.replace('-', '_')}{SUFFIXES[format]}"
        try:
            export(args.run, format, out, calibration_images=args.calibration_images, min_cosine=args.min_cosine)
        except ReidkitError as error:
            rows.append({"format": format, "skipped": str(error)})
            print(f"{format}: not measured ({error})", flush=True)
            continue
        exported = load_model(out)
        parity = measure_parity(exported(images[:BATCH]), reference)
        metrics = evaluate_exported(out, dataset, config.eval, protocol=protocol, progress=False).metrics
        rows.append({"format": format, "size": files_size(out),
                     "batch1": best_images_per_second(exported, images[:args.single], 1, args.repeats),
                     "batch64": best_images_per_second(exported, images[:args.batches * BATCH], BATCH, args.repeats),
                     "max_diff": parity.max_abs_diff, "min_cos": parity.min_cosine, "rank1": metrics["rank1"],
                     "mAP": metrics["mAP"]})
        print(f"{format}: done", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    (args.run / "exports" / "bench_export.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table, with ratios against the first (PyTorch fp32) row; Δ feature and cosine of
    each exported file against its own run's PyTorch features."""
    base = rows[0]
    lines = ["| format | size (MB) | × size | img/s batch 1 | × | img/s batch 64 | × | max abs Δ feature | min cos "
             "| rank-1 | Δ rank-1 | mAP | Δ mAP |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['format']} | not measured: {row['skipped'].split(';')[0]} |" + " |" * 11)
            continue
        accuracy = ("reference | reference" if row["format"].startswith("pytorch") else
                    f"{row['max_diff']:.1e} | {row['min_cos']:.5f}")
        lines.append(
            f"| {row['format']} | {row['size'] / 1e6:.1f} | {row['size'] / base['size']:.2f} | {row['batch1']:.1f} | "
            f"{row['batch1'] / base['batch1']:.2f} | {row['batch64']:.1f} | {row['batch64'] / base['batch64']:.2f} | "
            f"{accuracy} | {row['rank1']:.2%} | {100 * (row['rank1'] - base['rank1']):+.2f} pt | {row['mAP']:.2%} | "
            f"{100 * (row['mAP'] - base['mAP']):+.2f} pt |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
