"""Image transforms for ReID training and testing (torchvision.transforms.v2).

The training pipeline is the one of the strong ReID baseline (Luo et al., "Bag of Tricks and a Strong
Baseline for Deep Person Re-identification", CVPRW 2019): resize, horizontal flip, pad + random crop,
normalisation and random erasing (Zhong et al., "Random Erasing Data Augmentation", AAAI 2020).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode, v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resize(height: int, width: int) -> v2.Resize:
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    return v2.Resize((height, width), interpolation=InterpolationMode.BILINEAR, antialias=True)


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def check_augmentation(flip_prob: float, pad: int, erasing_prob: float) -> None:
    """Raise ValueError for a probability outside [0, 1] or a negative pad (both augmentation paths)."""
    for name, prob in (("flip_prob", flip_prob), ("erasing_prob", erasing_prob)):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {prob}")
    if pad < 0:
        raise ValueError(f"pad must be non-negative, got {pad}")


def build_train_transform(
    height: int,
    width: int,
    flip_prob: float = 0.5,
    pad: int = 10,
    erasing_prob: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Build the training transform: PIL image -> normalised float tensor `[3, height, width]`.

    Steps: Resize → RandomHorizontalFlip(flip_prob) → Pad(pad, zeros) + RandomCrop → float in [0, 1]
    → Normalize(mean, std) → RandomErasing(erasing_prob). Erased rectangles are filled with 0 after
    normalisation, i.e. with the mean colour. A probability or pad of 0 leaves that step out.

    Args:
        height: output height in pixels (e.g. 256).
        width: output width in pixels (e.g. 128).
        flip_prob: probability of a horizontal flip, in [0, 1].
        pad: padding in pixels on every side before the random crop back to (height, width).
        erasing_prob: probability of random erasing, in [0, 1].
        mean: per-channel mean of the normalisation (RGB, [0, 1] scale).
        std: per-channel standard deviation of the normalisation.

    Raises:
        ValueError: a non-positive size, a probability outside [0, 1] or a negative pad.
    """
    check_augmentation(flip_prob, pad, erasing_prob)
    steps: list[v2.Transform] = [_resize(height, width)]
    if flip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(flip_prob))
    if pad > 0:
        steps += [v2.Pad(pad), v2.RandomCrop((height, width))]
    steps += _to_normalized_tensor(mean, std)
    if erasing_prob > 0:
        steps.append(v2.RandomErasing(p=erasing_prob, value=0))
    return v2.Compose([*steps, v2.ToPureTensor()])


def build_test_transform(
    height: int,
    width: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Build the test transform: Resize → float in [0, 1] → Normalize; output `[3, height, width]`.

    Args:
        height: output height in pixels.
        width: output width in pixels.
        mean: per-channel mean of the normalisation (RGB, [0, 1] scale).
        std: per-channel standard deviation of the normalisation.

    Raises:
        ValueError: a non-positive size.
    """
    return v2.Compose([_resize(height, width), *_to_normalized_tensor(mean, std), v2.ToPureTensor()])
