"""Convolutional trunks: torchvision's ResNets (He et al., "Deep Residual Learning", CVPR 2016), ResNet-IBN-a
(`reidkit.models.ibn`) and OSNet (`reidkit.models.osnet`), each returning a feature map [N, C, h, w].

The classifier of the ImageNet model is removed; `last_stride=1` keeps the last stage of a ResNet at the
resolution of the one before (Sun et al., PCB, ECCV 2018; the BoT "last stride" trick); OSNet has no
strided last stage (its map is 1/16 of the input). Weights: `reidkit.models.weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

from reidkit.errors import ConfigError
from reidkit.models.attention import with_attention
from reidkit.models.ibn import resnet_ibn_a
from reidkit.models.non_local import with_non_local
from reidkit.models.osnet import OSNET_WIDTHS, OSNet
from reidkit.models.timm_backbone import PREFIX, build_timm_trunk, load_timm_weights
from reidkit.models.weights import backbone_state_dict, read_state_dict, state_mismatch

# Name → builder of the randomly initialised network (a ResNet keeps its ImageNet layout until trimmed).
BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
    "resnet50_ibn_a": lambda: resnet_ibn_a(50),
    **{name: (lambda width=width: OSNet(width)) for name, width in OSNET_WIDTHS.items()},
}


# The 3×3 stride-2 max pool after a ResNet's first convolution: torchvision's and Torchreid's pad by 1;
# fast-reid's pads by 0 and rounds the output size up (ceil mode). Same output size at even input sizes,
# different windows, so a fast-reid checkpoint needs its own.
STEM_POOLS: dict[str, Callable[[], nn.Module]] = {
    "pad": lambda: nn.MaxPool2d(3, stride=2, padding=1),
    "ceil": lambda: nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True),
}


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without its pooling and classifier: images [N,3,H,W] -> maps [N,C,h,w]."""

    def __init__(self, resnet: torchvision.models.ResNet, last_stride: int = 1, non_local: bool = False,
                 attention_blocks: bool = False, stem_pool: str = "pad") -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ConfigError(f"model.last_stride must be 1 or 2, got {last_stride}")
        if stem_pool not in STEM_POOLS:
            raise ConfigError(f"model.stem_pool must be one of {', '.join(STEM_POOLS)}, got {stem_pool!r}")
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, STEM_POOLS[stem_pool]())
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
        if non_local:  # AGW: 2 blocks after the last residual blocks of stage 2, 3 after those of stage 3
            self.layer2, self.layer3 = with_non_local(self.layer2, 2), with_non_local(self.layer3, 3)
        if attention_blocks:  # Mancs: a fully attentional block on the outputs of stages 2 and 3
            self.layer2, self.layer3 = with_attention(self.layer2), with_attention(self.layer3)
        first_block = self.layer4[0]
        strided_conv = first_block.conv2 if hasattr(first_block, "conv3") else first_block.conv1
        strided_conv.stride = (last_stride, last_stride)
        first_block.downsample[0].stride = (last_stride, last_stride)
        self.out_channels = resnet.fc.in_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def build_backbone(name: str, last_stride: int = 1, weights: str | Path | None = None,
                   non_local: bool = False, input_size: tuple[int, int] = (256, 128),
                   attention_blocks: bool = False, stem_pool: str = "pad", patch_stride: int = 0,
                   cameras: int = 0, camera_scale: float = 3.0) -> nn.Module:
    """Build a trunk by name (its `out_channels` is the map's C), optionally loading ImageNet weights.

    Args:
        name: one of BACKBONES, or "timm/<name>" for any timm model (`reidkit.models.timm_backbone`).
        last_stride: stride of a ResNet's last stage (1 or 2); OSNet has none (ignored).
        weights: "imagenet" (torchvision's download and cache, `reidkit.models.weights`) or a local file of
            the named network's state dict (a ResNet's `fc.*` ignored); None or "" keeps random init.
        non_local: insert AGW's non-local blocks in stages 2 and 3 of a ResNet (after the weights are
            loaded; they start as the identity).
        attention_blocks: insert Mancs's fully attentional blocks after stages 2 and 3 of a ResNet (after
            the weights are loaded; they start as the identity, `reidkit.models.attention`).
        input_size: (height, width) of the training images (a vision transformer's patch grid).
        stem_pool: a ResNet's stem max pool, "pad" (torchvision, Torchreid) or "ceil" (fast-reid).
        patch_stride, cameras, camera_scale: TransReID's overlapping patches and camera embedding, for a
            timm vision transformer (`reidkit.models.timm_backbone`); 0 for none.

    Raises:
        KeyError: unknown name (lists the choices).
        ConfigError: unreadable weights, keys/shapes that do not match the architecture, or non-local
            or attention blocks asked of a trunk that is not a ResNet.
    """
    inserted = [key for key, asked in (("non_local", non_local), ("attention_blocks", attention_blocks)) if asked]
    if name.startswith(PREFIX):
        if inserted:
            raise ConfigError(f"model.{inserted[0]} inserts blocks into ResNet stages of reidkit's own ResNets; set "
                              f"model.{inserted[0]}=false with a timm backbone")
        if stem_pool != "pad":
            raise ConfigError("model.stem_pool changes the stem of reidkit's own ResNets; set model.stem_pool=pad "
                              "with a timm backbone")
        trunk = build_timm_trunk(name, last_stride, input_size, pretrained=str(weights) == "imagenet",
                                 patch_stride=patch_stride, cameras=cameras, camera_scale=camera_scale)
        if weights and str(weights) != "imagenet":
            load_timm_weights(trunk, read_state_dict(weights), str(weights))
        return trunk
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")
    if patch_stride or cameras:
        raise ConfigError(f"model.patch_stride and model.camera_embedding apply to timm vision transformers "
                          f"(model.backbone=timm/vit_...); {name} is not one: set model.patch_stride=0 "
                          "model.camera_embedding=false")
    network = BACKBONES[name]()
    is_resnet = isinstance(network, torchvision.models.ResNet)
    if inserted and not is_resnet:
        raise ConfigError(f"model.{inserted[0]} inserts blocks into ResNet stages; {name} has none: set "
                          f"model.{inserted[0]}=false or use a ResNet backbone")
    if stem_pool != "pad" and not is_resnet:
        raise ConfigError(f"model.stem_pool={stem_pool} changes a ResNet's stem; {name} is not a ResNet: set "
                          "model.stem_pool=pad")
    if weights:
        state = {k: v for k, v in backbone_state_dict(name, weights).items() if not k.startswith("fc.")}
        expected = {k: v for k, v in network.state_dict().items() if not k.startswith("fc.")}
        mismatch = state_mismatch(expected, state)
        if mismatch:
            raise ConfigError(f"{weights} does not match {name}: {mismatch}")
        network.load_state_dict(state, strict=False)
    return ResNetTrunk(network, last_stride, non_local, attention_blocks, stem_pool) if is_resnet else network
