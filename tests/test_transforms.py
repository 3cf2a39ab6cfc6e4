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
