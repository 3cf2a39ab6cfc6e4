"""Tests of the procedural Market-1501-style data set and the colour-histogram baseline."""

from __future__ import annotations

import csv
import dataclasses
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidkit.data.datasets import load_market1501
from reidkit.data.synthetic import SyntheticSpec, generate_dataset
from reidkit.data.synthetic_draw import Placement, Pose, draw_person
from reidkit.data.synthetic_identity import ATTRIBUTE_NAMES, LOWER_COLOURS, UPPER_COLOURS, sample_identity
from reidkit.engine.baselines import colour_histogram_features
from reidkit.errors import ConfigError, DatasetError

TINY = SyntheticSpec(identities=8, cameras=3, images_per_identity=(4, 8), junk_fraction=0.1, distractor_fraction=0.1)
NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
FOLDERS = ("bounding_box_train", "bounding_box_test", "query")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic")
    return root, generate_dataset(root, TINY, seed=3, progress=False)


def _records(root: Path, folder: str) -> list[tuple[int, int]]:
    """(pid, camera) of every file of a split folder, checking each name."""
    records = []
    for path in sorted((root / folder).iterdir()):
        match = NAME.match(path.name)
        assert match, f"bad file name {path.name}"
        records.append((int(match.group(1)), int(match.group(2))))
    return records


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_with_any_worker_count(tiny, tmp_path):
    root, _ = tiny
    generate_dataset(tmp_path, TINY, seed=3, progress=False, workers=2)
    assert _file_bytes(tmp_path) == _file_bytes(root)


def test_different_seed_gives_different_data(tiny, tmp_path):
    root, _ = tiny
    generate_dataset(tmp_path, TINY, seed=4, progress=False)
    images = {data for name, data in _file_bytes(root).items() if name.endswith(".jpg")}
    other_images = {data for name, data in _file_bytes(tmp_path).items() if name.endswith(".jpg")}
    assert images and other_images and not images & other_images
    assert (tmp_path / "attributes.csv").read_bytes() != (root / "attributes.csv").read_bytes()


def test_layout_names_sizes_and_counts(tiny):
    root, counts = tiny
    assert sorted(p.name for p in root.iterdir()) == sorted([*FOLDERS, "attributes.csv", "synthetic.json"])
    sizes = {folder: len(_records(root, folder)) for folder in FOLDERS}
    assert sizes == {"bounding_box_train": counts["train"], "bounding_box_test": counts["gallery"],
                     "query": counts["query"]}
    for path in list((root / "query").iterdir())[:5]:
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (TINY.width, TINY.height))
    for pid, camera in _records(root, "bounding_box_test") + _records(root, "bounding_box_train"):
        assert 1 <= camera <= TINY.cameras and pid <= TINY.identities


def test_query_gallery_split_follows_market_protocol(tiny):
    root, counts = tiny
    train, gallery, query = (_records(root, folder) for folder in FOLDERS)
    train_pids, query_pids = {pid for pid, _ in train}, {pid for pid, _ in query}
    gallery_cameras = defaultdict(set)
    for pid, camera in gallery:
        gallery_cameras[pid].add(camera)
    assert len(train_pids) == counts["train_identities"] == 4 and len(query_pids) == counts["test_identities"] == 4
    assert not train_pids & query_pids and {-1, 0} & (train_pids | query_pids) == set()
    assert set(gallery_cameras) == query_pids | {-1, 0}
    assert len(query) == len(set(query)), "one query per identity and camera"
    for pid, camera in query:
        assert gallery_cameras[pid] - {camera}, f"query {pid} in camera {camera} has no cross-camera match"
    query_cameras = defaultdict(set)
    for pid, camera in query:
        query_cameras[pid].add(camera)
    assert all(len(cameras) >= 2 for cameras in query_cameras.values())
    assert counts["junk"] == sum(pid == -1 for pid, _ in gallery) > 0
    assert counts["distractors"] == sum(pid == 0 for pid, _ in gallery) > 0


def test_market_loader_reads_the_output(tiny):
    root, counts = tiny
    dataset = load_market1501(root)
    assert len(dataset.train) == counts["train"] and len(dataset.query) == counts["query"]
    assert len(dataset.gallery) == counts["gallery"] - counts["junk"]
    assert {pid for _, pid, _ in dataset.gallery} >= {0}


def test_attributes_csv_has_every_identity_with_valid_codes(tiny):
    root, _ = tiny
    with (root / "attributes.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["pid", *ATTRIBUTE_NAMES]
    table = [[int(cell) for cell in row] for row in rows[1:]]
    assert [row[0] for row in table] == list(range(1, TINY.identities + 1))
    for row in table:
        codes = dict(zip(ATTRIBUTE_NAMES, row[1:]))
        assert 1 <= codes["age"] <= 4
        assert all(codes[name] in (1, 2) for name in ATTRIBUTE_NAMES if name != "age")
        assert sum(codes[f"up{c}"] == 2 for c in UPPER_COLOURS) == 1
        assert sum(codes[f"down{c}"] == 2 for c in LOWER_COLOURS) == 1


def _clean_layer(identity, view: str = "front") -> tuple[np.ndarray, float]:
    """RGBA pixels of a clean render (no scene, camera or misalignment) and the body height in pixels."""
    placement = Placement(centre_x=0.5, top=0.06, height=0.88)
    layer = draw_person(identity, view, Pose(stride=0.0, arm_swing=0.0), (128, 256), placement)
    return np.asarray(layer), 0.88 * 256


def _dominant(pixels: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    """The palette colour nearest to most of the given RGB pixels [N, 3]."""
    names, colours = list(palette), np.asarray(list(palette.values()), dtype=np.float64)
    nearest = np.argmin(((pixels[:, None, :].astype(np.float64) - colours[None]) ** 2).sum(-1), axis=1)
    return names[np.bincount(nearest, minlength=len(names)).argmax()]


def _region(pixels: np.ndarray, unit: float, x: float, y0: float, y1: float) -> np.ndarray:
    """Opaque RGB pixels in the box |x| < x, y0 < y < y1 (body units, x about the body axis)."""
    top, centre = 0.06 * pixels.shape[0], pixels.shape[1] / 2
    box = pixels[int(top + y0 * unit):int(top + y1 * unit), int(centre - x * unit):int(centre + x * unit)]
    return box[box[..., 3] > 0][:, :3]


def test_drawn_clothing_colours_match_the_colour_attributes():
    for index in range(120):
        identity = sample_identity(np.random.default_rng([11, index]))
        pixels, unit = _clean_layer(identity)
        shoulder_y = identity.head + 0.03
        hip_y = shoulder_y + identity.torso
        upper = _region(pixels, unit, 0.9 * identity.hip, shoulder_y + 0.02, hip_y)
        lower = _region(pixels, unit, 0.7 * identity.hip, hip_y + 0.04, hip_y + 0.12)
        assert _dominant(upper, UPPER_COLOURS) == identity.upper_colour, identity
        assert _dominant(lower, LOWER_COLOURS) == identity.lower_colour, identity


def test_backpack_is_a_large_patch_from_behind_and_straps_from_the_front():
    identity = sample_identity(np.random.default_rng(5))
    identity = dataclasses.replace(identity, backpack=(150, 36, 40), bag=None, handbag=None, long_hair=False)
    shares = {}
    for view in ("back", "front"):
        pixels, unit = _clean_layer(identity, view)
        shoulder_y = identity.head + 0.03
        torso = _region(pixels, unit, 0.8 * identity.hip, shoulder_y + 0.03, shoulder_y + 0.2)
        bag_pixels = np.all(torso == (150, 36, 40), axis=1) | np.all(torso == (120, 28, 32), axis=1)  # body, straps
        shares[view] = np.mean(bag_pixels)
    assert shares["back"] > 0.6 and 0.0 < shares["front"] < 0.3


@pytest.mark.parametrize("changes", [
    {"identities": 3}, {"identities": 10_000}, {"cameras": 1}, {"cameras": 10},
    {"images_per_identity": (3, 6)}, {"images_per_identity": (9, 6)}, {"occlusion_prob": 1.5},
    {"misalignment": -0.1}, {"blur": -1.0}, {"height": 16},
])
def test_invalid_spec_raises_config_error(changes):
    with pytest.raises(ConfigError, match=next(iter(changes))):
        SyntheticSpec(**changes)


def test_refuses_foreign_non_empty_folder(tmp_path):
    (tmp_path / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(DatasetError, match="synthetic.json"):
        generate_dataset(tmp_path, TINY, progress=False)
    with pytest.raises(ValueError, match="workers"):
        generate_dataset(tmp_path / "new", TINY, progress=False, workers=0)


def test_rerun_replaces_a_previous_or_interrupted_synthetic_output(tmp_path):
    first = generate_dataset(tmp_path, TINY, seed=1, progress=False)
    stale = tmp_path / "query" / "0001_c1s1_000000_01.jpg"
    stale.write_bytes(b"stale")
    (tmp_path / "synthetic.json").rename(tmp_path / "synthetic.unfinished.json")  # as if interrupted
    second = generate_dataset(tmp_path, TINY, seed=1, progress=False)
    assert first == second and not stale.exists()
    assert (tmp_path / "synthetic.json").is_file() and not (tmp_path / "synthetic.unfinished.json").exists()


def test_colour_histogram_features_shape_norm_and_discrimination(tmp_path):
    colours = [(200, 30, 30), (200, 30, 30), (30, 30, 200)]
    paths = []
    for index, colour in enumerate(colours):
        path = tmp_path / f"{index}.jpg"
        Image.new("RGB", (64, 128), colour).save(path)
        paths.append(str(path))
    features = colour_histogram_features(paths, bins=4, stripes=6)
    assert features.shape == (3, 6 * 4 ** 3) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
    assert np.allclose(features[0], features[1]) and features[0] @ features[2] < 0.1
    with pytest.raises(ValueError, match="bins"):
        colour_histogram_features(paths, bins=0)


def test_colour_histogram_of_an_image_with_fewer_rows_than_stripes(tmp_path):
    Image.new("RGB", (2, 3), (200, 30, 30)).save(tmp_path / "short.png")  # 3 rows: stripes 0, 2, 4
    stripes = colour_histogram_features([str(tmp_path / "short.png")], bins=4, stripes=6).reshape(6, 4 ** 3)
    assert not stripes[[1, 3, 5]].any()
    for row in stripes[[0, 2, 4]]:  # one colour cell per filled stripe, 1/sqrt(3) after normalisation
        assert np.count_nonzero(row) == 1 and row.max() == pytest.approx(1 / np.sqrt(3))


def _mean_colours(root: Path) -> np.ndarray:
    """Mean RGB (0..255) over every image of a data set folder."""
    pixels = [np.asarray(Image.open(p).convert("RGB"), np.float64).reshape(-1, 3) for p in sorted(root.rglob("*.jpg"))]
    return np.concatenate(pixels).mean(axis=0)


def test_domain_b_is_a_measurably_different_deterministic_camera_family(tiny, tmp_path):
    """Same seed, same people; domain b's cameras see them dimmer and warmer (red over blue) than domain a's.
    Each domain is a pure function of the seed (byte-identical with any worker count)."""
    root_a, counts_a = tiny
    spec_b = dataclasses.replace(TINY, domain="b")
    counts_b = generate_dataset(tmp_path / "b1", spec_b, seed=3, progress=False)
    generate_dataset(tmp_path / "b2", spec_b, seed=3, progress=False, workers=2)
    assert _file_bytes(tmp_path / "b1") == _file_bytes(tmp_path / "b2")
    assert counts_b == counts_a  # the same identities and layout: only the cameras changed
    assert (tmp_path / "b1" / "attributes.csv").read_bytes() == (root_a / "attributes.csv").read_bytes()
    red_a, _, blue_a = mean_a = _mean_colours(root_a)
    red_b, _, blue_b = mean_b = _mean_colours(tmp_path / "b1")
    assert mean_b.mean() < mean_a.mean() - 10  # dimmer light
    assert (red_b - blue_b) > (red_a - blue_a) + 15  # warmer light and walls
    with pytest.raises(ConfigError, match="domain must be one of a, b"):
        SyntheticSpec(domain="c")
