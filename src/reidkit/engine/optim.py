"""Optimiser and learning-rate schedule: linear warm-up, then step decay or cosine annealing.

Warm-up follows the BoT recipe (Luo et al. 2019): the rate grows linearly from lr·warmup_factor to lr over
the first epochs. The schedule is a factor per epoch, applied with `torch.optim.lr_scheduler.LambdaLR`.
"""

from __future__ import annotations

import bisect
import functools
import math

import torch
from torch import nn


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """Fused Adam or SGD (with momentum) over the trainable parameters of `model`, each once (a head shared
    by the model and a loss term, like the verification pair head, appears once)."""
    params = [p for p in model.parameters() if p.requires_grad]  # nn.Module.parameters() deduplicates
    # fused: one kernel for all parameters, and a step skipped on the device when `found_inf` is set
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, fused=True)
    raise ValueError(f"unknown optimizer '{name}'; choose adam or sgd")


def lr_factor(epoch: int, epochs: int, warmup_epochs: int, warmup_factor: float, scheduler: str,
              milestones: list[int], gamma: float) -> float:
    """Multiplier of the base rate for a 0-based `epoch`.

    warm-up: factor = w + (1 − w)·epoch/warmup_epochs while epoch < warmup_epochs;
    step: gamma^(number of milestones ≤ epoch); cosine: ½(1 + cos(π·t)), t the fraction of the
    epochs after warm-up that have passed.
    """
    if epoch < warmup_epochs:
        return warmup_factor + (1.0 - warmup_factor) * epoch / warmup_epochs
    if scheduler == "step":
        return gamma ** bisect.bisect_right(sorted(milestones), epoch)
    if scheduler == "cosine":
        progress = (epoch - warmup_epochs) / max(1, epochs - warmup_epochs)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown scheduler '{scheduler}'; choose step or cosine")


def build_scheduler(optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: int, warmup_factor: float,
                    scheduler: str, milestones: list[int], gamma: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per epoch with the factors of `lr_factor`."""
    lr_factor(0, epochs, warmup_epochs, warmup_factor, scheduler, milestones, gamma)  # fail early on a bad name
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        lr_factor, epochs=epochs, warmup_epochs=warmup_epochs, warmup_factor=warmup_factor,
        scheduler=scheduler, milestones=milestones, gamma=gamma))
