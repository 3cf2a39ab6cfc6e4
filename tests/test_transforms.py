"""Tests for the training and test transforms."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from reidkit.config import load_config
from reidkit.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, RandomTranslation, build_test_transform,
                                     build_train_transform, pixel_scale)
from reidkit.errors import ConfigError


def _image() -> Image.Image:
    return Image.new("RGB", (20, 50), (255, 0, 128))


def _gradient() -> Image.Image:
    """An 8x16 image whose pixels all differ, so flips and crops change the tensor."""
    return Image.frombytes("RGB", (8, 16), bytes(range(256)) + bytes(range(128)))


def test_test_transform_shape_and_normalisation() -> None:
    output = build_test_transform(16, 8)(_image())
    assert type(output) is torch.Tensor and output.shape == (3, 16, 8) and output.dtype == torch.float32
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(output[:, 8, 4], expected, atol=1e-2, rtol=0)


def test_train_transform_with_every_step_off_equals_test_transform() -> None:
    train = build_train_transform(16, 8, flip_prob=0, pad=0, erasing_prob=0)
    torch.testing.assert_close(train(_image()), build_test_transform(16, 8)(_image()))


def test_train_transform_shape_and_randomness() -> None:
    torch.manual_seed(0)
    image = _gradient()
    transform = build_train_transform(16, 8, pad=2)
    outputs = [transform(image) for _ in range(8)]
    assert all(type(o) is torch.Tensor and o.shape == (3, 16, 8) for o in outputs)
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])


def test_flip_and_erasing_switches() -> None:
    image = _gradient()
    flipped = build_train_transform(16, 8, flip_prob=1.0, pad=0, erasing_prob=0)(image)
    torch.testing.assert_close(flipped, build_test_transform(16, 8)(image).flip(-1))
    torch.manual_seed(0)
    erased = build_train_transform(16, 8, flip_prob=0, pad=0, erasing_prob=1.0)(image)
    unerased = build_test_transform(16, 8)(image)
    assert ((erased == 0) & (unerased != 0)).any()


@pytest.mark.parametrize("kwargs", [{"flip_prob": 1.5}, {"erasing_prob": -0.1}, {"pad": -1}, {"height": 0}])
def test_invalid_arguments(kwargs: dict) -> None:
    arguments = {"height": 16, "width": 8, **kwargs}
    with pytest.raises(ValueError):
        build_train_transform(**arguments)


def test_pad_and_crop_is_a_shift_with_black_borders() -> None:
    """Pad(2) + RandomCrop = the test output shifted by (dy, dx) in [-2, 2]², the uncovered rows and
    columns black (normalised (0 − mean) / std)."""
    image = _gradient()
    reference = build_test_transform(16, 8)(image)
    black = ((torch.zeros(3) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))[:, None, None]
    transform = build_train_transform(16, 8, flip_prob=0, pad=2, erasing_prob=0)

    def shifted(dy: int, dx: int) -> torch.Tensor:
        canvas = black.expand(3, 20, 12).clone()
        canvas[:, 2:18, 2:10] = reference
        return canvas[:, 2 - dy:18 - dy, 2 - dx:10 - dx]

    shifts = set()
    for seed in range(12):
        torch.manual_seed(seed)
        output = transform(image)
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.allclose(output, shifted(dy, dx), atol=1e-6)]
        assert len(matches) == 1, seed
        shifts.add(matches[0])
    assert len(shifts) > 3  # the crop position really is random


def test_random_erasing_blanks_one_rectangle_of_the_default_size() -> None:
    """RandomErasing(p=1, value=0): one axis-aligned rectangle set to 0 (the mean colour) in every channel,
    covering 2–33 % of the image with aspect ratio in [0.3, 3.3]; everything else untouched."""
    image = Image.frombytes("RGB", (32, 64), bytes((i * 7 + 1) % 251 + 3 for i in range(32 * 64 * 3)))
    unerased = build_test_transform(64, 32)(image)
    transform = build_train_transform(64, 32, flip_prob=0, pad=0, erasing_prob=1.0)
    for seed in range(10):
        torch.manual_seed(seed)
        erased = transform(image)
        changed = (erased != unerased).any(dim=0)
        rows, cols = changed.any(dim=1).nonzero().flatten(), changed.any(dim=0).nonzero().flatten()
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert (erased[:, top:bottom, left:right] == 0).all()
        outside = torch.ones_like(changed)
        outside[top:bottom, left:right] = False
        assert torch.equal(erased[:, outside], unerased[:, outside])
        height, width = int(bottom - top), int(right - left)
        assert 0.02 * 64 * 32 - 1 <= height * width <= 0.33 * 64 * 32 + 1, seed
        assert 0.3 - 0.1 <= height / width <= 3.3 + 0.5, seed  # integer rounding of the drawn shape


# --- the peers' augmentations (issue #22): each against torchvision's own output or a hand-worked answer ---

def _photo(seed: int = 0, size: tuple[int, int] = (40, 90)) -> Image.Image:
    """A random RGB image (width, height) = `size`, larger than the 64×32 training size."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _seeded(transform, image: Image.Image, seed: int) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


def _normalised(image: Image.Image) -> torch.Tensor:
    """An image already at the training size through float + normalisation only (the last steps of both)."""
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32), v2.Normalize(pixel_scale(IMAGENET_MEAN),
                                                                              pixel_scale(IMAGENET_STD))])(image)


BASE = {"flip_prob": 0.0, "pad": 0, "erasing_prob": 0.0, "interpolation": "bicubic"}
RESIZE = v2.Resize((64, 32), interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
# option → the torchvision transform it runs with probability 1 (after RandomApply's one draw), and whether it
# comes before the resize
TORCHVISION = {
    "autoaugment_prob": (lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET), True),
    "colour_jitter_prob": (lambda: v2.ColorJitter(0.15, 0.15, 0.1, 0.1), False),
    "augmix_prob": (lambda: v2.AugMix(severity=1, mixture_width=3, chain_depth=1, alpha=0.1, all_ops=False), False),
}


@pytest.mark.parametrize("option", list(TORCHVISION))
def test_an_augmentation_with_probability_one_is_torchvisions_and_with_zero_draws_nothing(option) -> None:
    image = _photo()
    make, before_resize = TORCHVISION[option]
    on = build_train_transform(64, 32, **BASE, **{option: 1.0})
    changed = 0
    for seed in range(4):
        torch.manual_seed(seed)
        torch.rand(1)  # RandomApply's draw
        expected = RESIZE(make()(image)) if before_resize else make()(RESIZE(image))
        output = _seeded(on, image, seed)
        assert torch.equal(output, _normalised(expected)), seed
        changed += not torch.equal(output, _normalised(RESIZE(image)))
    assert changed >= 3  # it does change images
    # probability 0: the step is left out and draws nothing, so the erasing after it is the one without it
    erasing = {**BASE, "erasing_prob": 0.5}
    for seed in range(6):
        assert torch.equal(_seeded(build_train_transform(64, 32, **erasing, **{option: 0.0}), image, seed),
                           _seeded(build_train_transform(64, 32, **erasing), image, seed))


def test_colour_jitter_brightness_scales_every_pixel_by_one_factor_in_its_range() -> None:
    """ColorJitter(brightness=b) alone multiplies the image by one factor f ~ U[1 − b, 1 + b] (PIL rounds each
    pixel to an integer): a flat grey image of 100 stays flat at round(100·f) ∈ [80, 120] for b = 0.2."""
    grey = Image.new("RGB", (32, 64), (100, 100, 100))
    transform = build_train_transform(64, 32, **BASE, colour_jitter_prob=1.0, colour_jitter=(0.2, 0, 0, 0))
    values = set()
    for seed in range(20):
        pixels = _seeded(transform, grey, seed) * torch.tensor(pixel_scale(IMAGENET_STD))[:, None, None] \
            + torch.tensor(pixel_scale(IMAGENET_MEAN))[:, None, None]
        value = pixels.round()
        assert (value == value[0, 0, 0]).all() and 80 <= value[0, 0, 0] <= 120
        values.add(int(value[0, 0, 0]))
    assert len(values) > 10


def _torchreid_transforms():
    import importlib.util

    spec = importlib.util.find_spec("torchreid")
    if spec is None:
        pytest.skip("torchreid is not installed (pip install --no-deps torchreid==0.2.5)")
    source = Path(spec.submodule_search_locations[0]) / "reid" / "data" / "transforms.py"
    module_spec = importlib.util.spec_from_file_location("torchreid_data_transforms", source)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # needs only torch, torchvision and PIL
    return module


def test_translation_is_torchreids_random_2d_translation_at_the_same_offset() -> None:
    """Torchreid's Random2DTranslation(64, 32, p=1) draws with Python's `random`: replaying its draws gives its
    offset; reidkit's translation at that offset gives its pixels exactly (a 36×72 bilinear enlargement, cropped)."""
    torchreid = _torchreid_transforms()
    image = RESIZE(_photo(3))  # Torchreid translates the resized image
    ours = RandomTranslation(p=1.0, interpolation="bilinear")
    offsets = set()
    for seed in range(8):
        random.seed(seed)
        theirs = torchreid.Random2DTranslation(64, 32, p=1.0)(image)
        random.seed(seed)
        random.uniform(0, 1)
        left, top = int(round(random.uniform(0, 36 - 32))), int(round(random.uniform(0, 72 - 64)))
        translated = ours.transform(image, {"size": (72, 36), "top": top, "left": left})
        assert np.array_equal(np.asarray(translated), np.asarray(theirs)), seed
        offsets.add((top, left))
    assert len(offsets) > 4
    # by hand: red rows 0–31 over blue rows 32–63; enlarged to 72 rows the edge lies at row 36, so a crop at
    # top t puts it at 36 − t (one blended row either side of it)
    halves = Image.fromarray(np.concatenate([np.full((32, 32, 3), (255, 0, 0)), np.full((32, 32, 3), (0, 0, 255))])
                             .astype(np.uint8))
    for top, edge in ((0, 36), (5, 31), (8, 28)):
        rows = np.asarray(ours.transform(halves, {"size": (72, 36), "top": top, "left": 2}))[:, :, 0]
        assert (rows[:edge - 1] == 255).all() and (rows[edge + 1:] == 0).all(), top


def test_translation_offsets_are_drawn_from_the_seed_within_the_enlargement() -> None:
    ours = RandomTranslation(p=0.5)
    params = []
    for seed in range(200):
        torch.manual_seed(seed)
        params.append(ours.make_params([Image.new("RGB", (32, 64))]))
    moved = [p for p in params if p["size"] is not None]
    assert 70 < len(moved) < 130 and all(p["size"] == (72, 36) for p in moved)
    assert {p["top"] for p in moved} == set(range(9)) and {p["left"] for p in moved} == set(range(5))
    torch.manual_seed(7)
    first = ours.make_params([Image.new("RGB", (32, 64))])
    torch.manual_seed(7)
    assert ours.make_params([Image.new("RGB", (32, 64))]) == first


def test_erasing_fills_as_each_peer() -> None:
    """pixel_mean: the mean colour, 0 after normalisation (fast-reid's PIXEL_MEAN on 0–255 pixels);
    normalised_mean: the mean's numbers in the normalised tensor (Torchreid's RandomErasing(mean=norm_mean))."""
    image = _photo(5)
    unerased = _normalised(RESIZE(image))
    for fill, value in (("pixel_mean", torch.zeros(3)), ("normalised_mean", torch.tensor(IMAGENET_MEAN))):
        transform = build_train_transform(64, 32, **{**BASE, "erasing_prob": 1.0}, erasing_fill=fill)
        erased = _seeded(transform, image, 1)
        changed = (erased != unerased).any(dim=0)
        assert changed.sum() > 0.02 * 64 * 32 * 0.9
        assert torch.equal(erased[:, changed], value[:, None].expand(3, int(changed.sum())))
    with pytest.raises(ValueError, match="erasing fill must be one of pixel_mean, normalised_mean"):
        build_train_transform(64, 32, erasing_fill="zero")


@pytest.mark.parametrize("override, message", [
    ("data.autoaugment_prob=1.5", "data.autoaugment_prob: 1.5 is not allowed; use a probability in [0, 1]"),
    ("data.random_patch_prob=-0.1", "data.random_patch_prob: -0.1 is not allowed"),
    ("data.colour_jitter_hue=0.7", "data.colour_jitter_hue: 0.7 is not allowed; use a hue shift in [0, 0.5]"),
    ("data.colour_jitter_brightness=-1.0", "data.colour_jitter_brightness: -1.0 is not allowed"),
    ("data.interpolation=nearest", "data.interpolation"),
    ("data.erasing_fill=zero", "data.erasing_fill"),
])
def test_bad_augmentation_settings_are_one_config_error(override, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


@pytest.mark.parametrize("cache", ["memory", "device"])
def test_pil_only_augmentations_refuse_a_batched_cache(cache) -> None:
    with pytest.raises(ConfigError, match=re.escape(
            f"data.augmix_prob=0.5 augments PIL images one at a time, which data.cache={cache} (whole batches of "
            "decoded images) cannot do; set data.cache=none or auto")):
        load_config(None, ["data.augmix_prob=0.5", f"data.cache={cache}"])
    assert load_config(None, ["data.random_patch_prob=0.5", f"data.cache={cache}"]).data.cache == cache  # batched
    assert load_config(None, ["data.translate_prob=0.5"]).data.pil_only_augmentations() == ["translate_prob"]
