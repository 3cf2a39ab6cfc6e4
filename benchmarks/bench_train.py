"""Training throughput in one run, each row against the bare model step measured in the same run.

Rows: the bare step (model forward, the config's loss terms, backward, fused optimiser step on random
tensors already on the device, channels-last as the trainer runs it: no trainer, the 1.0 reference); the same
step in the contiguous NCHW layout (what the trainer ran on a CPU before 2026-12-07); `Trainer.run_step` on the
same tensors;
the full pipeline from decoded images augmented on the device (`data.cache`, as the trainer picks it);
the full pipeline with PIL workers (`data.cache=none`) for each worker count. Loader rows also give the
share of wall time spent waiting for the next batch.

Run: ``python benchmarks/bench_train.py [--config configs/demo.yaml] [--steps 30] [--workers 0 1 2]
[overrides]``. The data set of the config is generated if absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from reidkit.config import load_config
from reidkit.data.build import build_dataset
from reidkit.data.cache import choose_cache
from reidkit.devices import autocast_context, resolve_device, uses_amp
from reidkit.engine.optim import build_optimizer
from reidkit.engine.trainer import Trainer, seed_everything
from reidkit.engine.training_data import training_batches
from reidkit.losses.objective import build_objective
from reidkit.models.reid import build_model, model_kwargs

WARMUP_STEPS = 3


def _parts(config, num_classes: int, device: torch.device, layout=torch.channels_last):
    model = build_model(num_classes=num_classes, **model_kwargs(config.model, config.data)).to(device)
    model = model.to(memory_format=layout)  # by default channels-last, as the trainer keeps it
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    objective = build_objective(config.loss, num_classes, model.feat_dim).to(device)
    model.freeze_unused(objective.input_keys.values())
    optimizer = build_optimizer(model, objective, config.train)
    return model, objective, optimizer


def _random_batch(config, device: torch.device, layout=torch.channels_last) -> dict:
    images = torch.randn(config.data.p * config.data.k, 3, config.data.height, config.data.width, device=device)
    images = images.contiguous(memory_format=layout)
    return {"images": images, "pids": torch.arange(config.data.p, device=device).repeat_interleave(config.data.k)}


def _timed(step, steps: int, device: torch.device, batch_size: int) -> float:
    for _ in range(WARMUP_STEPS):
        step()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    return steps * batch_size / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_bare_step(config, num_classes: int, device: torch.device, steps: int,
                   layout=torch.channels_last) -> float:
    """Images/s of forward + loss + backward + fused optimiser step, with nothing around it, model and images in
    `layout` (the trainer's: channels-last)."""
    model, objective, optimizer = _parts(config, num_classes, device, layout)
    batch, amp = _random_batch(config, device, layout), uses_amp(config.train, device)

    def step() -> None:
        with autocast_context(device, amp):
            total, _ = objective(model(batch["images"]), batch["pids"])
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    return _timed(step, steps, device, len(batch["pids"]))


def time_trainer_step(config, num_classes: int, device: torch.device, steps: int) -> float:
    """Images/s of `Trainer.run_step` on the same random tensors."""
    trainer = Trainer(*_parts(config, num_classes, device), device, amp=uses_amp(config.train, device))
    batch = _random_batch(config, device)
    return _timed(lambda: trainer.run_step(batch), steps, device, len(batch["pids"]))


def time_pipeline(config, dataset, device: torch.device, steps: int) -> tuple[float, float, str]:
    """(images/s, share of wall time waiting for the next batch, what loaded them) of the trainer's loader
    and `Trainer.run_step`; the cache is decoded before the clock starts."""
    picked = []
    loader = training_batches(config, dataset, device, progress=False, log=picked.append)
    trainer = Trainer(*_parts(config, dataset.num_train_pids, device), device,
                      amp=uses_amp(config.train, device))
    waited, images, done, epoch = 0.0, 0, -WARMUP_STEPS, 0
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
            if done == 0:
                _synchronize(device)
                waited, images, start = 0.0, 0, time.perf_counter()
            else:
                waited += time.perf_counter() - before
            trainer.run_step(batch)
            images += len(batch["pids"])
            done += 1
    _synchronize(device)
    seconds = time.perf_counter() - start
    return images / seconds, waited / seconds, picked[0].removeprefix("training images: ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="PIL worker counts to time")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.device=cuda")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    seed_everything(0)
    device = resolve_device(config.train.device)
    dataset = build_dataset(config.data, progress=False)
    classes = dataset.num_train_pids
    terms = "+".join(f.name for f in dataclasses.fields(config.loss) if getattr(config.loss, f.name).weight > 0)
    amp = "bf16 autocast" if uses_amp(config.train, device) else "fp32"
    print(f"training step: {config.model.backbone} {config.data.height}×{config.data.width}, batch "
          f"{config.data.p}×{config.data.k}, {terms}, {config.train.optimizer} (fused), {device}, {amp}, "
          f"{torch.get_num_threads()} torch threads, {args.steps} timed steps after {WARMUP_STEPS}")
    reference = time_bare_step(config, classes, device, args.steps)
    rows = [("bare model step (ref.)", reference, None),
            ("bare step, NCHW layout", time_bare_step(config, classes, device, args.steps, torch.contiguous_format),
             None),
            ("Trainer.run_step, random", time_trainer_step(config, classes, device, args.steps), None)]
    mode, _ = choose_cache(config.data.cache, len(dataset.train), config.data.height, config.data.width, device)
    speed, wait, picked = time_pipeline(config, dataset, device, args.steps)
    rows.append((f"pipeline, cache in {mode}", speed, wait))
    for workers in args.workers:
        pil = dataclasses.replace(config, data=dataclasses.replace(config.data, cache="none", workers=workers))
        speed, wait, _ = time_pipeline(pil, dataset, device, args.steps)
        rows.append((f"pipeline, PIL {workers} workers", speed, wait))
    print(f"cache: {picked}")
    print(f"| {'what':<28} | {'img/s':>8} | {'× bare step':>11} | {'data wait':>9} |")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 13}|{'-' * 11}|")
    for name, speed, wait in rows:
        print(f"| {name:<28} | {speed:8.1f} | {speed / reference:11.2f} | "
              f"{'-' if wait is None else f'{wait:.1%}':>9} |")


if __name__ == "__main__":
    main()
