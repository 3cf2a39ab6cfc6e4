"""Where a run computes: device resolution and bfloat16 autocast, shared by training, evaluation, reports and
the service."""

from __future__ import annotations

import contextlib
import os

import torch

from reidkit.errors import ReidkitError


def resolve_device(name: str) -> torch.device:
    """"auto" → CUDA when available, else CPU; anything else is passed to torch.device. Under torchrun,
    "auto" and "cuda" mean this process's GPU, cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ReidkitError(f"train.device={name} but CUDA is not available; use train.device=cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    return device


def uses_amp(train_config, device: torch.device | str) -> bool:
    """Whether `device` runs under bfloat16 autocast: `train.amp` on CUDA; on the CPU with `train.amp_cpu` too."""
    device_type = torch.device(device).type
    return train_config.amp and (device_type == "cuda" or (device_type == "cpu" and train_config.amp_cpu))


def autocast_context(device: torch.device, amp: bool):
    """bfloat16 autocast on `device` (CUDA or CPU) when `amp` is set (see `uses_amp`); a no-op otherwise."""
    if amp and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
