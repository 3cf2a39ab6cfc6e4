"""Tests for the training and test transforms."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from reidkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_test_transform, build_train_transform


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
