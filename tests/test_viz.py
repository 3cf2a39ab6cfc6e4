"""Tests of reidkit.viz: ranked-list pictures and curve plots."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from reidkit.viz import curves, ranked
from reidkit.viz.curves import plot_cmc, plot_training_curves
from reidkit.metrics.ranked_lists import rank_distances
from reidkit.viz.ranked import save_ranked_lists

# Solid-colour images of different sizes, so a pasted cell shows which sample it came from.
COLORS = [(200, 200, 0), (0, 200, 200), (200, 0, 200), (90, 90, 90), (250, 150, 50), (10, 60, 120)]
SIZES = [(30, 60), (64, 128), (50, 90), (64, 128), (20, 70), (64, 128)]


@pytest.fixture
def samples(tmp_path):
    paths = []
    for i, (color, size) in enumerate(zip(COLORS, SIZES)):
        path = tmp_path / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", size, color).save(path)
        paths.append(str(path))
    # Query 0: pid 1, camera 0 (image 5). Gallery (index: pid, camera, distance to query 0):
    #   g0: 1, c0, 0.00 junk (same pid and camera)   g3: -1, c1, 0.05 junk (pid -1)
    #   g1: 2, c1, 0.10 -> rank 1, red               g4:  0, c2, 0.30 -> rank 3, red
    #   g2: 1, c1, 0.20 -> rank 2, green
    gallery = [(paths[0], 1, 0), (paths[1], 2, 1), (paths[2], 1, 1), (paths[3], -1, 1), (paths[4], 0, 2)]
    # Query 1 (pid 9) has no match, query 2 (pid 2, camera 2) matches g1: valid queries are 0 and 2.
    query = [(paths[5], 1, 0), (paths[5], 9, 0), (paths[5], 2, 2)]
    distmat = np.array([[0.0, 0.1, 0.2, 0.05, 0.3], [0.1] * 5, [0.4, 0.3, 0.2, 0.1, 0.0]])
    return distmat, query, gallery


def lists(distmat, query, gallery, junk="market", top_k=10):
    """The ranked lists `save_ranked_lists` draws, from a whole distance matrix."""
    labels = [np.array([s[i] for s in samples]) for samples, i in ((query, 1), (gallery, 1), (query, 2), (gallery, 2))]
    return rank_distances(distmat, *labels, junk=junk, top_k=top_k)


def pixel(picture, column, dx, dy):
    x, y = ranked._cell_origin(column)
    return picture.getpixel((x + dx, y + dy))


# Offsets from a cell's origin: the middle of the pasted image, and a pixel of the frame's right edge.
CENTER = (ranked.FRAME + ranked.CELL_SIZE[0] // 2, ranked.FRAME + ranked.CELL_SIZE[1] // 2)
RIGHT_EDGE = (ranked.FRAME + ranked.CELL_SIZE[0], ranked.FRAME + ranked.CELL_SIZE[1] // 2)
RED, GREEN, BLUE = ranked.NON_MATCH_COLOR, ranked.MATCH_COLOR, ranked.QUERY_COLOR


def test_ranked_list_frames_images_and_size(samples, tmp_path):
    distmat, query, gallery = samples
    paths = save_ranked_lists(lists(distmat, query, gallery), query, gallery, tmp_path / "ranked", query_indices=[0],
                              topk=3)
    assert [p.name for p in paths] == ["query_00000.png"]
    picture = Image.open(paths[0]).convert("RGB")
    right = ranked._cell_origin(3)[0] + ranked.CELL_SIZE[0] + 2 * ranked.FRAME
    assert picture.width > right and picture.height > ranked.CELL_SIZE[1] + 2 * ranked.FRAME
    for column, (frame_color, image_index) in enumerate([(BLUE, 5), (RED, 1), (GREEN, 2), (RED, 4)]):
        assert pixel(picture, column, 1, 1) == frame_color
        assert pixel(picture, column, *RIGHT_EDGE) == frame_color
        assert pixel(picture, column, *CENTER) == COLORS[image_index]


def test_ranked_list_without_junk_removal(samples, tmp_path):
    distmat, query, gallery = samples
    paths = save_ranked_lists(lists(torch.from_numpy(distmat), query, gallery, junk="none"), query, gallery, tmp_path,
                              query_indices=[0], topk=2)
    picture = Image.open(paths[0]).convert("RGB")
    # Order g0 (0.00, same pid: green), g3 (0.05, pid -1: red).
    assert pixel(picture, 1, 1, 1) == GREEN and pixel(picture, 1, *CENTER) == COLORS[0]
    assert pixel(picture, 2, 1, 1) == RED and pixel(picture, 2, *CENTER) == COLORS[3]


def test_default_queries_are_valid_ones_and_pictures_share_a_size(samples, tmp_path):
    distmat, query, gallery = samples
    paths = save_ranked_lists(lists(distmat, query, gallery), query, gallery, tmp_path / "out", num_queries=5, topk=4)
    assert [p.name for p in paths] == ["query_00000.png", "query_00002.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["query_00000.png", "query_00002.png"]
    sizes = {Image.open(p).size for p in paths}
    assert len(sizes) == 1
    # Query 2 (pid 2, camera 2): g4 (0.00, pid 0) red, g3 (pid -1) removed, g2 (0.20) red, g1 (0.30) green.
    picture = Image.open(paths[1]).convert("RGB")
    assert [pixel(picture, c, 1, 1) for c in (1, 2, 3)] == [RED, RED, GREEN]
    one = save_ranked_lists(lists(distmat, query, gallery), query, gallery, tmp_path / "one", num_queries=1)
    assert one == [tmp_path / "one" / "query_00000.png"]


def test_ranked_list_as_jpeg_is_the_same_picture(samples, tmp_path):
    distmat, query, gallery = samples
    ranked_lists = lists(distmat, query, gallery)
    png = save_ranked_lists(ranked_lists, query, gallery, tmp_path / "png", query_indices=[0], topk=3)[0]
    jpeg = save_ranked_lists(ranked_lists, query, gallery, tmp_path / "jpeg", query_indices=[0], topk=3,
                             image_format="jpeg")[0]
    assert jpeg.name == "query_00000.jpg" and jpeg.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG start of image
    lossless, lossy = (np.asarray(Image.open(path).convert("RGB"), dtype=np.int16) for path in (png, jpeg))
    assert lossless.shape == lossy.shape and np.abs(lossless - lossy).mean() < 4  # quality 85 of the same picture
    with pytest.raises(ValueError, match="image_format must be one of png, jpeg"):
        save_ranked_lists(ranked_lists, query, gallery, tmp_path, query_indices=[0], image_format="gif")


def test_ranked_list_rejects_bad_arguments(samples, tmp_path):
    distmat, query, gallery = samples
    with pytest.raises(ValueError, match="for 2 queries"):
        save_ranked_lists(lists(distmat[:2], query[:2], gallery), query, gallery, tmp_path)
    with pytest.raises(ValueError, match="topk=11 but the ranked lists hold 10"):
        save_ranked_lists(lists(distmat, query, gallery), query, gallery, tmp_path, topk=11)
    with pytest.raises(ValueError, match="out of range"):
        save_ranked_lists(lists(distmat, query, gallery), query, gallery, tmp_path, query_indices=[3])


def is_png(path):
    with open(path, "rb") as handle:
        return handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_cmc_writes_png(tmp_path):
    path = plot_cmc(np.linspace(0.6, 1.0, 50), tmp_path / "plots" / "cmc.png", label="bot_r50")
    assert is_png(path)
    assert Image.open(path).size == (600, 450)
    assert is_png(plot_cmc([0.5, 0.75, 1.0], tmp_path / "short.png"))  # shorter than rank 5/10


def test_plot_training_curves_writes_png(tmp_path):
    lines = []
    for epoch in (1, 2):
        for step in (10, 20, 30):  # steps restart at each epoch
            loss_id, loss_tri = 2.0 / (epoch * step), 0.3 / epoch
            lines.append({"kind": "train", "epoch": epoch, "step": step, "lr": 3.5e-4 * epoch,
                          "loss": loss_id + loss_tri, "loss/id": loss_id, "loss/trihard": loss_tri})
        lines.append({"kind": "eval", "epoch": epoch, "rank1": 0.5 * epoch, "mAP": 0.3 * epoch, "mINP": 0.1})
    records = [json.loads(json.dumps(line)) for line in lines]
    path = plot_training_curves(records, tmp_path / "curves.png")
    assert is_png(path)
    assert Image.open(path).size == (1350, 640)  # 5 panels: loss, loss/id, loss/trihard, lr, eval -> 2 x 3
    assert is_png(plot_training_curves(records[-1:], tmp_path / "eval_only.png"))
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_training_curves([{"kind": "other"}], tmp_path / "none.png")


def test_restarting_steps_become_cumulative():
    assert curves._global_steps([10, 20, 10, 20, 5]) == [10, 20, 30, 40, 45]
    assert curves._global_steps([1, 2, 3]) == [1, 2, 3]
