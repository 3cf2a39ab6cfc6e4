"""Training throughput: images/s of the real trainer step with real data loading, the share of step time
spent waiting for data, and the same step on random tensors (the reference, measured in the same run).

Run: ``python benchmarks/bench_train.py [--config configs/demo.yaml] [--steps 30] [--workers 0 1 2]``.
The data set of the config is generated if absent. Goal: data waiting ≤ 10 % of the step time.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from reidkit.config import load_config
from reidkit.data.build import build_dataset
from reidkit.data.loading import build_train_loader
from reidkit.data.transforms import build_train_transform
from reidkit.engine.trainer import Trainer, resolve_device, seed_everything
from reidkit.engine.optim import build_optimizer
from reidkit.losses.objective import build_objective
from reidkit.models.reid import build_model, model_kwargs

GOAL_WAIT_SHARE = 0.10


def _trainer(config, num_classes: int, device: torch.device) -> Trainer:
    model = build_model(num_classes=num_classes, **model_kwargs(config.model)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    objective = build_objective(config.loss, num_classes, model.feat_dim).to(device)
    optimizer = build_optimizer(nn.ModuleList([model, objective]), config.train.optimizer, config.train.lr,
                                config.train.weight_decay)
    return Trainer(model, objective, optimizer, device, amp=config.train.amp and device.type == "cuda")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_random_tensors(config, num_classes: int, device: torch.device, steps: int) -> float:
    """Images/s of `run_step` on random batches already in memory (no data loading)."""
    trainer = _trainer(config, num_classes, device)
    batch_size = config.data.p * config.data.k
    batch = {"images": torch.randn(batch_size, 3, config.data.height, config.data.width),
             "pids": torch.arange(config.data.p).repeat_interleave(config.data.k)}
    for _ in range(3):
        trainer.run_step(batch)
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.run_step(batch)
    _synchronize(device)
    return steps * batch_size / (time.perf_counter() - start)


def time_real_loading(config, dataset, device: torch.device, steps: int, workers: int) -> tuple[float, float]:
    """(images/s, share of wall time spent waiting for the next batch) with the real loader."""
    data = config.data
    loader = build_train_loader(dataset.train, build_train_transform(data.height, data.width), data.p, data.k,
                                config.train.seed, workers)
    trainer = _trainer(config, dataset.num_train_pids, device)
    waited, images, done, epoch = 0.0, 0, -3, 0  # three warm-up steps are not counted
    start = time.perf_counter()
    while done < steps:
        epoch += 1
        loader.batch_sampler.set_epoch(epoch)
        iterator = iter(loader)
        while done < steps:
            before = time.perf_counter()
            batch = next(iterator, None)
            if batch is None:
                break
            batch.pop("skipped")
            if done == 0:
                _synchronize(device)
                waited, images, start = 0.0, 0, time.perf_counter()
            else:
                waited += time.perf_counter() - before
            trainer.run_step(batch)
            images += len(batch["images"])
            done += 1
    _synchronize(device)
    return images / (time.perf_counter() - start), waited / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.device=cuda")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    seed_everything(0)
    device = resolve_device(config.train.device)
    dataset = build_dataset(config.data, progress=False)
    reference = time_random_tensors(config, dataset.num_train_pids, device, args.steps)
    print(f"training step, {config.model.backbone} {config.data.height}×{config.data.width}, batch "
          f"{config.data.p}×{config.data.k}, {device}, {torch.get_num_threads()} threads, {args.steps} steps")
    print(f"| {'input':<22} | {'img/s':>7} | {'× random tensors':>16} | {'data wait':>9} | goal ≤10% |")
    print(f"|{'-' * 24}|{'-' * 9}|{'-' * 18}|{'-' * 11}|-----------|")
    print(f"| {'random tensors (ref.)':<22} | {reference:7.1f} | {1.0:16.2f} | {'-':>9} | {'-':>9} |")
    for workers in args.workers:
        speed, wait = time_real_loading(config, dataset, device, args.steps, workers)
        print(f"| {f'real data, {workers} workers':<22} | {speed:7.1f} | {speed / reference:16.2f} | "
              f"{wait:9.1%} | {'yes' if wait <= GOAL_WAIT_SHARE else 'no':>9} |")


if __name__ == "__main__":
    main()
