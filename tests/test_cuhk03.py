"""Tests of reidkit.data.cuhk03 on tiny files written in the formats of the public release:
a MATLAB v7.3 (HDF5) `cuhk-03.mat` with cells as object references, and MATLAB v5 new-protocol files."""

import itertools

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from reidkit.data.cuhk03 import extract_images, load_cuhk03
from reidkit.errors import DatasetError

h5py = pytest.importorskip("h5py")

PERSONS = (4, 3, 2, 2, 1)  # identities per camera pair (the release has 843, 440, 77, 58, 49)
IDENTITIES = [(pair, person) for pair, count in enumerate(PERSONS, 1) for person in range(1, count + 1)]
EMPTY = {"labeled": {(1, 2, 7), (2, 1, 3)}, "detected": {(1, 1, 1), (3, 2, 10)}}  # (pair, person, slot)
HEIGHT, WIDTH = 5, 3


def expected_image(variant, pair, person, slot):
    """[H, W, 3] uint8 content that encodes where it came from (H != W to catch transposition)."""
    base = (0 if variant == "labeled" else 128) + 10 * pair + 3 * person + slot
    grid = np.arange(HEIGHT)[:, None, None] * 7 + np.arange(WIDTH)[None, :, None] * 2 + np.arange(3)
    return ((base + grid) % 256).astype(np.uint8)


def split_identities(k):
    """Split k of the tiny file: 3 identities, rotating through all 12."""
    return [IDENTITIES[(3 * k + i) % len(IDENTITIES)] for i in range(3)]


def write_release_mat(path):
    """`cuhk-03.mat` as MATLAB v7.3 writes it: HDF5 with a 512-byte MATLAB header, referenced arrays in
    `#refs#`, every array stored with reversed dimensions, empty cells as uint64 (0, 0)."""
    with h5py.File(path, "w", userblock_size=512) as mat:
        refs, names = mat.create_group("#refs#"), (f"r{i}" for i in itertools.count())

        def store(array, matlab_class, empty=False):
            dataset = refs.create_dataset(next(names), data=array)
            dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class)
            if empty:
                dataset.attrs["MATLAB_empty"] = np.uint8(1)
            return dataset.ref

        for variant in ("labeled", "detected"):
            pair_refs = []
            for pair, count in enumerate(PERSONS, 1):
                cell = np.empty((10, count), dtype=h5py.ref_dtype)  # MATLAB [persons x 10]
                for person, slot in itertools.product(range(1, count + 1), range(1, 11)):
                    if (pair, person, slot) in EMPTY[variant]:
                        cell[slot - 1, person - 1] = store(np.zeros(2, np.uint64), "double", empty=True)
                    else:
                        image = expected_image(variant, pair, person, slot)
                        cell[slot - 1, person - 1] = store(image.T, "uint8")  # [3, W, H]
                pair_refs.append(store(cell, "cell"))
            top = mat.create_dataset(variant, data=np.array([pair_refs], dtype=h5py.ref_dtype))  # 5x1 -> (1, 5)
            top.attrs["MATLAB_class"] = np.bytes_("cell")
        split_refs = [store(np.array(split_identities(k), np.float64).T, "double") for k in range(20)]  # [N x 2]
        mat.create_dataset("testsets", data=np.array([split_refs], dtype=h5py.ref_dtype))
    with open(path, "r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: tiny test file HDF5 schema 1.00 .")


def write_new_protocol_config(path, variant, train_ids, test_ids):
    """A v5 `cuhk03_new_protocol_config_<variant>.mat`: global labels 1..12, query = one image per test
    identity and camera (the first present), gallery = the other test images."""
    filelist, labels, cameras = [], [], []
    for label, (pair, person) in enumerate(IDENTITIES, 1):
        for slot in range(1, 11):
            if (pair, person, slot) not in EMPTY[variant]:
                camera = 1 if slot <= 5 else 2
                filelist.append(f"{pair}_{person:03d}_{camera}_{slot:02d}.png")
                labels.append(label)
                cameras.append(camera)
    train, query, gallery, seen = [], [], [], set()
    for index, (label, camera) in enumerate(zip(labels, cameras), 1):
        if IDENTITIES[label - 1] in train_ids:
            train.append(index)
        elif (label, camera) not in seen:
            seen.add((label, camera))
            query.append(index)
        else:
            gallery.append(index)
    cells = np.empty((len(filelist), 1), dtype=object)  # a MATLAB N x 1 cell of file names
    cells[:, 0] = filelist
    columns = {"labels": labels, "camId": cameras, "train_idx": train, "query_idx": query, "gallery_idx": gallery}
    savemat(path, {"filelist": cells} | {key: np.array(values, np.float64)[:, None] for key, values in columns.items()})
    return filelist, labels, cameras, train, query, gallery


@pytest.fixture()
def release_root(tmp_path):
    write_release_mat(tmp_path / "cuhk-03.mat")
    return tmp_path


@pytest.mark.parametrize("variant", ["labeled", "detected"])
def test_extraction_names_pixels_and_empty_cells(release_root, variant):
    count = extract_images(release_root / "cuhk-03.mat", variant, release_root / f"images_{variant}")
    assert count == 10 * len(IDENTITIES) - len(EMPTY[variant])
    folder = release_root / f"images_{variant}"
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == count and not (release_root / f"images_{variant}.partial").exists()
    for pair, person, slot in EMPTY[variant]:
        assert f"{pair}_{person:03d}_{1 if slot <= 5 else 2}_{slot:02d}.png" not in names
    image = np.asarray(Image.open(folder / "2_003_2_06.png"))
    np.testing.assert_array_equal(image, expected_image(variant, 2, 3, 6))


@pytest.mark.parametrize("variant", ["labeled", "detected"])
@pytest.mark.parametrize("split", [0, 5, 19])
def test_classic_split_counts_pids_and_cameras(release_root, variant, split):
    dataset = load_cuhk03(release_root, variant=variant, protocol="classic", split=split)
    test_ids = set(split_identities(split))
    assert dataset.name == f"cuhk03_{variant}_classic{split}"
    present = {(pair, person, slot) for pair, person in IDENTITIES for slot in range(1, 11)} - EMPTY[variant]
    expected_query = sorted((1000 * p + q, 0) for p, q, s in present if (p, q) in test_ids and s <= 5)
    expected_gallery = sorted((1000 * p + q, 1) for p, q, s in present if (p, q) in test_ids and s > 5)
    assert sorted((pid, cam) for _, pid, cam in dataset.query) == expected_query
    assert sorted((pid, cam) for _, pid, cam in dataset.gallery) == expected_gallery
    train_ids = sorted(set(IDENTITIES) - test_ids)
    assert dataset.num_train_pids == len(train_ids) == len(IDENTITIES) - 3
    assert dataset.train_raw_pids == [1000 * p + q for p, q in train_ids]
    assert len(dataset.train) == sum(1 for p, q, _ in present if (p, q) not in test_ids)
    for path, label, camid in dataset.train:  # relabelled pid and camera agree with the file name
        pair, person, camera, _ = (int(x) for x in path.rsplit("/", 1)[1][:-4].split("_"))
        assert dataset.train_raw_pids[label] == 1000 * pair + person and camid == camera - 1


def test_classic_split_out_of_range_and_bad_arguments(release_root):
    with pytest.raises(DatasetError, match=r"holds 20 classic test splits, so split 20 does not exist; "
                                           r"choose data.cuhk03_split in 0..19"):
        load_cuhk03(release_root, protocol="classic", split=20)
    with pytest.raises(ValueError, match="variant"):
        load_cuhk03(release_root, variant="hand")
    with pytest.raises(ValueError, match="single split"):
        load_cuhk03(release_root, protocol="new", split=1)


@pytest.mark.parametrize("variant", ["labeled", "detected"])
def test_new_protocol_from_config_and_extracted_images(release_root, variant):
    train_ids = IDENTITIES[:7]
    filelist, labels, cameras, train, query, gallery = write_new_protocol_config(
        release_root / f"cuhk03_new_protocol_config_{variant}.mat", variant, train_ids, IDENTITIES[7:])
    dataset = load_cuhk03(release_root, variant=variant)  # extracts images_<variant>/ first
    assert dataset.name == f"cuhk03_{variant}"
    assert (len(dataset.train), len(dataset.query), len(dataset.gallery)) == (len(train), len(query), len(gallery))
    assert dataset.num_train_pids == 7 and dataset.train_raw_pids == list(range(1, 8))
    assert [pid for _, pid, _ in dataset.query] == [labels[i - 1] for i in query]
    assert [cam for _, _, cam in dataset.gallery] == [cameras[i - 1] - 1 for i in gallery]
    assert [path.rsplit("/", 1)[1] for path, _, _ in dataset.gallery] == [filelist[i - 1] for i in gallery]
    assert {pid for _, pid, _ in dataset.query} == set(range(8, 13))
    assert all(path.startswith(str(release_root / f"images_{variant}")) for path, _, _ in dataset.train)
    # Once extracted, the release file is no longer needed for the new protocol.
    (release_root / "cuhk-03.mat").unlink()
    again = load_cuhk03(release_root, variant=variant)
    assert again.query == dataset.query and again.train == dataset.train


def test_release_file_in_cuhk03_release_folder_and_partial_extraction_redone(tmp_path):
    (tmp_path / "cuhk03_release").mkdir()
    write_release_mat(tmp_path / "cuhk03_release" / "cuhk-03.mat")
    (tmp_path / "images_labeled.partial").mkdir()
    (tmp_path / "images_labeled.partial" / "1_001_1_01.png").write_bytes(b"interrupted")
    dataset = load_cuhk03(tmp_path, protocol="classic", split=1)
    assert len(dataset.query) > 0 and not (tmp_path / "images_labeled.partial").exists()


def test_missing_files_name_expected_files_and_found_entries(tmp_path):
    with pytest.raises(DatasetError, match=r"cuhk-03\.mat.*found: nothing \(the folder is empty\)"):
        load_cuhk03(tmp_path, protocol="classic")
    (tmp_path / "readme.txt").write_text("wrong folder")
    with pytest.raises(DatasetError) as error:
        load_cuhk03(tmp_path, variant="detected")
    message = str(error.value)
    for expected in ("cuhk03_new_protocol_config_detected.mat", "images_detected/", "cuhk-03.mat", "readme.txt"):
        assert expected in message
    write_release_mat(tmp_path / "cuhk-03.mat")
    with pytest.raises(DatasetError, match="cuhk03_new_protocol_config_labeled.mat"):
        load_cuhk03(tmp_path)


def test_malformed_files_raise(release_root):
    write_new_protocol_config(release_root / "cuhk03_new_protocol_config_labeled.mat", "labeled",
                              IDENTITIES[:7], IDENTITIES[7:])
    (release_root / "images_labeled").mkdir()
    Image.fromarray(expected_image("labeled", 1, 1, 1)).save(release_root / "images_labeled" / "1_001_1_01.png")
    with pytest.raises(DatasetError, match="images missing from"):
        load_cuhk03(release_root)
    (release_root / "images_labeled" / "photo.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="cannot parse file name"):
        load_cuhk03(release_root, protocol="classic")
    savemat(release_root / "cuhk03_new_protocol_config_detected.mat", {"filelist": np.array(["a.png"])})
    with pytest.raises(DatasetError, match="lacks labels, camId, train_idx"):
        load_cuhk03(release_root, variant="detected")
    with h5py.File(release_root / "other.mat", "w") as mat:
        mat.create_dataset("images", data=np.zeros(2))
    with pytest.raises(DatasetError, match="no 'labeled' cell; it holds: images"):
        extract_images(release_root / "other.mat", "labeled", release_root / "out")
