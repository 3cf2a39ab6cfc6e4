"""Activation maps: where the feature comes from, drawn over the images of ranked lists and reports."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from reidkit.engine.activation import activation_of_files, feature_map_norms
from reidkit.metrics.ranked_lists import rank_distances
from reidkit.models.reid import ReidModel
from reidkit.viz.activation import colour_ramp, overlay_activation
from reidkit.viz.ranked import CELL_SIZE, save_ranked_lists

ROWS, COLUMNS = slice(10, 14), slice(1, 4)  # the region of the [16, 8] feature map the feature comes from


class KeepRegion(nn.Module):
    """Zeroes a feature map outside ROWS × COLUMNS."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(maps)
        mask[..., ROWS, COLUMNS] = 1
        return maps * mask


def _region_model() -> ReidModel:
    """Stride-2 convolution → ReLU → KeepRegion: on a 32×16 input, the feature depends only on input rows 19..28
    and columns 1..8 (the region's receptive field)."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), KeepRegion())
    return ReidModel(backbone, feat_dim=6, num_classes=3).eval()


def test_the_map_of_a_model_looking_at_one_region_peaks_there():
    model = _region_model()
    images = torch.randn(3, 3, 32, 16)
    outside = images.clone()
    outside[:, :, :16] = torch.randn(3, 3, 16, 16)  # change the top half only: far from the region
    with torch.no_grad():
        assert torch.equal(model(images)["features"], model(outside)["features"])  # the premise holds
    maps = feature_map_norms(model, images)
    assert maps.shape == (3, 32, 16) and maps.min() >= 0 and torch.allclose(maps.amax(dim=(1, 2)), torch.ones(3))
    for image_map in maps:
        row, column = divmod(int(image_map.argmax()), 16)
        assert 19 <= row <= 28 and 1 <= column <= 8  # the peak lies in the region (input coordinates)
        assert image_map[:16].max() == 0  # nothing far from it


def test_activation_of_files_reads_like_the_evaluation(tmp_path):
    model = _region_model()
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8)).save(path)
    activation = activation_of_files(model, 32, 16)
    image_map = activation(str(path))
    assert image_map.shape == (32, 16) and image_map.dtype == np.float32
    assert activation(str(path)) is image_map  # cached
    assert image_map[:16].max() == 0 and image_map[19:29, 1:9].max() == 1


def test_colour_ramp_and_overlay():
    assert colour_ramp(np.array([0.0, 1.0, 2.0])).tolist() == [[30, 60, 200], [220, 30, 30], [220, 30, 30]]
    image = Image.new("RGB", (8, 4), (100, 100, 100))
    hot_left = np.zeros((2, 4))
    hot_left[:, :2] = 1.0
    drawn = np.asarray(overlay_activation(image, hot_left, alpha=1.0)).astype(int)
    assert drawn[:, 0].tolist() == [[220, 30, 30]] * 4 and drawn[:, -1].tolist() == [[30, 60, 200]] * 4
    assert np.asarray(overlay_activation(image, hot_left, alpha=0.0)).tolist() == np.asarray(image).tolist()
    with pytest.raises(ValueError, match=r"\[h, w\] map"):
        overlay_activation(image, np.zeros(4))


def test_ranked_lists_show_the_maps_in_a_second_row(tmp_path):
    paths = []
    for index in range(3):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.new("RGB", (16, 32), (90, 90, 90)).save(paths[-1])
    query, gallery = [(paths[0], 1, 0)], [(paths[1], 1, 1), (paths[2], 2, 1)]
    ranked = rank_distances(np.array([[0.1, 0.2]]), np.array([1]), np.array([1, 2]), np.array([0]), np.array([1, 1]),
                            top_k=2)
    plain = save_ranked_lists(ranked, query, gallery, tmp_path / "plain", topk=2)[0]
    hot = np.zeros((32, 16), np.float32)
    hot[:, :8] = 1.0
    mapped = save_ranked_lists(ranked, query, gallery, tmp_path / "maps", topk=2,
                               activation=lambda path: hot)[0]
    with Image.open(plain) as a, Image.open(mapped) as b:
        assert b.width == a.width and b.height > a.height + CELL_SIZE[1]
        pixels = np.asarray(b.convert("RGB")).astype(int)
    second_row = pixels[300:500]  # the query's overlay: x 13..140 (image 0..127), y 287..542
    assert (second_row[:, 20:60, 0] > second_row[:, 20:60, 2] + 30).all()  # left half hot (red over grey)
    assert (second_row[:, 90:130, 2] > second_row[:, 90:130, 0] + 30).all()  # right half cold (blue)
    first_row = pixels[20:250, 20:130]
    assert (first_row == 90).all()  # the plain image above


class OneHotPatchTrunk(nn.Module):
    """Tokens [N, 1 + 21·10, 4] of a 21 × 10 grid (TransReID's overlapping patches at 256×128, not 16 × 8): all 0
    but the patch at (15, 7)."""

    grid_size = (21, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = torch.zeros(len(images), 1 + 21 * 10, 4)
        tokens[:, 1 + 15 * 10 + 7] = 1.0
        return tokens


def test_a_token_map_is_laid_on_the_trunks_own_grid():
    model = ReidModel(OneHotPatchTrunk(), feat_dim=4, num_classes=3).eval()
    maps = feature_map_norms(model, torch.randn(2, 3, 256, 128))
    row, column = divmod(int(maps[0].argmax()), 128)
    # patch (15, 7) of a 21 × 10 grid covers rows 15·256/21 … 16·256/21 and columns 7·12.8 … 8·12.8
    assert 15 * 256 / 21 <= row <= 16 * 256 / 21 and 7 * 12.8 <= column <= 8 * 12.8
