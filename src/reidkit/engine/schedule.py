"""Learning-rate schedules as pure functions of (step, steps per epoch), so a resumed run recomputes its rate.

Warm-up (Goyal et al., "Accurate, Large Minibatch SGD", 2017) from lr·w over W steps or E epochs, with
progress a = step/W (or epoch/E): linear w + (1 − w)·a, constant w, exponential w^(1 − a) — fast-reid's
WarmupLR methods; by epochs, the rate changes once per epoch (BoT, Luo et al. 2019). Then, with t the epoch
and k = max(0, t − s) the epochs since the schedule started:

- step: lr·γ^(number of milestones ≤ k) (Torchreid's multi_step, fast-reid's MultiStepLR);
- single_step: lr·γ^⌊k / stepsize⌋ (Torchreid's single_step);
- cosine: η + (lr − η)·½(1 + cos(π·k / T)) with η = eta_min_lr (Loshchilov & Hutter, SGDR, ICLR 2017).

The start s is where fast-reid's main scheduler starts counting: its LRScheduler hook steps it at the end of
each epoch once the warm-up steps are done and the delay epochs have passed, so s = max(D, ⌈W/n⌉ − 1) for W
warm-up steps, D delay epochs and n steps per epoch (s = D without step warm-up). BoT's epoch warm-up leaves the
milestones counted from epoch 0; the cosine also starts after an epoch warm-up: s = max(s, E). The cosine
period is T = epochs − max(D, ⌈W/n⌉, E), at least 1 (fast-reid's T_max).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedule:
    """The rate of every step of a run; see the module docstring for the formulas."""

    epochs: int
    scheduler: str = "step"  # "step", "single_step" or "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    stepsize: int = 1
    warmup_epochs: int = 0
    warmup_iters: int = 0
    warmup_method: str = "linear"  # "linear", "constant" or "exp"
    warmup_factor: float = 0.1
    delay_epochs: int = 0
    eta_min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.scheduler not in ("step", "single_step", "cosine"):
            raise ValueError(f"unknown scheduler '{self.scheduler}'; choose step, single_step or cosine")
        if self.warmup_method not in ("linear", "constant", "exp"):
            raise ValueError(f"unknown warm-up method '{self.warmup_method}'; choose linear, constant or exp")

    def warmup(self, progress: float) -> float:
        """The warm-up factor at `progress` in [0, 1) of the warm-up."""
        if self.warmup_method == "constant":
            return self.warmup_factor
        if self.warmup_method == "exp":
            return self.warmup_factor ** (1.0 - progress)
        return self.warmup_factor + (1.0 - self.warmup_factor) * progress

    def learning_rate(self, base_lr: float, step: int, steps_per_epoch: int) -> float:
        """The rate of the 0-based optimiser `step` for a parameter group whose rate without schedule is
        `base_lr`, with `steps_per_epoch` steps in an epoch."""
        epoch = step // steps_per_epoch
        if step < self.warmup_iters:
            return base_lr * self.warmup(step / self.warmup_iters)
        if epoch < self.warmup_epochs:
            return base_lr * self.warmup(epoch / self.warmup_epochs)
        warmup_end = math.ceil(self.warmup_iters / steps_per_epoch)  # epochs the step warm-up reaches into
        start = max(self.delay_epochs, warmup_end - 1 if self.warmup_iters else 0)
        if self.scheduler == "step":
            return base_lr * self.gamma ** bisect.bisect_right(self.milestones, max(0, epoch - start))
        if self.scheduler == "single_step":
            return base_lr * self.gamma ** (max(0, epoch - start) // self.stepsize)
        start = max(start, self.warmup_epochs)
        period = max(1, self.epochs - max(self.delay_epochs, warmup_end, self.warmup_epochs))
        cosine = 0.5 * (1.0 + math.cos(math.pi * max(0, epoch - start) / period))
        return self.eta_min_lr + (base_lr - self.eta_min_lr) * cosine


def schedule_from_config(train) -> Schedule:
    """The `Schedule` of a `reidkit.config.TrainConfig`."""
    return Schedule(epochs=train.epochs, scheduler=train.scheduler, milestones=tuple(sorted(train.milestones)),
                    gamma=train.gamma, stepsize=train.stepsize, warmup_epochs=train.warmup_epochs,
                    warmup_iters=train.warmup_iters, warmup_method=train.warmup_method,
                    warmup_factor=train.warmup_factor, delay_epochs=train.delay_epochs,
                    eta_min_lr=train.eta_min_lr)


def set_learning_rates(optimizer: torch.optim.Optimizer, schedule: Schedule, step: int, steps_per_epoch: int) -> None:
    """Set every parameter group's rate for the 0-based `step` from its "base_lr" (set by
    `reidkit.engine.optim.build_optimizer`)."""
    for group in optimizer.param_groups:
        group["lr"] = schedule.learning_rate(group["base_lr"], step, steps_per_epoch)
