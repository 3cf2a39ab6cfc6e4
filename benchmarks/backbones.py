"""Backbone table: each backbone trained with the same budget and seed on the synthetic set, then measured.

Run: ``python benchmarks/backbones.py --backbones resnet18 osnet_x0_25 resnet50_ibn_a --epochs 6 --seed 0
--out runs/backbones [--set key=value ...]``.

Every backbone is trained in this process with ``reidkit.engine.trainer.train`` from ``configs/demo.yaml``
(ResNet-18's demo budget: 128×64, ID + TriHard, random init, CPU) with ``model.backbone`` changed, into
``OUT/<backbone>/`` (a normal run folder). Then, for each finished run:

- parameters of the network used at test time (trunk, optional embedding layer, BNNeck; not the ID classifier);
- inference speed: img/s of the trained model in eval mode on a fixed batch of 64 random 128×64 images,
  best of 3 timed passes after one warm-up, with the ratio against the first backbone measured in the same run;
- rank-1, mAP, mINP of the run's final evaluation (its metrics.json).

``--recipe BACKBONE=CONFIG`` trains that backbone with its own recipe instead of the demo's: the peer config
(e.g. ``osnet_x0_25=configs/osnet_market.yaml``, Torchreid's OSNet recipe) keeps its optimiser, schedule, losses,
head, augmentation and evaluation settings, and takes the demo's data (synthetic set, 128×64, P×K, loader), random
init (``model.weights=""``), CPU fp32 and this budget; its schedule is compressed into the budget: the epoch
counts (``warmup_epochs``, ``milestones``, ``stepsize``, ``delay_epochs``) by ``--epochs`` / the recipe's epochs,
the step counts (``warmup_iters``, ``freeze_iters``) by the same fraction of the run, taking the recipe's
steps per epoch as Market-1501's (12,936 images / 64 = 202; the recipes are Market-1501 recipes) and the demo
set's as its training images / 64.

Writes ``OUT/results.json`` and ``OUT/table.md``. Finished runs (a metrics.json in their folder, same budget)
are not retrained, so an interrupted table continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from reidkit.config import load_config
from reidkit.data.build import DatasetLoader, build_training_set
from reidkit.engine.saved_runs import load_run_config, load_run_model, read_run_metrics
from reidkit.engine.trainer import train
from reidkit.errors import ReidkitError

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
MARKET_STEPS_PER_EPOCH = 12936 // 64  # the peer recipes' data set: Market-1501's training images at P×K 16×4


def test_time_parameters(model: torch.nn.Module) -> int:
    """Parameters of everything but the ID classifier (what a deployed feature extractor holds)."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("head.classifier"))


def images_per_second(model: torch.nn.Module, height: int, width: int, batch: int = 64, repeats: int = 3) -> float:
    """Best of `repeats` timed eval-mode forwards of one fixed random batch, after one warm-up pass."""
    images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    best = float("inf")
    with torch.inference_mode():
        model(images)
        for _ in range(repeats):
            start = time.perf_counter()
            model(images)
            best = min(best, time.perf_counter() - start)
    return batch / best


def own_recipe_overrides(recipe: Path, epochs: int) -> list[str]:
    """The overrides that train the peer config `recipe` on the demo's data, from random init on the CPU, with
    its schedule compressed from its epochs into `epochs` (see the module docstring)."""
    demo, peer = load_config(DEMO), load_config(recipe)
    data = [f"data.{key}={getattr(demo.data, key)}" for key in
            ("dataset", "root", "height", "width", "p", "k", "workers", "synthetic_identities", "synthetic_cameras",
             "synthetic_seed")]
    share = epochs / peer.train.epochs
    demo_steps = len(build_training_set(demo.data, DatasetLoader(progress=False)).train) // (demo.data.p * demo.data.k)
    step_share = share * demo_steps / MARKET_STEPS_PER_EPOCH
    schedule = peer.train
    milestones = sorted({max(1, round(m * share)) for m in schedule.milestones})
    return [*data, "model.weights=", "train.device=cpu", "train.amp=false", f"train.eval_every={epochs}",
            f"train.warmup_epochs={round(schedule.warmup_epochs * share)}",
            f"train.milestones=[{', '.join(map(str, milestones))}]",
            f"train.stepsize={max(1, round(schedule.stepsize * share))}",
            f"train.delay_epochs={round(schedule.delay_epochs * share)}",
            f"train.warmup_iters={round(schedule.warmup_iters * step_share)}",
            f"train.freeze_iters={round(schedule.freeze_iters * step_share)}"]


def run_backbone(backbone: str, out: Path, budget: list[str], recipe: Path | None = None,
                 fitted: Sequence[str] = ()) -> dict:
    """Train `backbone` into ``out/<backbone>`` (unless finished with this budget) and measure it: from the demo
    config, or from the peer config `recipe` with `fitted`, its overrides for the demo's data and budget
    (`own_recipe_overrides`)."""
    run_dir = out / backbone.replace("/", "_")
    overrides = [*fitted, *budget, f"model.backbone={backbone}"]
    finished = (run_dir / "metrics.json").is_file() and (run_dir / "budget.json").is_file() \
        and json.loads((run_dir / "budget.json").read_text()) == overrides
    seconds = None
    if not finished:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        start = time.perf_counter()
        train(load_config(recipe or DEMO, overrides), run_dir, progress=False, log=lambda *a: None)
        seconds = round(time.perf_counter() - start, 1)
        (run_dir / "budget.json").write_text(json.dumps(overrides))
        (run_dir / "seconds.json").write_text(json.dumps(seconds))
    seconds = json.loads((run_dir / "seconds.json").read_text()) if seconds is None else seconds
    config = load_run_config(run_dir)
    model = load_run_model(run_dir, config).cpu()
    metrics = read_run_metrics(run_dir)
    return {"backbone": backbone, "recipe": str(recipe) if recipe else "configs/demo.yaml",
            "parameters": test_time_parameters(model),
            "img_per_s": images_per_second(model, config.data.height, config.data.width),
            "rank1": metrics["rank1"], "mAP": metrics["mAP"], "mINP": metrics["mINP"],
            "train_seconds": seconds, "run_dir": str(run_dir)}


def format_table(rows: list[dict]) -> str:
    """Markdown table; img/s also as a ratio to the first row's (measured in the same process)."""
    reference = rows[0]["img_per_s"]
    lines = ["| backbone | recipe | parameters (M) | img/s (× first) | rank-1 (%) | mAP (%) | mINP (%) "
             "| train time (s) |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['backbone']} | {Path(row['recipe']).stem} | {row['parameters'] / 1e6:.2f} | "
                     f"{row['img_per_s']:.0f} ({row['img_per_s'] / reference:.2f}×) | {100 * row['rank1']:.1f} | {100 * row['mAP']:.1f} | "
                     f"{100 * row['mINP']:.1f} | {row['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "osnet_x0_25", "resnet50_ibn_a"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/backbones"))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides for every run")
    parser.add_argument("--recipe", nargs="*", default=[], metavar="BACKBONE=CONFIG",
                        help="train BACKBONE with the peer config CONFIG fitted to the demo's data and budget")
    args = parser.parse_args(argv)
    if malformed := [item for item in args.recipe if "=" not in item or not Path(item.split("=", 1)[1]).is_file()]:
        parser.error(f"--recipe takes BACKBONE=CONFIG with an existing config file, got {', '.join(malformed)}")
    recipes = dict(item.split("=", 1) for item in args.recipe)
    if unknown := sorted(set(recipes) - set(args.backbones)):
        parser.error(f"--recipe for a backbone not in --backbones: {', '.join(unknown)}")
    budget = [f"train.epochs={args.epochs}", f"train.seed={args.seed}", "eval.baselines=false", *args.set]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for backbone in args.backbones:
            recipe = Path(recipes[backbone]) if backbone in recipes else None
            fitted = own_recipe_overrides(recipe, args.epochs) if recipe else []
            rows.append(run_backbone(backbone, args.out, budget, recipe, fitted))
            print(f"{backbone}: done", flush=True)
    except ReidkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = format_table(rows)
    (args.out / "results.json").write_text(json.dumps({"budget": budget, "runs": rows}, indent=2))
    (args.out / "table.md").write_text(f"Budget: configs/demo.yaml with {', '.join(budget)}.\n\n{table}")
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
