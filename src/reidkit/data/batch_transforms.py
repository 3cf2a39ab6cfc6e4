"""The training augmentation of `reidkit.data.transforms` applied to a whole batch of decoded images on
their device (`data.cache`).

Each image's randomness is drawn on the host, from its own seed, by the very calls the PIL path makes
under `torch.manual_seed(seed)` (torchvision's own `make_params`, in the same order: flip, crop, erasing),
so an image gets the same flip, crop offsets and erased rectangle on either path. The pixels are then
produced for the whole batch at once: flip, zero pad + crop, float in [0, 1], normalisation, erasing with
0 — the same operations in the same order, so the result equals the PIL path's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from reidkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, check_augmentation


@dataclass
class Draws:
    """Per-image augmentation parameters of a batch (host tensors of length B).

    `top`, `left`: crop offsets in the padded image; `erase`: whether a rectangle is erased, at rows
    [erase_top, erase_top + erase_height) and columns [erase_left, erase_left + erase_width).
    """

    flip: Tensor
    top: Tensor
    left: Tensor
    erase: Tensor
    erase_top: Tensor
    erase_left: Tensor
    erase_height: Tensor
    erase_width: Tensor


def normalize_uint8(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Float32 `(images / 255 − mean) / std` per channel of uint8 `[B, 3, H, W]`, on the images' device: the
    operations of `v2.ToDtype(torch.float32, scale=True)` then `v2.Normalize(mean, std)`, with their result."""
    mean = mean.to(images.device, non_blocking=True)[None, :, None, None]
    std = std.to(images.device, non_blocking=True)[None, :, None, None]
    return images.float().mul(1.0 / 255).sub(mean).div(std)


class BatchAugmentation:
    """Flip, pad + random crop, normalisation and random erasing of uint8 batches `[B, 3, H, W]` already at
    the training size; the draws and the pixels of `build_train_transform` for the same per-image seeds.

    Args:
        height, width: the training size (the images' size).
        flip_prob, pad, erasing_prob, mean, std: as `reidkit.data.transforms.build_train_transform`.

    Raises:
        ValueError: a probability outside [0, 1] or a negative pad.
    """

    def __init__(self, height: int, width: int, flip_prob: float = 0.5, pad: int = 10, erasing_prob: float = 0.5,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        check_augmentation(flip_prob, pad, erasing_prob)
        self.height, self.width = height, width
        self.flip_prob, self.pad, self.erasing_prob = flip_prob, pad, erasing_prob
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)
        self._crop = v2.RandomCrop((height, width))
        self._erasing = v2.RandomErasing(p=erasing_prob, value=0)
        self._padded = torch.empty(3, height + 2 * pad, width + 2 * pad)  # shapes for make_params
        self._image = torch.empty(3, height, width)

    def draw(self, seeds: Sequence[int]) -> Draws:
        """The parameters of each image, drawn as the PIL path draws them under `torch.manual_seed(seed)`."""
        rows = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                flip = self.flip_prob > 0 and bool(torch.rand(1) < self.flip_prob)  # RandomHorizontalFlip
                top = left = 0
                if self.pad > 0:
                    crop = self._crop.make_params([self._padded])
                    top, left = crop["top"], crop["left"]
                box = (False, 0, 0, 0, 0)
                if self.erasing_prob > 0 and not bool(torch.rand(1) >= self.erasing_prob):  # RandomErasing
                    params = self._erasing.make_params([self._image])
                    box = (params["v"] is not None, params["i"], params["j"], params["h"], params["w"])
            rows.append((flip, top, left, *box))
        columns = torch.tensor(rows, dtype=torch.int64).reshape(len(rows), 8).T
        flip, top, left, erase, erase_top, erase_left, erase_height, erase_width = columns
        return Draws(flip.bool(), top, left, erase.bool(), erase_top, erase_left, erase_height, erase_width)

    def apply(self, images: Tensor, draws: Draws) -> Tensor:
        """Normalised float32 `[B, 3, H, W]` on the images' device from uint8 `images [B, 3, H, W]`."""
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != (3, self.height, self.width):
            raise ValueError(f"expected uint8 images [B, 3, {self.height}, {self.width}], got "
                             f"{images.dtype} {tuple(images.shape)}")
        device, batch = images.device, images.shape[0]
        draws = Draws(*(value.to(device, non_blocking=True) for value in vars(draws).values()))
        images = torch.where(draws.flip[:, None, None, None], images.flip(3), images)
        if self.pad > 0:
            padded = F.pad(images, [self.pad] * 4)  # zeros: black borders, as v2.Pad
            rows = draws.top[:, None] + torch.arange(self.height, device=device)
            columns = draws.left[:, None] + torch.arange(self.width, device=device)
            images = padded[torch.arange(batch, device=device)[:, None, None, None],
                            torch.arange(3, device=device)[None, :, None, None],
                            rows[:, None, :, None], columns[:, None, None, :]]
        output = normalize_uint8(images, self.mean, self.std)
        if self.erasing_prob > 0:
            row = torch.arange(self.height, device=device)[None, :, None]
            column = torch.arange(self.width, device=device)[None, None, :]
            top, left = draws.erase_top[:, None, None], draws.erase_left[:, None, None]
            inside = ((row >= top) & (row < top + draws.erase_height[:, None, None])
                      & (column >= left) & (column < left + draws.erase_width[:, None, None]))
            output = output.masked_fill((inside & draws.erase[:, None, None])[:, None], 0.0)
        return output

    def __call__(self, images: Tensor, seeds: Sequence[int]) -> Tensor:
        """`apply(images, draw(seeds))`."""
        return self.apply(images, self.draw(seeds))
