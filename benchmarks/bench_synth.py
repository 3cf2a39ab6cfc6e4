"""Speed of the synthetic data set generator and the colour-histogram baseline on its output.

Run: ``python benchmarks/bench_synth.py [--identities 300] [--cameras 6] [--workers 1 2] [--seed 0]``.
Generates the data set into a fresh temporary folder once per worker count (the files are the same), prints
images/s against the 300 images/s goal (writing the files included), then ranks the query set against the
gallery with colour-histogram descriptors (Market-1501 protocol) to show that clothing colours alone do not
solve the task.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from reidkit.data.datasets import load_market1501
from reidkit.data.synthetic import SyntheticSpec, generate_dataset
from reidkit.engine.baselines import colour_histogram_features
from reidkit.metrics.rank import evaluate_rank

GOAL_IMAGES_PER_SECOND = 300.0


def _colour_histogram_scores(root: str) -> dict:
    dataset = load_market1501(root)
    query_paths, q_pids, q_camids = zip(*dataset.query)
    gallery_paths, g_pids, g_camids = zip(*dataset.gallery)
    query, gallery = colour_histogram_features(query_paths), colour_histogram_features(gallery_paths)
    squared = (query ** 2).sum(1)[:, None] + (gallery ** 2).sum(1)[None, :] - 2.0 * query @ gallery.T
    distances = np.sqrt(np.maximum(squared, 0.0))
    return evaluate_rank(distances, np.array(q_pids), np.array(g_pids), np.array(q_camids), np.array(g_camids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=300)
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="process counts to time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    spec = SyntheticSpec(identities=args.identities, cameras=args.cameras)
    print(f"synthetic data set: {args.identities} identities, {args.cameras} cameras, seed {args.seed}")
    print(f"{'workers':>7} {'images':>7} {'seconds':>8} {'images/s':>9} {'vs goal':>8}")
    with tempfile.TemporaryDirectory() as scratch:
        for workers in args.workers:
            root = f"{scratch}/workers{workers}"
            start = time.perf_counter()
            counts = generate_dataset(root, spec, seed=args.seed, progress=False, workers=workers)
            seconds = time.perf_counter() - start
            images = counts["train"] + counts["query"] + counts["gallery"]
            rate = images / seconds
            print(f"{workers:>7d} {images:>7d} {seconds:>8.2f} {rate:>9.1f} {rate / GOAL_IMAGES_PER_SECOND:>7.2f}x")
        print(f"splits: train {counts['train']}, query {counts['query']}, gallery {counts['gallery']} "
              f"(junk {counts['junk']}, distractors {counts['distractors']})")
        scores = _colour_histogram_scores(root)
    print(f"colour-histogram baseline (HSV 8x8x8, 6 stripes): rank-1 {100 * scores['cmc'][0]:.1f}%  "
          f"rank-5 {100 * scores['cmc'][4]:.1f}%  mAP {100 * scores['mAP']:.1f}%  "
          f"({scores['num_valid_queries']} queries)")


if __name__ == "__main__":
    main()
