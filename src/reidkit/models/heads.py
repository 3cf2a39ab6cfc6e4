"""Pooling and the BNNeck head.

Attribute heads: Lin et al., "Improving Person Re-identification by Attribute and Identity Learning", 2019.
Verification (pair) head: Zheng et al., "A Discriminatively Learned CNN Embedding for Person
Re-identification", TOMM 2017 (square of the difference of the two features).
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


class LinearHead(nn.Module):
    """Torchreid's head: a linear classifier with a bias on the feature itself, no neck (weights drawn with
    std 0.01, zero bias, as Torchreid initialises it). Returns `(features [N,D], logits [N,num_classes])`: the
    feature stands in for the BNNeck output."""

    def __init__(self, feat_dim: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(feat_dim, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return features, self.classifier(features)


HEADS = {"bnneck": BNNeckHead, "linear": LinearHead}


class AttributeHeads(nn.Module):
    """One linear classifier per attribute: features [N,D] -> {name: logits [N, classes]}."""

    def __init__(self, feat_dim: int, classes: dict[str, int]) -> None:
        super().__init__()
        self.classifiers = nn.ModuleDict({name: nn.Linear(feat_dim, count) for name, count in classes.items()})

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: classifier(features) for name, classifier in self.classifiers.items()}


class PairHead(nn.Module):
    """Siamese fusion + same/different classifier: (f_a [M,D], f_b [M,D]) -> logits [M, 2].

    The fusion [(f_a − f_b)², f_a ⊙ f_b] is symmetric, so head(a, b) = head(b, a).
    """

    def __init__(self, feat_dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(2 * feat_dim)
        self.classifier = nn.Linear(2 * feat_dim, 2)

    def forward(self, features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
        fused = torch.cat([(features_a - features_b).pow(2), features_a * features_b], dim=1)
        return self.classifier(self.norm(fused))
