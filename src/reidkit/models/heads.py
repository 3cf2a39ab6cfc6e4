"""Pooling and the BNNeck head.

GeM: Radenović et al., "Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI 2018.
BNNeck: Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-identification", CVPRW 2019.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GeneralizedMeanPooling(nn.Module):
    """GeM: f = (mean_hw x^p)^(1/p) with a learnable p (p=1 is average, p→∞ max pooling). [N,C,h,w] -> [N,C]"""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class AveragePooling(nn.Module):
    """Global average pooling: [N,C,h,w] -> [N,C]."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.mean(dim=(2, 3))


POOLINGS = {"avg": AveragePooling, "gem": GeneralizedMeanPooling}


class BNNeckHead(nn.Module):
    """BatchNorm1d with a frozen zero bias, then a bias-free linear classifier.

    Metric losses see the feature before the BN; the ID loss sees the logits of the feature after it.
    Returns `(bn_features [N,D], logits [N,num_classes])`.
    """

    def __init__(self, feat_dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(feat_dim)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(feat_dim, num_classes, bias=False)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn_features = self.bn(features)
        return bn_features, F.linear(bn_features, self.classifier.weight)
