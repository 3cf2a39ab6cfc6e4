"""Side by side with the peers' own engines: fast-reid 1.4.0 and Torchreid 0.2.5 against reidkit, same data, same
budget, same recipe, several seeds.

Run: ``python benchmarks/peers.py [--epochs 12] [--seeds 0 1] [--recipes bot_r18 osnet_torchreid] [--systems peer
reidkit] [--threads 1] [--workers 1] [--out runs/peers] [--set data.KEY=VALUE ...]``. Each (recipe, system, seed)
run writes ``OUT/<recipe>/<system>_seed<S>.json``; finished runs (same budget) are skipped, so an interrupted table
continues where it stopped, and processes given different ``--seeds``, ``--recipes`` or ``--systems`` may share one
``--out``. Writes ``OUT/table.md`` from every finished run.

The data: configs/demo.yaml's synthetic set (300 identities, 6 cameras, 128×64), generated when absent. Recipes:

- ``bot_r18``: ResNet-18 in BoT shape (last stride 1, BNNeck, CE with label smoothing 0.1 + batch-hard triplet
  0.3, P×K 16×4, flip, pad-and-crop, random erasing), fast-reid's Base-bagtricks in its own terms on the demo's
  budget: Adam lr 1e-3, weight decay 5e-4 on every parameter, linear warm-up from 0.1 over a sixth of the
  epochs (2 of 12, at least 1) counted in steps, cosine to 1e-7, bicubic resizing, fast-reid's epoch of
  ⌊images / 64⌋ steps (reidkit: data.epoch_length=images), evaluated on the features before the BNNeck
  (NECK_FEAT before), cosine distance. fast-reid runs as its DefaultTrainer would — its
  build_model, build_optimizer (contiguous parameters), build_lr_scheduler, build_transforms, NaiveIdentitySampler,
  CommDataset and the model's own losses — in a loop that mirrors SimpleTrainer.run_step and its LRScheduler hook
  (DefaultTrainer and its DataLoaderX need CUDA; a plain DataLoader with its batch collator stands in).
- ``osnet_torchreid``: OSNet x0.25 in Torchreid's own recipe: softmax with label smoothing, AMSGrad lr 0.0015
  (betas 0.9, 0.99), weight decay 5e-4, cosine over the run, no warm-up, random flip only, the 512-d FC head,
  evaluated on that 512-d feature with Euclidean distance. Torchreid runs its ImageDataManager (P×K batches: its
  RandomIdentitySampler, 4 per identity, as reidkit's), ImageSoftmaxEngine.train each epoch and its own test
  loaders and metrics. reidkit has no head without a BNNeck: its classifier (bias-free) reads the BNNeck output.

reidkit trains each recipe with `reidkit.engine.trainer` and the matched config (`RECIPES`). Measured per run:

- accuracy: rank-1, mAP, mINP of every system's query/gallery features (each extracted by that system's own
  test pipeline) under one evaluator, reidkit's `evaluate_feature_sets` (the Market-1501 protocol);
- training images/s: batch images over the wall time of the training loops of epochs 2..E (the first epoch
  warms up), every system with ``torch.set_num_threads(--threads)`` and ``--workers`` loader processes; in one
  process the peer and reidkit runs alternate (the peer first for even seeds, reidkit first for odd ones);
  ``--systems peer`` and ``--systems reidkit`` in two processes run them side by side under the same load;
- ranking time: the peer's own distance + ranking code on its features against reidkit's on the same
  features, best of 3.

The peers need, beside the venv: ``pip install --no-deps torchreid==0.2.5 fastreid==1.4.0`` and, for their imports,
``opencv-python-headless gdown tabulate scikit-learn`` (``cython`` builds fast-reid's ranker); `make bench` installs
them. Their shims for Python >= 3.10 live here, not in src/.
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import importlib.util
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from reidkit.config import load_config
from reidkit.data.build import build_dataset
from reidkit.engine.evaluation import evaluate_feature_sets
from reidkit.engine.trainer import TrainingRun

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
BATCH, INSTANCES = 64, 4  # P×K = 16×4 for every system
BOT_LR, BOT_ETA_MIN = 1e-3, 1e-7
OSNET_LR = 0.0015
COMMON = ["eval.baselines=false", "train.device=cpu", "train.log_every=1000000", "eval.feature=features"]
# reidkit's side of each recipe (configs/demo.yaml + these); warm-up steps are filled in from the data
RECIPES = {
    "bot_r18": ["model.backbone=resnet18", "model.last_stride=1", "model.stem_pool=ceil", "data.interpolation=bicubic",
                "data.epoch_length=images", "data.pad=10", "data.flip_prob=0.5", "data.erasing_prob=0.5",
                "data.erasing_fill=pixel_mean", "loss.id.label_smoothing=0.1", "loss.trihard.weight=1.0",
                "loss.trihard.margin=0.3",
                "train.optimizer=adam", f"train.lr={BOT_LR}", "train.weight_decay=0.0005", "train.warmup_epochs=0",
                "train.warmup_factor=0.1", "train.warmup_method=linear", "train.scheduler=cosine",
                f"train.eta_min_lr={BOT_ETA_MIN}", "eval.metric=cosine"],
    "osnet_torchreid": ["model.backbone=osnet_x0_25", "model.embedding_dim=512", "data.interpolation=bilinear",
                        "data.pad=0", "data.flip_prob=0.5", "data.erasing_prob=0", "loss.id.label_smoothing=0.1",
                        "loss.trihard.weight=0", "train.optimizer=adam", "train.amsgrad=true", "train.adam_beta2=0.99",
                        f"train.lr={OSNET_LR}", "train.weight_decay=0.0005", "train.warmup_epochs=0",
                        "train.scheduler=cosine", "eval.metric=euclidean"],
}
PEER = {"bot_r18": "fast-reid", "osnet_torchreid": "Torchreid"}


def warmup_epochs(epochs: int) -> int:
    """BoT's warm-up on the demo's budget: 2 of 12 epochs, at least 1."""
    return max(1, round(epochs / 6))


def metric_of(recipe: str) -> str:
    return "cosine" if recipe == "bot_r18" else "euclidean"


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def best_seconds(function, repeats: int = 3) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


# ---- fast-reid -------------------------------------------------------------------------------------------------
def import_fastreid() -> None:
    """fast-reid 1.4.0 on Python >= 3.10, torch 2 and numpy >= 1.24: `torch._six` (only string_classes is used)
    and `collections.Mapping` are gone; `np.bool` is back in numpy 2 (set only where it is missing)."""
    if "torch._six" not in sys.modules:
        six = types.ModuleType("torch._six")
        six.string_classes = (str, bytes)
        sys.modules["torch._six"] = six
    collections.Mapping = collections.abc.Mapping
    if not hasattr(np, "bool"):
        np.bool = np.bool_


def use_fastreid_cython(folder: Path) -> str:
    """Build the Cython ranker the fastreid wheel ships as source (`bench_eval.build_fastreid_cython`) and hand it
    to fast-reid's `evaluation.rank` as its own `rank_cylib.rank_cy`; returns "Cython" or why it is Python."""
    from bench_eval import build_fastreid_cython

    built = build_fastreid_cython(folder)
    if isinstance(built, str):
        return f"Python ({built})"
    spec = importlib.util.spec_from_file_location("rank_cy", built)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["fastreid.evaluation.rank_cylib.rank_cy"] = module
    return "Cython"


def fastreid_config(num_classes: int, epochs: int, warmup_iters: int, workers: int, height: int, width: int):
    from fastreid.config import get_cfg

    cfg = get_cfg()  # configs/Base-bagtricks.yml with a ResNet-18 trunk from random init on the demo's budget
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.update(NAME="build_resnet_backbone", NORM="BN", DEPTH="18x", LAST_STRIDE=1, FEAT_DIM=512,
                              WITH_IBN=False, PRETRAIN=False)
    cfg.MODEL.HEADS.update(NAME="EmbeddingHead", NORM="BN", WITH_BNNECK=True, POOL_LAYER="GlobalAvgPool",
                           NECK_FEAT="before", CLS_LAYER="Linear", NUM_CLASSES=num_classes)
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "TripletLoss")
    cfg.MODEL.LOSSES.CE.update(EPSILON=0.1, SCALE=1.0)
    cfg.MODEL.LOSSES.TRI.update(MARGIN=0.3, HARD_MINING=True, NORM_FEAT=False, SCALE=1.0)
    cfg.INPUT.SIZE_TRAIN = cfg.INPUT.SIZE_TEST = [height, width]
    cfg.INPUT.REA.update(ENABLED=True, PROB=0.5)
    cfg.INPUT.FLIP.ENABLED = cfg.INPUT.PADDING.ENABLED = True
    cfg.DATALOADER.update(SAMPLER_TRAIN="NaiveIdentitySampler", NUM_INSTANCE=INSTANCES, NUM_WORKERS=workers)
    cfg.SOLVER.AMP.ENABLED = False
    cfg.SOLVER.update(OPT="Adam", MAX_EPOCH=epochs, BASE_LR=BOT_LR, WEIGHT_DECAY=5e-4, WEIGHT_DECAY_NORM=5e-4,
                      WEIGHT_DECAY_BIAS=5e-4, BIAS_LR_FACTOR=1.0, IMS_PER_BATCH=BATCH, SCHED="CosineAnnealingLR",
                      ETA_MIN_LR=BOT_ETA_MIN, WARMUP_FACTOR=0.1, WARMUP_ITERS=warmup_iters, WARMUP_METHOD="linear")
    cfg.TEST.update(METRIC="cosine", IMS_PER_BATCH=128)
    return cfg


def run_fastreid(dataset, epochs: int, seed: int, workers: int, height: int, width: int) -> dict:
    """fast-reid's BoT, as DefaultTrainer.train runs it on one device (see the module docstring)."""
    import_fastreid()
    from fastreid.data.build import fast_batch_collator
    from fastreid.data.common import CommDataset
    from fastreid.data.samplers import NaiveIdentitySampler
    from fastreid.data.transforms import build_transforms
    from fastreid.evaluation.rank import evaluate_rank as fastreid_rank
    from fastreid.modeling.meta_arch import build_model
    from fastreid.solver import build_lr_scheduler, build_optimizer
    from fastreid.utils.compute_dist import build_dist
    from fastreid.utils.events import EventStorage

    seed_all(seed)
    iters_per_epoch = len(dataset.train) // BATCH  # DefaultTrainer's
    cfg = fastreid_config(dataset.num_train_pids, epochs, warmup_epochs(epochs) * iters_per_epoch, workers, height,
                          width)
    train_set = CommDataset(list(dataset.train), build_transforms(cfg, is_train=True), relabel=True)
    sampler = NaiveIdentitySampler(train_set.img_items, BATCH, INSTANCES, seed=seed)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=torch.utils.data.BatchSampler(sampler, BATCH, True),
                                         num_workers=workers, collate_fn=fast_batch_collator)
    model = build_model(cfg)
    optimizer, param_wrapper = build_optimizer(cfg, model)
    schedulers = build_lr_scheduler(cfg, optimizer, iters_per_epoch)
    model.train()
    batches, loop_seconds = iter(loader), []
    with EventStorage(0) as storage:  # TrainerBase.train
        for epoch in range(epochs):
            storage.epoch = epoch
            start = time.perf_counter()
            for _ in range(iters_per_epoch):
                iteration = storage.iter
                loss_dict = model(next(batches))  # SimpleTrainer.run_step
                losses = sum(loss_dict.values())
                # torch 1.13's default (fast-reid pins it): torch 2's zero_grad(set_to_none=True) drops the gradient
                # of ContiguousParams' buffer, and then the optimiser never updates a parameter
                optimizer.zero_grad(set_to_none=False)
                losses.backward()
                values = {name: value.detach().cpu().item() for name, value in loss_dict.items()}  # _write_metrics
                if not np.isfinite(sum(values.values())):
                    raise FloatingPointError(f"fast-reid: the loss became infinite or NaN at step {iteration}")
                storage.put_scalars(total_loss=sum(values.values()), **values)
                optimizer.step()
                param_wrapper.assert_buffer_is_valid()
                if iteration + 1 <= cfg.SOLVER.WARMUP_ITERS:  # LRScheduler.after_step
                    schedulers["warmup_sched"].step()
                storage.iter = iteration + 1
            if storage.iter + 1 > cfg.SOLVER.WARMUP_ITERS and epoch + 1 > cfg.SOLVER.DELAY_EPOCHS:  # after_epoch
                schedulers["lr_sched"].step()
            loop_seconds.append(time.perf_counter() - start)
    model.eval()
    test_set = CommDataset(list(dataset.query) + list(dataset.gallery), build_transforms(cfg, is_train=False),
                           relabel=False)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=cfg.TEST.IMS_PER_BATCH, num_workers=workers,
                                              collate_fn=fast_batch_collator)
    with torch.no_grad():
        features = torch.cat([model(batch).cpu() for batch in test_loader])
    query, gallery = features[:len(dataset.query)], features[len(dataset.query):]
    labels = labels_of(dataset)

    def own_ranking():  # ReidEvaluator.evaluate: its distance and its ranking (Cython when built)
        return fastreid_rank(build_dist(query, gallery, cfg.TEST.METRIC), *labels)

    return {"features": (query, gallery), "loop_seconds": loop_seconds, "steps_per_epoch": iters_per_epoch,
            "own_ranking": own_ranking}


# ---- Torchreid -------------------------------------------------------------------------------------------------
def run_torchreid(dataset, data_root: str, epochs: int, seed: int, workers: int, height: int, width: int) -> dict:
    """Torchreid's OSNet softmax recipe through its ImageDataManager and ImageSoftmaxEngine."""
    import torchreid

    train = [(path, pid, camid, 0) for path, pid, camid in dataset.train]
    query = [(path, pid, camid, 0) for path, pid, camid in dataset.query]
    gallery = [(path, pid, camid, 0) for path, pid, camid in dataset.gallery]

    class SyntheticSet(torchreid.data.ImageDataset):
        def __init__(self, root="", **kwargs):
            super().__init__(train, query, gallery, **kwargs)

    name = f"reidkit_synthetic_seed{seed}"  # Torchreid refuses a name registered before (another seed's run)
    torchreid.data.register_image_dataset(name, SyntheticSet)
    torchreid.utils.set_random_seed(seed)
    manager = torchreid.data.ImageDataManager(
        root=data_root, sources=name, height=height, width=width, transforms=["random_flip"],
        batch_size_train=BATCH, batch_size_test=128, workers=workers, num_instances=INSTANCES,
        train_sampler="RandomIdentitySampler", use_gpu=False)
    model = torchreid.models.build_model("osnet_x0_25", num_classes=manager.num_train_pids, loss="softmax",
                                         pretrained=False, use_gpu=False)
    optimizer = torchreid.optim.build_optimizer(model, optim="amsgrad", lr=OSNET_LR)
    scheduler = torchreid.optim.build_lr_scheduler(optimizer, lr_scheduler="cosine", max_epoch=epochs)
    engine = torchreid.engine.ImageSoftmaxEngine(manager, model, optimizer=optimizer, scheduler=scheduler,
                                                 use_gpu=False, label_smooth=True)
    engine.max_epoch, loop_seconds = epochs, []
    for epoch in range(epochs):  # Engine.run without its evaluation and checkpoints
        engine.epoch = epoch
        start = time.perf_counter()
        engine.train(print_freq=10**9)
        loop_seconds.append(time.perf_counter() - start)
    engine.set_model_mode("eval")
    loaders = manager.test_loader[name]
    with torch.no_grad():  # Engine._evaluate's feature extraction
        query_features, gallery_features = (
            torch.cat([engine.extract_features(engine.parse_data_for_eval(data)[0]).cpu() for data in loaders[split]])
            for split in ("query", "gallery"))
    labels = labels_of(dataset)

    def own_ranking():  # Engine._evaluate: its distance matrix and its evaluate_rank (Cython when compiled)
        distances = torchreid.metrics.compute_distance_matrix(query_features, gallery_features, "euclidean")
        return torchreid.metrics.evaluate_rank(distances.numpy(), *labels, use_metric_cuhk03=False)

    return {"features": (query_features, gallery_features), "loop_seconds": loop_seconds,
            "steps_per_epoch": len(manager.train_loader), "own_ranking": own_ranking}


# ---- reidkit ---------------------------------------------------------------------------------------------------
def run_reidkit(overrides: list[str], run_dir: Path) -> dict:
    """`reidkit.engine.trainer.TrainingRun` epoch by epoch; the loop time of an epoch ends at its log line."""
    config = load_config(DEMO, overrides)
    ends = []

    def log(line: str) -> None:
        if line.startswith("epoch "):
            ends.append(time.perf_counter())

    run = TrainingRun(config, run_dir, torch.device("cpu"), False, log, False, False)
    starts = []
    while run.position.epoch <= config.train.epochs:
        starts.append(time.perf_counter())
        run.train_epoch()
    evaluation = run.final[0]
    return {"features": (evaluation.query_features, evaluation.gallery_features),
            "loop_seconds": [end - start for start, end in zip(starts, ends)], "steps_per_epoch": len(run.loader),
            "own_ranking": None}


def labels_of(dataset) -> tuple[np.ndarray, ...]:
    """(q_pids, g_pids, q_camids, g_camids)."""
    return tuple(np.array([sample[i] for sample in samples]) for i, samples in (
        (1, dataset.query), (1, dataset.gallery), (2, dataset.query), (2, dataset.gallery)))


def measure(outcome: dict, dataset, metric: str) -> dict:
    """Accuracy under reidkit's evaluator, training images/s and ranking times of one finished run."""
    query, gallery = (features.float() for features in outcome["features"])
    metrics = evaluate_feature_sets(query, gallery, dataset.query, dataset.gallery, metric)
    later = outcome["loop_seconds"][1:] or outcome["loop_seconds"]
    result = {"rank1": metrics["rank1"], "mAP": metrics["mAP"], "mINP": metrics["mINP"],
              "train_img_per_s": len(later) * outcome["steps_per_epoch"] * BATCH / sum(later),
              "loop_seconds": outcome["loop_seconds"], "steps_per_epoch": outcome["steps_per_epoch"],
              "reidkit_ranking_s": best_seconds(lambda: evaluate_feature_sets(query, gallery, dataset.query,
                                                                              dataset.gallery, metric))}
    if outcome["own_ranking"] is not None:
        result["own_ranking_s"] = best_seconds(outcome["own_ranking"])
    return result


def run_one(recipe: str, which: str, seed: int, args, dataset, demo, budget: dict) -> None:
    system = "reidkit" if which == "reidkit" else PEER[recipe]
    path = args.out / recipe / f"{system}_seed{seed}.json"
    if path.is_file() and json.loads(path.read_text()).get("budget") == budget:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"{recipe} {system} seed {seed}: training", flush=True)
    height, width, data_root = demo.data.height, demo.data.width, demo.data.root
    if system == "reidkit":
        warmup = [f"train.warmup_iters={warmup_epochs(args.epochs) * (len(dataset.train) // BATCH)}"] \
            if recipe == "bot_r18" else []
        overrides = [*RECIPES[recipe], *COMMON, *warmup, f"train.epochs={args.epochs}", f"train.seed={seed}",
                     f"train.eval_every={args.epochs}", f"train.checkpoint_every={args.epochs}",
                     f"data.workers={args.workers}", *args.set]
        run_dir = path.with_suffix("")
        if run_dir.exists():
            shutil.rmtree(run_dir)
        outcome = run_reidkit(overrides, run_dir)
    elif recipe == "bot_r18":
        outcome = run_fastreid(dataset, args.epochs, seed, args.workers, height, width)
    else:
        outcome = run_torchreid(dataset, data_root, args.epochs, seed, args.workers, height, width)
    result = {"budget": budget, "recipe": recipe, "system": system, "seed": seed,
              "own_ranker": {"fast-reid": getattr(args, "fastreid_ranker", ""), "Torchreid": "Python"}.get(system, ""),
              **measure(outcome, dataset, metric_of(recipe))}
    path.write_text(json.dumps(result, indent=1))
    print(f"{recipe} {system} seed {seed}: rank-1 {100 * result['rank1']:.1f} mAP {100 * result['mAP']:.1f} "
          f"{result['train_img_per_s']:.1f} img/s", flush=True)


def spread(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """mean (min–max) of `values` × scale."""
    values = [scale * value for value in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def format_table(out: Path) -> str:
    """The table of every finished run under `out`, one row per (recipe, system)."""
    lines = ["| recipe | system | seeds | rank-1 % | mAP % | mINP % | train img/s (× peer) | ranking s: own / "
             "reidkit's on its features (×) |", "|---|---|---|---|---|---|---|---|"]
    for recipe in RECIPES:
        runs = {system: [json.loads(p.read_text()) for p in sorted((out / recipe).glob(f"{system}_seed*.json"))]
                for system in (PEER[recipe], "reidkit")}
        if not all(runs.values()):
            continue
        peer_speed = statistics.mean(run["train_img_per_s"] for run in runs[PEER[recipe]])
        for system, rows in runs.items():
            speed = statistics.mean(run["train_img_per_s"] for run in rows)
            ours = statistics.median(run["reidkit_ranking_s"] for run in rows)
            if system == "reidkit":
                ranking = f"{ours:.3f}"
            else:
                own = statistics.median(run["own_ranking_s"] for run in rows)
                ranking = f"{own:.3f} / {ours:.3f} ({own / ours:.0f}×)"
            lines.append(f"| {recipe} | {system} | {','.join(str(run['seed']) for run in rows)} | "
                         f"{spread([run['rank1'] for run in rows])} | {spread([run['mAP'] for run in rows])} | "
                         f"{spread([run['mINP'] for run in rows])} | {speed:.1f} ({speed / peer_speed:.2f}×) | "
                         f"{ranking} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--systems", nargs="+", choices=["peer", "reidkit"], default=["peer", "reidkit"],
                        help="train only these (e.g. one process per system, sharing --out)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every system")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers for every system")
    parser.add_argument("--out", type=Path, default=Path("runs/peers"))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="data.* overrides of configs/demo.yaml for every system (e.g. a smaller set for a check)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    demo = load_config(DEMO, args.set)
    dataset = build_dataset(demo.data, progress=False)
    budget = {"epochs": args.epochs, "threads": args.threads, "workers": args.workers, "set": args.set}
    if "bot_r18" in args.recipes and "peer" in args.systems:
        with tempfile.TemporaryDirectory() as folder:
            args.fastreid_ranker = use_fastreid_cython(Path(folder))
    for recipe in args.recipes:
        for seed in args.seeds:
            order = ["peer", "reidkit"] if seed % 2 == 0 else ["reidkit", "peer"]
            for system in (system for system in order if system in args.systems):
                run_one(recipe, system, seed, args, dataset, demo, budget)
    table = format_table(args.out)
    (args.out / "table.md").write_text(f"Budget: {json.dumps(budget)}.\n\n{table}")
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
