"""Tests for the on-disk data set layouts in reidkit.data.datasets."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reidkit.data.datasets import (
    ReidDataset,
    load_attributes_csv,
    load_dataset,
    load_dukemtmc,
    load_folder,
    load_market1501,
    load_msmt17,
)
from reidkit.data.loading import ImageDataset, build_test_loader, build_train_loader
from reidkit.data.transforms import build_test_transform, build_train_transform
from reidkit.errors import DatasetError


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 8), (120, 30, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


JPEG = _jpeg_bytes()


def _write(root: Path, relative: str, content: bytes = JPEG) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def _names(samples: list[tuple[str, int, int]]) -> list[str]:
    return [Path(path).name for path, _, _ in samples]


@pytest.fixture
def market_root(tmp_path: Path) -> Path:
    files = {
        "bounding_box_train": [
            "0007_c2s1_000100_01.jpg", "0002_c1s1_000451_03.jpg", "0002_c3s1_000500_01.JPG",
            "-1_c1s1_000001_00.jpg", "0010_c6s2_000300_02.png",
        ],
        "query": ["0003_c1s1_000010_00.jpg", "0004_c2s1_000020_00.jpg"],
        "bounding_box_test": [
            "0003_c4s1_000011_00.jpg", "0000_c1s1_000012_00.jpg", "-1_c2s1_000013_00.jpg",
            "0004_c5s1_000014_00.jpeg",
        ],
    }
    for folder, names in files.items():
        for name in names:
            _write(tmp_path, f"{folder}/{name}")
    (tmp_path / "bounding_box_train" / "Thumbs.db").write_bytes(b"not an image")
    return tmp_path


def test_market_parses_relabels_and_drops_junk(market_root: Path) -> None:
    data = load_market1501(str(market_root))
    assert data.name == "market1501"
    # Sorted by file name; junk -1 dropped; pids 2, 7, 10 relabelled 0, 1, 2 in raw-pid order.
    assert _names(data.train) == [
        "0002_c1s1_000451_03.jpg", "0002_c3s1_000500_01.JPG", "0007_c2s1_000100_01.jpg", "0010_c6s2_000300_02.png",
    ]
    assert [(pid, camid) for _, pid, camid in data.train] == [(0, 0), (0, 2), (1, 1), (2, 5)]
    assert data.train_raw_pids == [2, 7, 10]
    assert data.num_train_pids == 3
    assert data.num_train_cams == 4
    assert [(pid, camid) for _, pid, camid in data.query] == [(3, 0), (4, 1)]
    # Gallery keeps raw pids and the distractor 0, drops junk -1.
    assert [(pid, camid) for _, pid, camid in data.gallery] == [(0, 0), (3, 3), (4, 4)]
    assert all(Path(path).is_file() for path, _, _ in data.train + data.query + data.gallery)


def test_market_summary_table(market_root: Path) -> None:
    lines = load_market1501(str(market_root)).summary().splitlines()
    assert lines == [
        "market1501     | ids | images | cameras",
        "train          |   3 |      4 |       4",
        "query          |   2 |      2 |       2",
        "gallery        |   3 |      3 |       3",
    ]


def test_market_wrong_root_lists_expected_and_found(tmp_path: Path) -> None:
    (tmp_path / "Market-1501-v15.09.15").mkdir()
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DatasetError) as info:
        load_market1501(str(tmp_path))
    message = str(info.value)
    for expected in ("bounding_box_train", "bounding_box_test", "query", "Market-1501-v15.09.15/", "readme.txt"):
        assert expected in message
    assert "data.root" in message


def test_missing_root_says_it_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_market1501(str(tmp_path / "nowhere"))


def test_market_unparsable_name_names_file_and_pattern(market_root: Path) -> None:
    _write(market_root, "query/person_3.jpg")
    with pytest.raises(DatasetError) as info:
        load_market1501(str(market_root))
    assert "person_3.jpg" in str(info.value)
    assert "0002_c1s1_000451_03.jpg" in str(info.value)


def test_market_empty_split(market_root: Path) -> None:
    for path in (market_root / "query").iterdir():
        path.unlink()
    with pytest.raises(DatasetError, match="no usable images"):
        load_market1501(str(market_root))


def test_dukemtmc_names(tmp_path: Path) -> None:
    for name in ("bounding_box_train/0005_c2_f0046985.jpg", "bounding_box_train/0001_c8_f0000001.jpg",
                 "query/0009_c3_f0000002.jpg", "bounding_box_test/0009_c7_f0000003.jpg"):
        _write(tmp_path, name)
    data = load_dukemtmc(str(tmp_path))
    assert data.name == "dukemtmc"
    assert [(pid, camid) for _, pid, camid in data.train] == [(0, 7), (1, 1)]
    assert data.train_raw_pids == [1, 5]
    assert [(pid, camid) for _, pid, camid in data.gallery] == [(9, 6)]


def test_two_digit_camera_numbers_are_read_whole(tmp_path: Path) -> None:
    """`_c13` is camera 13 (0-based 12), not camera 1: a multi-digit camera must not merge with camera 1."""
    for name in ("bounding_box_train/0005_c12_f0046985.jpg", "bounding_box_train/0005_c1_f0000001.jpg",
                 "query/0009_c13s1_000002_00.jpg", "bounding_box_test/0009_c1s1_000003_00.jpg"):
        _write(tmp_path, name)
    data = load_dukemtmc(str(tmp_path))
    assert sorted(camid for _, _, camid in data.train) == [0, 11]
    assert [camid for _, _, camid in data.query] == [12] and [camid for _, _, camid in data.gallery] == [0]


def _write_msmt(root: Path, train_folder: str = "train", test_folder: str = "test") -> None:
    lists = {
        "list_train.txt": (train_folder, ["0002/0002_001_03_0303morning_0001_0.jpg 2",
                                           "0000/0000_002_01_0303morning_0002_0.jpg 0"]),
        "list_val.txt": (train_folder, ["0002/0002_003_15_0303noon_0003_0.jpg 2",
                                         "0005/0005_004_02_0303noon_0004_0.jpg 5"]),
        "list_query.txt": (test_folder, ["0100/0100_005_04_0303afternoon_0005_0.jpg 100"]),
        "list_gallery.txt": (test_folder, ["0100/0100_006_07_0303afternoon_0006_0.jpg 100", ""]),
    }
    for list_name, (folder, lines) in lists.items():
        (root / list_name).write_text("\n".join(lines) + "\n")
        for line in filter(None, lines):
            _write(root, f"{folder}/{line.split()[0]}")


@pytest.mark.parametrize("folders", [("train", "test"), ("mask_train_v2", "mask_test_v2")])
def test_msmt17_lists_without_val(tmp_path: Path, folders: tuple[str, str]) -> None:
    _write_msmt(tmp_path, *folders)
    data = load_msmt17(str(tmp_path))
    assert [(Path(path).parent.parent.name, pid, camid) for path, pid, camid in data.train] == [
        (folders[0], 1, 2), (folders[0], 0, 0),
    ]
    assert data.train_raw_pids == [0, 2]
    assert [(pid, camid) for _, pid, camid in data.query] == [(100, 3)]
    assert [(pid, camid) for _, pid, camid in data.gallery] == [(100, 6)]
    assert Path(data.query[0][0]).parent.parent.name == folders[1]


def test_msmt17_merge_val(tmp_path: Path) -> None:
    _write_msmt(tmp_path)
    data = load_dataset("msmt17", str(tmp_path), merge_val=True)
    assert data.train_raw_pids == [0, 2, 5]
    assert [(pid, camid) for _, pid, camid in data.train] == [(1, 2), (0, 0), (1, 14), (2, 1)]


def test_msmt17_errors(tmp_path: Path) -> None:
    _write_msmt(tmp_path)
    (tmp_path / "list_query.txt").write_text("0100/0100_005_04_x.jpg 100\nbad-line\n")
    with pytest.raises(DatasetError, match=r"list_query.txt line 2"):
        load_msmt17(str(tmp_path))
    (tmp_path / "list_gallery.txt").unlink()
    with pytest.raises(DatasetError) as info:
        load_msmt17(str(tmp_path))
    assert "list_gallery.txt" in str(info.value) and "list_train.txt" in str(info.value)


def test_msmt17_listed_image_missing(tmp_path: Path) -> None:
    _write_msmt(tmp_path)
    (tmp_path / "list_query.txt").write_text("0100/0100_009_04_x_0001_0.jpg 100\n")
    with pytest.raises(DatasetError, match="does not exist"):
        load_msmt17(str(tmp_path))


def test_folder_layout(tmp_path: Path) -> None:
    for name in ("train/12/1_a.jpg", "train/12/2_b.jpg", "train/3/1_c.png",
                 "query/40/1_q.jpg", "gallery/40/2_g.jpg", "gallery/41/3_h.jpg"):
        _write(tmp_path, name)
    data = load_folder(str(tmp_path))
    assert data.train_raw_pids == [3, 12]
    assert sorted((pid, camid) for _, pid, camid in data.train) == [(0, 0), (1, 0), (1, 1)]
    assert [(pid, camid) for _, pid, camid in data.gallery] == [(40, 1), (41, 2)]


def test_folder_layout_csv(tmp_path: Path) -> None:
    for name in ("images/a.jpg", "images/b.jpg", "images/c.jpg"):
        _write(tmp_path, name)
    (tmp_path / "train.csv").write_text("path,pid,camid\nimages/a.jpg,7,1\nimages/b.jpg,9,2\n")
    (tmp_path / "query.csv").write_text("path,pid,camid\nimages/c.jpg,20,3\n")
    (tmp_path / "gallery.csv").write_text("path,pid,camid\nimages/a.jpg,20,1\n")
    data = load_dataset("folder", str(tmp_path))
    assert [(Path(path).name, pid, camid) for path, pid, camid in data.train] == [("a.jpg", 0, 0), ("b.jpg", 1, 1)]
    assert data.train_raw_pids == [7, 9]
    assert [(pid, camid) for _, pid, camid in data.query] == [(20, 2)]


def test_folder_layout_errors(tmp_path: Path) -> None:
    _write(tmp_path, "train/12/1_a.jpg")
    with pytest.raises(DatasetError) as info:
        load_folder(str(tmp_path))
    assert "query" in str(info.value) and "train/" in str(info.value)
    _write(tmp_path, "query/abc/1_a.jpg")
    with pytest.raises(DatasetError, match="not an integer"):
        load_folder(str(tmp_path))
    (tmp_path / "query" / "abc" / "1_a.jpg").rename(tmp_path / "query" / "abc" / "x_a.jpg")
    (tmp_path / "query" / "abc").rename(tmp_path / "query" / "5")
    with pytest.raises(DatasetError, match="x_a.jpg"):
        load_folder(str(tmp_path))
    (tmp_path / "gallery.csv").write_text("path,pid\ntrain/12/1_a.jpg,1\n")
    (tmp_path / "query" / "5" / "x_a.jpg").rename(tmp_path / "query" / "5" / "1_a.jpg")
    with pytest.raises(DatasetError, match="line 1"):
        load_folder(str(tmp_path))
    (tmp_path / "gallery.csv").write_text("path,pid,camid\ntrain/12/missing.jpg,1,1\n")
    with pytest.raises(DatasetError, match="line 2.*does not exist"):
        load_folder(str(tmp_path))


def test_load_dataset_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset("market", str(tmp_path))
    for choice in ("market1501", "dukemtmc", "msmt17", "folder"):
        assert choice in str(info.value)


def test_train_pids_must_be_labels() -> None:
    with pytest.raises(DatasetError, match="relabel"):
        ReidDataset("x", "/x", [("a.jpg", 5, 0)], [], [], train_raw_pids=[5])


def test_attributes_csv(tmp_path: Path) -> None:
    path = tmp_path / "attributes.csv"
    path.write_text("pid,gender,age\n2,0,3\n7,1,1\n")
    assert load_attributes_csv(str(path)) == {2: {"gender": 0, "age": 3}, 7: {"gender": 1, "age": 1}}
    path.write_text("id,gender\n2,0\n")
    with pytest.raises(DatasetError, match="line 1"):
        load_attributes_csv(str(path))
    path.write_text("pid,gender,age\n2,0,3\n7,male,1\n")
    with pytest.raises(DatasetError, match="line 3"):
        load_attributes_csv(str(path))
    path.write_text("pid,gender\n2,0\n2,1\n")
    with pytest.raises(DatasetError, match="appears twice"):
        load_attributes_csv(str(path))


def _write_random_images(root: Path, pids: list[int]) -> list[tuple[str, int, int]]:
    """Write one small random-noise JPEG per entry of pids; return train samples."""
    generator = torch.Generator().manual_seed(0)
    samples = []
    for index, pid in enumerate(pids):
        pixels = torch.randint(0, 256, (12, 6, 3), generator=generator, dtype=torch.uint8).numpy()
        path = root / f"{pid:04d}_c1s1_{index:06d}_00.jpg"
        Image.fromarray(pixels).save(path)
        samples.append((str(path), pid, 0))
    return samples


@pytest.mark.parametrize("workers", [0, 2])
def test_train_loader_is_reproducible(tmp_path: Path, workers: int) -> None:
    samples = _write_random_images(tmp_path, [pid for pid in range(6) for _ in range(2)])
    transform = build_train_transform(8, 4, pad=1)

    def epochs(global_seed: int) -> list[dict[str, torch.Tensor]]:
        torch.manual_seed(global_seed)  # ignored: each image's augmentation is seeded from (seed, epoch, batch, slot)
        loader = build_train_loader(samples, transform, p=2, k=2, seed=7, workers=workers)
        batches = []
        for epoch in range(2):
            loader.batch_sampler.set_epoch(epoch)
            batches += list(loader)
        return batches

    first, second = epochs(123), epochs(999)
    assert len(first) == len(second) == 2 * 3
    for a, b in zip(first, second):
        assert a["images"].shape == (4, 3, 8, 4)
        assert torch.equal(a["indices"], b["indices"]) and torch.equal(a["images"], b["images"])
        assert torch.equal(a["pids"], b["pids"]) and a["pids"].unique().numel() == 2
    order = [batch["indices"].tolist() for batch in first]
    assert order[:3] != order[3:]  # a new order each epoch


def test_train_batches_ignore_workers_and_the_global_rng(tmp_path: Path) -> None:
    """Same seed ⇒ bitwise-equal batches with 0 or 2 workers, whatever the global torch/random/NumPy state
    between building the loader and iterating it: each image's augmentation comes from its own seed."""
    samples = _write_random_images(tmp_path, [pid for pid in range(4) for _ in range(2)])
    transform = build_train_transform(8, 4, pad=1)

    def batches(workers: int, global_seed: int) -> list[dict[str, torch.Tensor]]:
        torch.manual_seed(1000 + global_seed)
        loader = build_train_loader(samples, transform, p=2, k=2, seed=7, workers=workers)
        torch.manual_seed(global_seed)
        random.seed(global_seed)
        np.random.seed(global_seed)
        loader.batch_sampler.set_epoch(1)
        return list(loader)

    reference = batches(0, 1)
    assert len(reference) == 2
    for workers, global_seed in [(0, 999), (2, 999), (2, 1)]:
        for a, b in zip(reference, batches(workers, global_seed), strict=True):
            assert torch.equal(a["indices"], b["indices"]) and torch.equal(a["images"], b["images"])
    # The augmentation is really random (else the equalities above could not fail): one image, 8 seeds.
    dataset = ImageDataset(samples, transform)
    assert len({dataset[(0, seed)]["images"].numpy().tobytes() for seed in range(8)}) > 1


def test_test_loader_keeps_order(tmp_path: Path) -> None:
    samples = _write_random_images(tmp_path, [5, 6, 7])
    batches = list(build_test_loader(samples, build_test_transform(8, 4), batch_size=2, workers=0))
    assert [batch["indices"].tolist() for batch in batches] == [[0, 1], [2]]
    assert batches[0]["pids"].tolist() == [5, 6] and batches[1]["camids"].tolist() == [0]


@pytest.mark.parametrize("content", [b"", b"not a jpeg", JPEG[: len(JPEG) // 2]])
def test_corrupt_image_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "0001_c1s1_000001_00.jpg"
    path.write_bytes(content)
    dataset = ImageDataset([(str(path), 1, 0)], build_test_transform(8, 4))
    with pytest.raises(DatasetError, match="0001_c1s1_000001_00.jpg.*delete or replace"):
        dataset[0]


# --- Ids in ASCII digits of bounded length, UTF-8 lists (issue 23, item 5): one rule for every parser ----------

def _image_name_case(folder_names: dict[str, str], load, named: str = ""):
    """A layout case whose id sits in the name of the image written at `folder_names["bad"]` (or of the folder
    `named`, which the error then names)."""
    def make(root: Path, text: str):
        for relative in folder_names.values():
            _write(root, relative.replace("ID", text))
        return load, str(Path(named.replace("ID", text))) if named else Path(folder_names["bad"].replace("ID", text)).name
    return make


def _list_case(files: dict[str, str], images: list[str], load, bad_file: str):
    """A layout case whose id sits in a list/CSV file; `ID` is the id's text, `BYTES` a byte that is not UTF-8."""
    def make(root: Path, text: str):
        for relative in images:
            _write(root, relative)
        for relative, content in files.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(content.replace("ID", text).encode("utf-8")
                                          .replace(b"BYTES", b"\xff" if text == "BYTES" else text.encode()))
        return load, f"{bad_file} line 2"
    return make


def _market_like(folders: tuple[str, str, str], bad: str, good: str):
    return {"bad": f"{folders[0]}/{bad}", "train": f"{folders[0]}/{good}", "test": f"{folders[1]}/{good}",
            "query": f"{folders[2]}/{good}"}


def _vehicleid(root: str):
    from reidkit.data.vehicles import load_vehicleid

    return load_vehicleid(root)


def _veri(root: str):
    from reidkit.data.vehicles import load_veri776

    return load_veri776(root)


def _cuhk03_images(root: str):
    from reidkit.data.cuhk03 import _parse_image_dir

    return _parse_image_dir(Path(root) / "images_labeled")


MARKET_FOLDERS = ("bounding_box_train", "bounding_box_test", "query")
ID_CASES = {
    "market pid": _image_name_case(_market_like(MARKET_FOLDERS, "ID_c1s1_000001_00.jpg", "0002_c1s1_0_00.jpg"),
                                   load_market1501),
    "market camera": _image_name_case(_market_like(MARKET_FOLDERS, "0003_cIDs1_000001_00.jpg", "0002_c1s1_0_00.jpg"),
                                      load_market1501),
    "veri776 vehicle": _image_name_case(_market_like(("image_train", "image_test", "image_query"),
                                                     "ID_c001_00016450_0.jpg", "0002_c001_0_0.jpg"), _veri),
    "folder pid": _image_name_case({"bad": "train/ID/1_a.jpg", "query": "query/4/1_q.jpg",
                                    "gallery": "gallery/4/2_g.jpg"}, load_folder, named="train/ID"),
    "folder camera": _image_name_case({"bad": "train/5/ID_a.jpg", "query": "query/4/1_q.jpg",
                                       "gallery": "gallery/4/2_g.jpg"}, load_folder),
    "cuhk03 image": _image_name_case({"bad": "images_labeled/ID_001_1_01.png"}, _cuhk03_images),
    "msmt17 pid": _list_case({f"list_{split}.txt": "0002/0002_001_03_0303m_0001_0.jpg 2\n0002/0002_001_03_x.jpg ID\n"
                              for split in ("train", "val", "query", "gallery")},
                             ["train/0002/0002_001_03_0303m_0001_0.jpg", "test/0002/0002_001_03_0303m_0001_0.jpg"],
                             load_msmt17, "list_train.txt"),
    "msmt17 camera": _list_case({f"list_{split}.txt": "0002/0002_001_03_0303m_0001_0.jpg 2\n0002/0002_001_ID_x.jpg 2\n"
                                 for split in ("train", "val", "query", "gallery")},
                                ["train/0002/0002_001_03_0303m_0001_0.jpg", "test/0002/0002_001_03_0303m_0001_0.jpg"],
                                load_msmt17, "list_train.txt"),
    "folder csv": _list_case({f"{split}.csv": "path,pid,camid\nimages/a.jpg,ID,1\n"
                              for split in ("train", "query", "gallery")}, ["images/a.jpg"], load_folder, "train.csv"),
    "vehicleid list": _list_case({"train_test_split/train_list.txt": "0000001 3\n0000002 ID\n",
                                  "train_test_split/test_list_800.txt": "0000001 3\n"}, ["image/0000001.jpg"],
                                 _vehicleid, "train_list.txt"),
    "attributes csv": _list_case({"attributes.csv": "pid,gender\nID,1\n"}, [],
                                 lambda root: load_attributes_csv(Path(root) / "attributes.csv"), "attributes.csv"),
}
BAD_IDS = {"superscript two": "²", "Arabic-Indic twelve": "١٢", "fullwidth five": "５", "23 digits": "1" * 23}
TEXT_ONLY = ("msmt17 pid", "folder csv", "vehicleid list", "attributes csv")  # a byte that is not UTF-8 is a file's


@pytest.mark.parametrize("case, text", [
    *[pytest.param(case, text, id=f"{case}-{name}") for case in ID_CASES for name, text in BAD_IDS.items()],
    *[pytest.param(case, "BYTES", id=f"{case}-not UTF-8") for case in TEXT_ONLY]])
def test_every_parser_reads_ids_as_ascii_digits_of_bounded_length(tmp_path, case, text):
    load, where = ID_CASES[case](tmp_path, "7")
    load(str(tmp_path))  # the same case with a plain id loads
    bad = tmp_path / "bad"
    load, where = ID_CASES[case](bad, text)
    with pytest.raises(DatasetError) as info:
        load(str(bad))
    message = str(info.value)
    assert where in message and "\n" not in message
    assert ("UTF-8" if text == "BYTES" else "ASCII digits 0-9, at most") in message


@pytest.mark.parametrize("value", ["²", "١٢", "1" * 23, 1e30, float("inf"), 2.5])
def test_attribute_mat_ids_are_ascii_digits_or_whole_numbers_of_bounded_size(value):
    from reidkit.data.attributes import _identity_ids

    assert _identity_ids(np.array(["0002", 7.0], dtype=object), "f.mat: x.image_index") == [2, 7]
    with pytest.raises(DatasetError, match=r"f.mat: x.image_index: expected identity ids"):
        _identity_ids(np.array([value], dtype=object), "f.mat: x.image_index")
