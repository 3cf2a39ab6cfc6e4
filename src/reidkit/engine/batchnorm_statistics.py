"""BatchNorm statistics re-estimated on other images (AdaBN: Li et al., "Adaptive Batch Normalization for
Practical Domain Adaptation", Pattern Recognition 2018): the running mean and variance of every BatchNorm layer
replaced by those of its inputs on a target domain's images, weights untouched."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from reidkit.devices import autocast_context


def reestimate_batchnorm(model: nn.Module, batches: Iterable[dict], device: torch.device, amp: bool = False) -> int:
    """Replace the running statistics of every BatchNorm layer of `model` by those of `batches`.

    Each layer's running mean becomes the average over the batches of the batch mean of its input, and its
    running variance the average of the batch's unbiased variance (PyTorch's cumulative average,
    ``momentum=None``), from one training-mode forward pass per batch without gradients; layers' momenta and
    the model's mode are restored afterwards. `batches`: dicts with ``"images"`` (and ``"camids"`` for a model
    with a camera embedding), as a test loader yields them.

    Returns:
        The number of BatchNorm layers re-estimated (0: the model has none and is left unchanged).
    """
    layers = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    model.train()
    try:
        with torch.no_grad(), autocast_context(device, amp):
            for batch in batches:
                camids = (batch["camids"].to(device),) if getattr(model, "uses_camids", False) and "camids" in batch \
                    else ()
                model(batch["images"].to(device), *camids)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)
    return len(layers)
