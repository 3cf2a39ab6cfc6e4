"""Verification loss: a Siamese pair head classifies two images' features as same/different identity
(the lecture's 验证损失; Zheng et al., "A Discriminatively Learned CNN Embedding for Person
Re-identification", TOMM 2017, train it beside the ID loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def balanced_pairs(labels: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Every positive pair i<j of the batch plus as many negative pairs drawn at random.

    Returns:
        (first [M], second [M], same [M] bool); fewer negatives when the batch has fewer.
    """
    same = labels[:, None] == labels[None, :]
    upper = torch.triu(torch.ones_like(same), diagonal=1)
    positives = torch.nonzero(same & upper)
    negatives = torch.nonzero(~same & upper)
    order = torch.randperm(len(negatives), generator=generator, device="cpu")[: len(positives)]
    negatives = negatives[order.to(negatives.device)]
    pairs = torch.cat([positives, negatives])
    is_same = torch.cat([torch.ones(len(positives), dtype=torch.bool), torch.zeros(len(negatives), dtype=torch.bool)])
    return pairs[:, 0], pairs[:, 1], is_same.to(labels.device)


class VerificationLoss(nn.Module):
    """L = mean over balanced pairs (i, j) of CE(head(f_i, f_j), [y_i = y_j]).

    The head is the model's pair head (`ReidModel.pair_head`), shared so that it is saved with the model
    and scores pairs at test time. Returns 0 connected to the graph when the batch has no positive pair.
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        first, second, same = balanced_pairs(labels)
        if len(first) == 0:
            return features.sum() * 0.0
        return F.cross_entropy(self.head(features[first], features[second]), same.long())
