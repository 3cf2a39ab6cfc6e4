"""The training augmentation of `reidkit.data.transforms` applied to a whole batch of decoded images on
their device (`data.cache`), and random patch, which needs the batch on either path.

Each image's randomness is drawn on the host, from its own seed, by the very calls the PIL path makes
under `torch.manual_seed(seed)` (torchvision's own `make_params`, in the same order: flip, crop, erasing),
so an image gets the same flip, crop offsets and erased rectangle on either path. The pixels are then
produced for the whole batch at once: flip, zero pad + crop, float 0–255, normalisation, erasing with
the fill value — the same operations in the same order, so the result equals the PIL path's. The PIL-only
augmentations (AutoAugment, AugMix, colour jitter, translation) have no batched form: the config refuses
them with a cache (`DataConfig.pil_only_augmentations`).

Random patch (Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification", ICCV 2019; fast-reid's
and Torchreid's RandomPatch) pastes a rectangle cut from another image of the same batch: the batch is the
patch pool, so the pixels depend on nothing but the batch and its seeds (resume stays exact, any number of
workers); both paths run `RandomPatch` on the normalised batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from reidkit.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, check_augmentation, check_probabilities,
                                     erasing_value, pixel_scale)

PATCH_STREAM = 1  # random patch draws from SeedSequence([seed, PATCH_STREAM]), apart from the PIL path's draws


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
    """Float32 `(images − mean) / std` per channel of uint8 `[B, 3, H, W]` with 0–255 scale statistics
    (`pixel_scale`), on the images' device: the operations of `v2.ToDtype(torch.float32)` then
    `v2.Normalize(mean, std)`, with their result."""
    mean = mean.to(images.device, non_blocking=True)[None, :, None, None]
    std = std.to(images.device, non_blocking=True)[None, :, None, None]
    return images.float().sub(mean).div(std)


class BatchAugmentation:
    """Flip, pad + random crop, normalisation and random erasing of uint8 batches `[B, 3, H, W]` already at
    the training size; the draws and the pixels of `build_train_transform` for the same per-image seeds, then
    `RandomPatch(random_patch_prob)`.

    Args:
        height, width: the training size (the images' size).
        flip_prob, pad, erasing_prob, mean, std, erasing_fill: as `reidkit.data.transforms.build_train_transform`.
        random_patch_prob: probability of `RandomPatch` per image.

    Raises:
        ValueError: a probability outside [0, 1], a negative pad or an unknown erasing fill.
    """

    def __init__(self, height: int, width: int, flip_prob: float = 0.5, pad: int = 10, erasing_prob: float = 0.5,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 erasing_fill: str = "pixel_mean", random_patch_prob: float = 0.0) -> None:
        check_augmentation(flip_prob, pad, erasing_prob)
        self.height, self.width = height, width
        self.flip_prob, self.pad, self.erasing_prob = flip_prob, pad, erasing_prob
        self.mean, self.std = torch.tensor(pixel_scale(mean)), torch.tensor(pixel_scale(std))
        self.fill = torch.tensor(erasing_value(erasing_fill, mean))  # float32, as RandomErasing's value
        self.random_patch = RandomPatch(random_patch_prob) if random_patch_prob > 0 else None
        self._crop = v2.RandomCrop((height, width))
        self._erasing = v2.RandomErasing(p=erasing_prob, value=self.fill.tolist())
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
            fill = self.fill.to(device, non_blocking=True)[None, :, None, None]
            output = torch.where((inside & draws.erase[:, None, None])[:, None], fill, output)
        return output

    def __call__(self, images: Tensor, seeds: Sequence[int]) -> Tensor:
        """`apply(images, draw(seeds))`, then the random patch when it is on."""
        output = self.apply(images, self.draw(seeds))
        return output if self.random_patch is None else self.random_patch(output, seeds)


def _below(bound: int, generator: torch.Generator) -> int:
    """An integer drawn uniformly from 0..bound−1."""
    return int(torch.randint(bound, (1,), generator=generator))


@dataclass
class PatchDraws:
    """Per-image random patch parameters of a batch (host int64 tensors of length B): whether a patch is pasted,
    the slot of the image it is cut from, its size, its place there (`source_top`, `source_left`) and here
    (`top`, `left`), and whether it is mirrored."""

    paste: Tensor
    source: Tensor
    height: Tensor
    width: Tensor
    source_top: Tensor
    source_left: Tensor
    top: Tensor
    left: Tensor
    flip: Tensor


class RandomPatch:
    """Random patch with the batch as the patch pool: with probability `prob` an image gets a rectangle cut from
    another image of its batch (slot drawn uniformly among the others) pasted at a random place, mirrored with
    probability `flip_prob`. The rectangle's area is a share a ~ U[min_area, max_area] of the image and its
    aspect ratio r ~ U[min_ratio, 1/min_ratio]: h = round(√(a·H·W·r)), w = round(√(a·H·W/r)), drawn again until
    h < H and w < W (100 tries, then no patch). fast-reid's RandomPatch defaults; its pool is instead a queue of
    the last 50,000 patches of earlier images in each worker, pasting only once 100 are collected.

    Works on float `[B, C, H, W]` (normalised images) on any device; patches are cut from the batch as given
    (not from images already patched).
    """

    def __init__(self, prob: float = 0.5, min_area: float = 0.01, max_area: float = 0.5, min_ratio: float = 0.1,
                 flip_prob: float = 0.5) -> None:
        check_probabilities(random_patch_prob=prob, patch_flip_prob=flip_prob)
        if not (0 < min_area <= max_area <= 1 and 0 < min_ratio <= 1):
            raise ValueError(f"need 0 < min_area <= max_area <= 1 and 0 < min_ratio <= 1, got {min_area}, "
                             f"{max_area}, {min_ratio}")
        self.prob, self.flip_prob = prob, flip_prob
        self.min_area, self.max_area, self.min_ratio = min_area, max_area, min_ratio

    def _size(self, height: int, width: int, generator: torch.Generator) -> tuple[int, int]:
        for _ in range(100):
            area = height * width * float(torch.empty(1).uniform_(self.min_area, self.max_area, generator=generator))
            ratio = float(torch.empty(1).uniform_(self.min_ratio, 1 / self.min_ratio, generator=generator))
            patch_height, patch_width = round((area * ratio) ** 0.5), round((area / ratio) ** 0.5)
            if 0 < patch_height < height and 0 < patch_width < width:
                return patch_height, patch_width
        return 0, 0

    def draw(self, seeds: Sequence[int], height: int, width: int) -> PatchDraws:
        """The parameters of each image of a batch of `len(seeds)` images of height × width, from its seed."""
        rows = []
        for slot, seed in enumerate(seeds):
            state = np.random.SeedSequence([seed, PATCH_STREAM]).generate_state(1, np.uint64)[0]
            generator = torch.Generator().manual_seed(int(state % 2**63))
            row = [False, slot, 0, 0, 0, 0, 0, 0, False]
            if len(seeds) > 1 and bool(torch.rand(1, generator=generator) < self.prob):
                patch_height, patch_width = self._size(height, width, generator)
                if patch_height:
                    source = (slot + 1 + _below(len(seeds) - 1, generator)) % len(seeds)
                    places = [_below(bound, generator) for bound in (height - patch_height + 1,
                                                                     width - patch_width + 1) * 2]
                    flip = bool(torch.rand(1, generator=generator) < self.flip_prob)
                    row = [True, source, patch_height, patch_width, *places, flip]
            rows.append(row)
        columns = torch.tensor(rows, dtype=torch.int64).reshape(len(rows), 9).T
        paste, source, patch_height, patch_width, source_top, source_left, top, left, flip = columns
        return PatchDraws(paste.bool(), source, patch_height, patch_width, source_top, source_left, top, left,
                          flip.bool())

    def apply(self, images: Tensor, draws: PatchDraws) -> Tensor:
        """`images [B, C, H, W]` with each drawn patch pasted (a new tensor)."""
        device, (_, channels, height, width) = images.device, images.shape
        draws = PatchDraws(*(value.to(device, non_blocking=True) for value in vars(draws).values()))
        row_offset = torch.arange(height, device=device)[None] - draws.top[:, None]  # [B, H]
        column_offset = torch.arange(width, device=device)[None] - draws.left[:, None]  # [B, W]
        inside_rows = (row_offset >= 0) & (row_offset < draws.height[:, None])
        inside_columns = (column_offset >= 0) & (column_offset < draws.width[:, None])
        column_offset = torch.where(draws.flip[:, None], draws.width[:, None] - 1 - column_offset, column_offset)
        source_rows = (draws.source_top[:, None] + row_offset).clamp(0, height - 1)
        source_columns = (draws.source_left[:, None] + column_offset).clamp(0, width - 1)
        patches = images[draws.source[:, None, None, None], torch.arange(channels, device=device)[None, :, None, None],
                         source_rows[:, None, :, None], source_columns[:, None, None, :]]
        inside = draws.paste[:, None, None] & inside_rows[:, :, None] & inside_columns[:, None, :]
        return torch.where(inside[:, None], patches, images)

    def __call__(self, images: Tensor, seeds: Sequence[int]) -> Tensor:
        """`apply(images, draw(seeds, H, W))`."""
        return self.apply(images, self.draw(seeds, images.shape[-2], images.shape[-1]))
