"""OSNet, the omni-scale network (Zhou, Yang, Cavallaro & Xiang, "Omni-Scale Feature Learning for Person
Re-Identification", ICCV 2019): a lightweight trunk whose residual blocks see several receptive fields at
once and mix them per channel.

Each omni-scale block reduces the channels by 4 with a 1×1 convolution, runs T = 4 streams of 1, 2, 3 and 4
"Lite 3×3" layers (a 1×1 pointwise then a 3×3 depthwise convolution, BN, ReLU: receptive fields 3, 5, 7 and
9), weighs each stream per channel by one aggregation gate shared by all streams (global average pool →
FC (C/16) → ReLU → FC → sigmoid), sums them, and restores the channels with a 1×1 convolution + BN before
the residual addition. The trunk (table 1 of the paper): 7×7 conv stride 2 + 3×3 max pool; stages of 2 blocks
at 256, 384 and 512 channels (× the width multiplier), the first two followed by a 1×1 conv and 2×2 average
pooling; a final 1×1 conv at 512. At 256×128 the feature map is 16×8. The width multipliers 1.0, 0.75, 0.5
and 0.25 give the paper's x1_0 … x0_25 (1.9 M … 0.13 M parameters in the trunk; the paper's 2.2 M … 0.2 M
count its 512-d FC embedding layer too, which reidkit's BNNeck head replaces).
"""

from __future__ import annotations

import torch
from torch import nn

OSNET_WIDTHS = {"osnet_x1_0": 1.0, "osnet_x0_75": 0.75, "osnet_x0_5": 0.5, "osnet_x0_25": 0.25}
_CHANNELS = (64, 256, 384, 512)  # stem, stage 2, stage 3, stage 4 at width 1.0
_STREAMS = 4


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
              nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class LiteConv3x3(nn.Module):
    """Pointwise 1×1, then depthwise 3×3 convolution, BN, ReLU (channels unchanged)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.depthwise(self.pointwise(x))))


class AggregationGate(nn.Module):
    """Channel weights in (0, 1) of one stream: sigmoid(FC(ReLU(FC(GAP(x))))), reduction 16."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(weights)


class OmniScaleBlock(nn.Module):
    """Residual block of T = 4 streams of 1..4 Lite 3×3 layers, mixed by a shared aggregation gate."""

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 4) -> None:
        super().__init__()
        mid = out_channels // reduction
        self.reduce = _conv_bn(in_channels, mid, 1)
        self.streams = nn.ModuleList(nn.Sequential(*(LiteConv3x3(mid) for _ in range(depth)))
                                     for depth in range(1, _STREAMS + 1))
        self.gate = AggregationGate(mid)
        self.expand = _conv_bn(mid, out_channels, 1, relu=False)
        self.shortcut = _conv_bn(in_channels, out_channels, 1, relu=False) if in_channels != out_channels else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        mixed = sum(self.gate(stream(reduced)) for stream in self.streams)
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.expand(mixed) + identity)


class OSNet(nn.Module):
    """OSNet trunk: images [N, 3, H, W] → feature maps [N, C, H/16, W/16], C = 512 × width (`out_channels`).

    Args:
        width: width multiplier (1.0, 0.75, 0.5, 0.25 in the paper).
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        stem, c2, c3, c4 = (int(round(c * width)) for c in _CHANNELS)
        self.stem = nn.Sequential(_conv_bn(3, stem, 7, stride=2), nn.MaxPool2d(3, stride=2, padding=1))
        self.stage2 = nn.Sequential(OmniScaleBlock(stem, c2), OmniScaleBlock(c2, c2),
                                    _conv_bn(c2, c2, 1), nn.AvgPool2d(2, stride=2))
        self.stage3 = nn.Sequential(OmniScaleBlock(c2, c3), OmniScaleBlock(c3, c3),
                                    _conv_bn(c3, c3, 1), nn.AvgPool2d(2, stride=2))
        self.stage4 = nn.Sequential(OmniScaleBlock(c3, c4), OmniScaleBlock(c4, c4))
        self.conv5 = _conv_bn(c4, c4, 1)
        self.out_channels = c4
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv5(self.stage4(self.stage3(self.stage2(self.stem(images)))))
