"""Non-local blocks (Wang et al., "Non-local Neural Networks", CVPR 2018) as used by AGW (Ye et al., "Deep
Learning for Person Re-identification: A Survey and Outlook", TPAMI 2021).

Embedded dot-product form: for feature map positions i, j of x [N, C, H, W]

    z_i = x_i + W · Σ_j (θ(x_i) · φ(x_j) / HW) g(x_j)

with θ, φ, g 1×1 convolutions to C/2 channels and W a 1×1 convolution back to C followed by BatchNorm whose
scale starts at 0, so a freshly inserted block is the identity and pretrained trunks keep their output.
"""

from __future__ import annotations

import torch
from torch import nn


class NonLocalBlock(nn.Module):
    """x [N, C, H, W] -> x + W(Σ_j f(x_i, x_j) g(x_j)), f = θᵀφ / (H·W)."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        inner = max(channels // reduction, 1)
        self.theta = nn.Conv2d(channels, inner, kernel_size=1)
        self.phi = nn.Conv2d(channels, inner, kernel_size=1)
        self.g = nn.Conv2d(channels, inner, kernel_size=1)
        self.out = nn.Sequential(nn.Conv2d(inner, channels, kernel_size=1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # [N, HW, C']
        phi = self.phi(x).flatten(2)  # [N, C', HW]
        g = self.g(x).flatten(2).transpose(1, 2)  # [N, HW, C']
        affinity = theta @ phi / (h * w)  # [N, HW, HW]
        y = (affinity @ g).transpose(1, 2).reshape(n, -1, h, w)
        return x + self.out(y)


def with_non_local(stage: nn.Sequential, count: int) -> nn.Sequential:
    """`stage` (a ResNet layer) with a non-local block after each of its last `count` residual blocks."""
    blocks: list[nn.Module] = []
    for position, block in enumerate(stage):
        blocks.append(block)
        if position >= len(stage) - count:
            channels = (block.conv3 if hasattr(block, "conv3") else block.conv2).out_channels
            blocks.append(NonLocalBlock(channels))
    return nn.Sequential(*blocks)
