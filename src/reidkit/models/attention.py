"""Mancs's fully attentional block (Wang, Zhang, Huang, Liu & Wang, "Mancs: A Multi-task Attentional Network
with Curriculum Sampling for Person Re-identification", ECCV 2018).

The block is a squeeze-and-excitation block (Hu et al., CVPR 2018) without the global pooling: its two
fully connected layers become 1×1 convolutions, so the mask has the shape of the feature map and
re-weights channels and positions at once:

    y = x ⊙ 2·σ(W₂ · ReLU(W₁ · x + b₁) + b₂),    W₁: C → C/r,  W₂: C/r → C  (1×1 convolutions)

The factor 2 and the zero initialisation of W₂ and b₂ are reidkit's: the mask starts at exactly 1, so a
freshly inserted block is the identity and pretrained trunks keep their output (like the non-local blocks,
`reidkit.models.non_local`); the paper's mask σ(·) lies in (0, 1) and has no such start.
"""

from __future__ import annotations

import torch
from torch import nn


class FullyAttentionalBlock(nn.Module):
    """x [N, C, H, W] -> x ⊙ 2σ(W₂ ReLU(W₁ x)), a channel-and-position mask of the shape of x."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        inner = max(channels // reduction, 1)
        self.squeeze = nn.Conv2d(channels, inner, kernel_size=1)
        self.excite = nn.Conv2d(inner, channels, kernel_size=1)
        nn.init.zeros_(self.excite.weight)
        nn.init.zeros_(self.excite.bias)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The attention mask [N, C, H, W] in (0, 2); exactly 1 at insertion."""
        return 2.0 * torch.sigmoid(self.excite(torch.relu(self.squeeze(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask(x)


class AttentionBranch(nn.Module):
    """Mancs's attention-aware branch beside the ID branch: maps [N, C, h, w] -> pool(FAB(maps)) [N, C]."""

    def __init__(self, channels: int, pool: nn.Module) -> None:
        super().__init__()
        self.block = FullyAttentionalBlock(channels)
        self.pool = pool

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.pool(self.block(maps))


def with_attention(stage: nn.Sequential) -> nn.Sequential:
    """`stage` (a ResNet layer) followed by a fully attentional block on its output."""
    last = stage[-1]
    channels = (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels
    return nn.Sequential(*stage, FullyAttentionalBlock(channels))
