"""Image transforms for ReID training and testing (torchvision.transforms.v2).

The training pipeline is the one of the strong ReID baseline (Luo et al., "Bag of Tricks and a Strong
Baseline for Deep Person Re-identification", CVPRW 2019): resize, horizontal flip, pad + random crop,
normalisation and random erasing (Zhong et al., "Random Erasing Data Augmentation", AAAI 2020). The peers'
further augmentations are switches, off by default: AutoAugment (Cubuk et al., CVPR 2019), colour jitter, AugMix
(Hendrycks et al., ICLR 2020) with fast-reid's settings, and Torchreid's random 2-D translation; random patch
(Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification", ICCV 2019) takes its patches from
other images of the batch and lives in `reidkit.data.batch_transforms`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
# Where random erasing's value comes from: "pixel_mean" paints the mean colour, 0 after normalisation (fast-reid's
# REA.VALUE = PIXEL_MEAN on 0–255 pixels); "normalised_mean" writes the mean's numbers into the normalised
# tensor (Torchreid's RandomErasing(mean=norm_mean)).
ERASING_FILLS = ("pixel_mean", "normalised_mean")
TRANSLATE_SCALE = 1.125  # Torchreid's Random2DTranslation enlarges the image by this factor, then crops
# fast-reid's AugMix (INPUT.AUGMIX): severity 1, 3 chains of depth 1, Dirichlet/Beta coefficient 0.1, and its
# operations without the colour ones (torchvision's all_ops=False)
FASTREID_AUGMIX = {"severity": 1, "mixture_width": 3, "chain_depth": 1, "alpha": 0.1, "all_ops": False}


def _resize(height: int, width: int, interpolation: str = "bilinear") -> v2.Resize:
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    return v2.Resize((height, width), interpolation=INTERPOLATIONS[interpolation], antialias=True)


def pixel_scale(values: Sequence[float]) -> list[float]:
    """Statistics on the [0, 1] scale (mean, std) on the 0–255 pixel scale, as fast-reid's PIXEL_MEAN/STD."""
    return [255 * value for value in values]


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    """0–255 float pixels → (pixels − 255·mean) / (255·std): fast-reid's normalisation to the bit, and
    (pixels / 255 − mean) / std up to float rounding (Torchreid's)."""
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=False), v2.Normalize(pixel_scale(mean), pixel_scale(std))]


def erasing_value(fill: str, mean: Sequence[float]) -> list[float]:
    """The per-channel value random erasing writes into the normalised image (see `ERASING_FILLS`)."""
    if fill not in ERASING_FILLS:
        raise ValueError(f"erasing fill must be one of {', '.join(ERASING_FILLS)}, got {fill!r}")
    return [0.0, 0.0, 0.0] if fill == "pixel_mean" else [float(value) for value in mean]


def check_probabilities(**probabilities: float) -> None:
    """Raise ValueError naming the first probability outside [0, 1]."""
    for name, prob in probabilities.items():
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {prob}")


def check_augmentation(flip_prob: float, pad: int, erasing_prob: float, **probabilities: float) -> None:
    """Raise ValueError for a probability outside [0, 1] or a negative pad (both augmentation paths)."""
    check_probabilities(flip_prob=flip_prob, erasing_prob=erasing_prob, **probabilities)
    if pad < 0:
        raise ValueError(f"pad must be non-negative, got {pad}")


class RandomTranslation(v2.Transform):
    """Torchreid's random 2-D translation (its "random_crop", `Random2DTranslation`): with probability `p`, the
    image is enlarged by 1.125 (rounded) and a window of its own size is cut at offsets drawn uniformly and
    rounded; otherwise it is left as it is. Torchreid draws with Python's `random`; this draws with torch's
    generator, so the per-image seeds of the training loader fix it.

    Args:
        p: probability of a translation, in [0, 1].
        interpolation: "bilinear" (Torchreid) or "bicubic", for the enlargement.
    """

    _transformed_types = (Image.Image,)

    def __init__(self, p: float = 0.5, interpolation: str = "bilinear") -> None:
        super().__init__()
        self.p, self.interpolation = p, INTERPOLATIONS[interpolation]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        width, height = next(item for item in flat_inputs if isinstance(item, Image.Image)).size
        if torch.rand(1) >= self.p:
            return {"size": None, "top": 0, "left": 0}
        size = (round(height * TRANSLATE_SCALE), round(width * TRANSLATE_SCALE))
        top = round(float(torch.empty(1).uniform_(0, size[0] - height)))
        left = round(float(torch.empty(1).uniform_(0, size[1] - width)))
        return {"size": size, "top": top, "left": left}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """`inpt` enlarged to `params["size"]` and cropped back to its size at (top, left); as it is for None."""
        if params["size"] is None:
            return inpt
        width, height = inpt.size
        enlarged = F.resize(inpt, list(params["size"]), interpolation=self.interpolation, antialias=True)
        return F.crop(enlarged, params["top"], params["left"], height, width)


def build_train_transform(
    height: int,
    width: int,
    flip_prob: float = 0.5,
    pad: int = 10,
    erasing_prob: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bilinear",
    erasing_fill: str = "pixel_mean",
    autoaugment_prob: float = 0.0,
    translate_prob: float = 0.0,
    colour_jitter_prob: float = 0.0,
    colour_jitter: Sequence[float] = (0.15, 0.15, 0.1, 0.1),
    augmix_prob: float = 0.0,
) -> v2.Compose:
    """Build the training transform: PIL image -> normalised float tensor `[3, height, width]`.

    Steps: RandomApply(AutoAugment, ImageNet policy) → Resize → RandomHorizontalFlip(flip_prob) → Pad(pad,
    zeros) + RandomCrop → RandomTranslation(translate_prob) → RandomApply(ColorJitter) → RandomApply(AugMix) →
    float 0–255 → Normalize(255·mean, 255·std) → RandomErasing(erasing_prob). AutoAugment comes before the resize
    and colour jitter and AugMix after the geometry, as in fast-reid. A probability or pad of 0 leaves its
    step out, drawing nothing.

    Args:
        height: output height in pixels (e.g. 256).
        width: output width in pixels (e.g. 128).
        flip_prob: probability of a horizontal flip, in [0, 1].
        pad: padding in pixels on every side before the random crop back to (height, width).
        erasing_prob: probability of random erasing, in [0, 1].
        mean: per-channel mean of the normalisation (RGB, [0, 1] scale).
        std: per-channel standard deviation of the normalisation.
        interpolation: resize interpolation, "bilinear" or "bicubic" (PIL's, antialiased).
        erasing_fill: the erased rectangle's value, one of `ERASING_FILLS`.
        autoaugment_prob: probability of torchvision's AutoAugment (ImageNet policy).
        translate_prob: probability of Torchreid's random 2-D translation (`RandomTranslation`).
        colour_jitter_prob: probability of torchvision's ColorJitter with `colour_jitter`.
        colour_jitter: (brightness, contrast, saturation, hue) of the colour jitter.
        augmix_prob: probability of torchvision's AugMix with fast-reid's settings (`FASTREID_AUGMIX`).

    Raises:
        ValueError: a non-positive size, a probability outside [0, 1], a negative pad, an unknown
            interpolation or erasing fill.
    """
    check_augmentation(flip_prob, pad, erasing_prob, autoaugment_prob=autoaugment_prob,
                       translate_prob=translate_prob, colour_jitter_prob=colour_jitter_prob, augmix_prob=augmix_prob)
    value = erasing_value(erasing_fill, mean)
    steps: list[v2.Transform] = []
    if autoaugment_prob > 0:
        steps.append(v2.RandomApply([v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)], p=autoaugment_prob))
    steps.append(_resize(height, width, interpolation))
    if flip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(flip_prob))
    if pad > 0:
        steps += [v2.Pad(pad), v2.RandomCrop((height, width))]
    if translate_prob > 0:
        steps.append(RandomTranslation(translate_prob, interpolation))
    if colour_jitter_prob > 0:
        steps.append(v2.RandomApply([v2.ColorJitter(*colour_jitter)], p=colour_jitter_prob))
    if augmix_prob > 0:
        steps.append(v2.RandomApply([v2.AugMix(**FASTREID_AUGMIX)], p=augmix_prob))
    steps += _to_normalized_tensor(mean, std)
    if erasing_prob > 0:
        steps.append(v2.RandomErasing(p=erasing_prob, value=value))
    return v2.Compose([*steps, v2.ToPureTensor()])


def build_test_transform(
    height: int,
    width: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bilinear",
) -> v2.Compose:
    """Build the test transform: Resize → float 0–255 → Normalize(255·mean, 255·std); `[3, height, width]`.

    Args:
        height: output height in pixels.
        width: output width in pixels.
        mean: per-channel mean of the normalisation (RGB, [0, 1] scale).
        std: per-channel standard deviation of the normalisation.
        interpolation: resize interpolation, "bilinear" (Torchreid) or "bicubic" (fast-reid), PIL's.

    Raises:
        ValueError: a non-positive size or an unknown interpolation.
    """
    return v2.Compose([_resize(height, width, interpolation), *_to_normalized_tensor(mean, std),
                       v2.ToPureTensor()])


def train_transform_kwargs(data) -> dict[str, Any]:
    """The `build_train_transform` arguments of a data config (`reidkit.config.DataConfig`)."""
    return {"height": data.height, "width": data.width, "flip_prob": data.flip_prob, "pad": data.pad,
            "erasing_prob": data.erasing_prob, "interpolation": data.interpolation,
            "erasing_fill": data.erasing_fill, "autoaugment_prob": data.autoaugment_prob,
            "translate_prob": data.translate_prob, "colour_jitter_prob": data.colour_jitter_prob,
            "colour_jitter": (data.colour_jitter_brightness, data.colour_jitter_contrast,
                              data.colour_jitter_saturation, data.colour_jitter_hue),
            "augmix_prob": data.augmix_prob}
