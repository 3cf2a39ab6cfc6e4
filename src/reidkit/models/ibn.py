"""ResNet-IBN-a (Pan, Luo, Shi & Tang, "Two at Once: Enhancing Learning and Generalization Capacities via
IBN-Net", ECCV 2018), the strongest CNN trunk of BoT and fast-reid.

Instance normalisation removes appearance (colour, contrast, style) that changes between cameras and data
sets; batch normalisation keeps the content that tells identities apart. IBN-a replaces the BN after the
first 1×1 convolution of every bottleneck in stages 1–3 by IBN: InstanceNorm (affine) on the first half of
the channels, BatchNorm on the other half. Stage 4 stays BN only, as in the paper (its features must stay
discriminative). The layer names (`bn1.IN`, `bn1.BN`) are those of the published ImageNet checkpoints.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn


class IBN(nn.Module):
    """InstanceNorm on the first ⌊C·ratio⌋ channels, BatchNorm on the rest: [N, C, H, W] → [N, C, H, W]."""

    def __init__(self, channels: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(channels * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(first.contiguous()), self.BN(second.contiguous())], dim=1)


def resnet_ibn_a(depth: int = 50) -> torchvision.models.ResNet:
    """A torchvision ResNet-50/101 with IBN-a in the bottlenecks of stages 1–3 (random init)."""
    builders = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}
    if depth not in builders:
        raise ValueError(f"ResNet-IBN-a depth must be one of {sorted(builders)}, got {depth}")
    resnet = builders[depth]()
    for stage in (resnet.layer1, resnet.layer2, resnet.layer3):
        for block in stage:
            block.bn1 = IBN(block.bn1.num_features)
    return resnet
