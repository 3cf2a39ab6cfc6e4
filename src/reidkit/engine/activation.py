"""Where a model's feature comes from: the activation map of an image, for ranked lists and reports.

The map is the L2 norm over channels of the backbone's last feature map at each position, the picture BoT-style
papers show (Luo et al., CVPRW 2019): the pooled retrieval feature is the mean (or GeM) of these position vectors,
so positions with large vectors contribute most of it. A transformer's patch tokens (class token left out) are laid
back on their grid. The map is upsampled bilinearly to the input size and scaled to [0, 1] per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reidkit.data.images import read_rgb
from reidkit.data.transforms import build_test_transform
from reidkit.engine.extraction import eval_mode


@torch.no_grad()
def feature_map_norms(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Activation maps `[N, H, W]` in [0, 1] of normalised images `[N, 3, H, W]`: ‖A[:, y, x]‖₂ of the backbone's
    feature map A `[N, C, h, w]` (or patch tokens `[N, 1 + h·w, C]`), bilinearly upsampled, divided by its maximum
    after subtracting its minimum (a constant map is all 0)."""
    height, width = images.shape[-2:]
    with eval_mode(model):
        maps = model.backbone(images)
    if maps.dim() == 3:  # tokens: class token first, then the patch grid in row-major order
        patches = maps[:, 1:]
        grid = getattr(model.backbone, "grid_size", None)  # overlapping patches: not H/16 × W/16
        if grid is None:  # a trunk that does not say: a grid of the image's aspect
            rows = round(math.sqrt(patches.shape[1] * height / width))
            grid = (rows, patches.shape[1] // rows)
        maps = patches.transpose(1, 2).reshape(len(maps), -1, *grid)
    norms = F.interpolate(maps.float().norm(dim=1, keepdim=True), size=(height, width), mode="bilinear",
                          align_corners=False)[:, 0]
    low = norms.amin(dim=(1, 2), keepdim=True)
    span = norms.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (norms - low) / span.clamp_min(torch.finfo(norms.dtype).tiny), 0.0)


def activation_of_files(model: nn.Module, height: int, width: int, device: torch.device | str = "cpu",
                        interpolation: str = "bilinear") -> Callable[[str], np.ndarray]:
    """A function from an image file to its activation map `[height, width]` (float32 in [0, 1]; cached), read
    and resized as the evaluation reads it; what the ranked-list pictures and the report draw."""
    transform = build_test_transform(height, width, interpolation=interpolation)

    @lru_cache(maxsize=4096)
    def activation(path: str) -> np.ndarray:
        image = transform(read_rgb(path)).unsqueeze(0).to(device)
        return feature_map_norms(model, image)[0].cpu().numpy()

    return activation
