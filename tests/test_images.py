"""Reading images as 8-bit RGB: high-bit-depth greyscale is scaled, not clipped at 255."""

import numpy as np
import pytest
from PIL import Image

from reidkit.data.images import read_rgb, to_rgb
from reidkit.data.loading import ImageDataset
from reidkit.data.transforms import build_test_transform


def test_16_bit_png_reads_like_its_8_bit_version(tmp_path):
    grey8 = np.arange(0, 256, 8, dtype=np.uint8).reshape(4, 8)
    Image.fromarray(grey8).save(tmp_path / "grey8.png")
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # 255 → 65535
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    expected = np.repeat(grey8[..., None], 3, axis=2)
    np.testing.assert_array_equal(np.asarray(read_rgb(tmp_path / "grey16.png")), expected)
    np.testing.assert_array_equal(np.asarray(read_rgb(tmp_path / "grey8.png")), expected)
    transform = build_test_transform(8, 4)
    samples = [(str(tmp_path / "grey8.png"), 0, 0), (str(tmp_path / "grey16.png"), 0, 1)]
    dataset = ImageDataset(samples, transform)
    np.testing.assert_array_equal(dataset[0]["images"].numpy(), dataset[1]["images"].numpy())


@pytest.mark.parametrize("mode, values, expected", [
    ("I", [[0, 300], [65535, 1000]], [[0, 1], [255, 4]]),  # 32-bit integers above 255: a 16-bit range
    ("I", [[0, 7], [200, 255]], [[0, 7], [200, 255]]),  # 32-bit integers within 0..255 stay as they are
    ("F", [[0.0, 0.5], [1.0, 0.25]], [[0, 128], [255, 64]]),  # floats in [0, 1]
    ("L", [[0, 7], [200, 255]], [[0, 7], [200, 255]]),
])
def test_greyscale_modes_are_scaled_from_their_range(mode, values, expected):
    image = Image.fromarray(np.array(values, dtype=np.float32 if mode == "F" else np.int32 if mode == "I"
                                     else np.uint8), mode=mode)
    rgb = np.asarray(to_rgb(image))
    assert rgb.shape == (2, 2, 3) and (rgb == rgb[..., :1]).all()
    np.testing.assert_array_equal(rgb[..., 0], expected)


def test_out_of_range_float_image_is_refused():
    with pytest.raises(ValueError, match="save it as an 8-bit image"):
        to_rgb(Image.fromarray(np.array([[-1.0, 2.0]], dtype=np.float32), mode="F"))
