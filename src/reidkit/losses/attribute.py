"""Attribute loss: several attribute classifiers trained with the ID loss (multi-task), dropped at test
time (Lin et al., "Improving Person Re-identification by Attribute and Identity Learning", PR 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def attribute_loss(attr_logits: dict[str, Tensor], targets: Tensor) -> Tensor:
    """L = (1/A) Σ_j CE(attr_logits_j, targets[:, j]), each CE a mean over the N samples.

    Args:
        attr_logits: attribute name → logits [N, C_j], in the column order of `targets`.
        targets: class indices [N, A].
    """
    if len(attr_logits) != targets.shape[1]:
        raise ValueError(f"{len(attr_logits)} attribute heads but {targets.shape[1]} target columns")
    losses = [F.cross_entropy(logits, targets[:, j]) for j, logits in enumerate(attr_logits.values())]
    return torch.stack(losses).mean()


class AttributeLoss(nn.Module):
    """`attribute_loss` with identity labels mapped to attribute targets through a fixed table [C, A]."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table.long(), persistent=False)

    def forward(self, attr_logits: dict[str, Tensor], labels: Tensor) -> Tensor:
        return attribute_loss(attr_logits, self.table[labels])
