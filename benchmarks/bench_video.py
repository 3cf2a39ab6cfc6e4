"""Gain of temporal aggregation over single frames on the synthetic tracklets (docs/video.md).

For each seed: train with temporal average pooling and with learned temporal attention (4 frames per training
tracklet), evaluate each on every frame of the test tracklets, and the average-pooling model also on one frame
per tracklet (query and gallery: `eval.frame_sampling=evenly data.seq_len=1`, the first frame). Prints a
markdown table of rank-1 / mAP per variant and seed and their means.

    python benchmarks/bench_video.py --out /tmp/video_bench --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SMALL = ["data.dataset=synthetic_video", "data.height=64", "data.width=32", "data.p=6", "data.k=2",
         "data.synthetic_identities=60", "data.synthetic_cameras=6", "train.epochs=8", "train.eval_every=8",
         "train.warmup_epochs=1", "eval.ranked_queries=0"]


def reidkit(command: str, *arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "reidkit", command, "--quiet", *arguments], check=True)


def metrics(folder: Path) -> tuple[float, float]:
    values = json.loads((folder / "metrics.json").read_text())
    return values["rank1"], values["mAP"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--config", default="configs/video_demo.yaml")
    args = parser.parse_args()
    rows: dict[str, list[tuple[float, float]]] = {}
    started = time.perf_counter()
    for seed in args.seeds:
        for temporal in ("avg", "attention"):
            run = args.out / f"{temporal}_seed{seed}"
            reidkit("train", "--config", args.config, "--out", str(run), f"data.root={args.out / 'data'}",
                    f"train.seed={seed}", f"model.temporal={temporal}", *SMALL)
            rows.setdefault(f"temporal {temporal}, all frames", []).append(metrics(run))
            if temporal == "avg":
                single = run / "single_frame"
                reidkit("eval", "--run", str(run), "--out", str(single), "eval.frame_sampling=evenly",
                        "data.seq_len=1")
                rows.setdefault("single frame (first of each tracklet)", []).append(metrics(single))
    print(f"| variant | {' | '.join(f'seed {s} rank-1 / mAP' for s in args.seeds)} | mean rank-1 / mAP |")
    print("|---" * (len(args.seeds) + 2) + "|")
    for name, values in rows.items():
        cells = " | ".join(f"{r:.1%} / {m:.1%}" for r, m in values)
        mean_r, mean_m = (sum(v[i] for v in values) / len(values) for i in (0, 1))
        print(f"| {name} | {cells} | {mean_r:.1%} / {mean_m:.1%} |")
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
