"""The optimiser: parameter groups as fast-reid and BoT build them, fused Adam (with AMSGrad) or SGD (with
Nesterov momentum), and fast-reid's backbone freeze for the first steps.

Groups (fast-reid's `get_default_optimizer_params`): a parameter named "bias" learns at lr × bias_lr_factor
with weight decay weight_decay_bias; another parameter of a normalisation layer decays by weight_decay_norm;
every parameter outside the model's `backbone` (necks, classifiers, the loss terms' own parameters) learns at
lr × heads_lr_factor. The learning-rate schedule is `reidkit.engine.schedule`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# fast-reid's list of normalisation layers (its weight_decay_norm applies to their weights and biases)
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm,
               nn.LocalResponseNorm)


def parameter_groups(model: nn.Module, objective: nn.Module | None, train) -> list[dict]:
    """The trainable parameters of `model` and `objective`, each once, in groups of equal rate and decay.

    Args:
        model: a network; the parameters under its `backbone` attribute (if any) are the backbone.
        objective: the loss terms (their parameters, such as class weights or centres, are heads), or None.
        train: a `reidkit.config.TrainConfig` (lr, weight_decay and the factors named in the module docstring).

    Returns:
        Dicts with "params", "lr" (= "base_lr", the rate before the schedule), "weight_decay" and "backbone"
        (whether the group belongs to the backbone, which `BackboneFreeze` freezes), in the order of first use.
    """
    backbone = getattr(model, "backbone", None)
    backbone_ids = {id(p) for p in backbone.parameters()} if isinstance(backbone, nn.Module) else set()
    decay_bias = train.weight_decay if train.weight_decay_bias is None else train.weight_decay_bias
    decay_norm = train.weight_decay if train.weight_decay_norm is None else train.weight_decay_norm
    groups: dict[tuple, dict] = {}
    seen: set[int] = set()
    for module in (m for owner in (model, objective) if owner is not None for m in owner.modules()):
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            in_backbone = id(parameter) in backbone_ids
            lr = train.lr * (1.0 if in_backbone else train.heads_lr_factor)
            decay = decay_norm if isinstance(module, NORM_LAYERS) else train.weight_decay
            if name == "bias":
                lr, decay = lr * train.bias_lr_factor, decay_bias
            key = (lr, decay, in_backbone)
            groups.setdefault(key, {"params": [], "lr": lr, "base_lr": lr, "weight_decay": decay,
                                    "backbone": in_backbone})["params"].append(parameter)
    return list(groups.values())


def build_optimizer(model: nn.Module, objective: nn.Module | None, train) -> torch.optim.Optimizer:
    """Fused Adam or SGD over `parameter_groups(model, objective, train)`, as `train` (a TrainConfig) says.

    Fused: one kernel for all parameters, and a step skipped on the device when the trainer sets `found_inf`.
    """
    groups = parameter_groups(model, objective, train)
    if train.optimizer == "adam":
        return torch.optim.Adam(groups, lr=train.lr, betas=(train.adam_beta1, train.adam_beta2), eps=train.adam_eps,
                                amsgrad=train.amsgrad, fused=True)
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum, nesterov=train.nesterov, fused=True)
    raise ValueError(f"unknown optimizer '{train.optimizer}'; choose adam or sgd")


@dataclass
class BackboneFreeze:
    """fast-reid's FREEZE_ITERS with FREEZE_LAYERS [backbone]: during the first `iters` steps the backbone runs
    in eval mode (its BatchNorm layers use and keep their statistics) and its gradients are dropped before the
    optimiser step, so neither its parameters nor its optimiser state change; only the heads train."""

    backbone: nn.Module
    iters: int

    def frozen(self, step: int) -> bool:
        """Whether the 0-based optimiser `step` is inside the freeze."""
        return step < self.iters

    def before_forward(self, step: int) -> None:
        """Eval mode for the backbone while frozen; training mode again at the first step after."""
        if step <= self.iters:
            self.backbone.train(not self.frozen(step))

    def drop_gradients(self, step: int) -> None:
        """Called between backward and the optimiser step."""
        if self.frozen(step):
            for parameter in self.backbone.parameters():
                parameter.grad = None
