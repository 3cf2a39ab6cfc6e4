"""Attribute files: the public Market-1501 / DukeMTMC-reID .mat annotations (Lin et al. 2019), written
here in their layout with scipy.io.savemat, and the .csv / .mat dispatch of `load_attributes`."""

import numpy as np
import pytest
from scipy.io import savemat

from reidkit.data.attributes import (attribute_classes, attribute_table, load_attributes, load_duke_attribute_mat,
                                     load_market_attribute_mat)
from reidkit.errors import DatasetError

MARKET_NAMES = ("age", "backpack", "bag", "handbag", "downblack", "downblue", "downbrown", "downgray",
                "downgreen", "downpink", "downpurple", "downwhite", "downyellow", "upblack", "upblue",
                "upgreen", "upgray", "uppurple", "upred", "upwhite", "upyellow", "clothes", "down", "up", "hair",
                "hat", "gender")
DUKE_NAMES = ("backpack", "bag", "handbag", "boots", "gender", "hat", "shoes", "top", "downblack", "downwhite",
              "downred", "downgray", "downblue", "downgreen", "downbrown", "upblack", "upwhite", "upred",
              "uppurple", "upgray", "upblue", "upgreen", "upbrown")


def split_struct(ids: list[str], names: tuple[str, ...], seed: int) -> dict:
    """One split as the public files hold it: a 1×N code row per attribute, then `image_index` (a cell)."""
    rng = np.random.default_rng(seed)
    fields = {name: rng.integers(1, 5 if name == "age" else 3, size=len(ids)).astype(np.uint8) for name in names}
    fields["image_index"] = np.array(ids, dtype=object)  # object array → 1×N cell of char arrays
    return fields


def write_mat(path, variable: str, train: dict, test: dict) -> None:
    savemat(path, {variable: {"test": test, "train": train}})  # the public Market file lists test first


def expected_rows(split: dict) -> dict[int, dict[str, int]]:
    names = [name for name in split if name != "image_index"]
    return {int(pid): {name: int(split[name][i]) for name in names} for i, pid in enumerate(split["image_index"])}


@pytest.fixture()
def market_file(tmp_path):
    train = split_struct(["0002", "0007", "0010"], MARKET_NAMES, seed=0)
    test = split_struct(["0001", "0003"], MARKET_NAMES, seed=1)
    path = tmp_path / "market_attribute.mat"
    write_mat(path, "market_attribute", train, test)
    return path, train, test


def test_market_file_merges_train_and_test(market_file):
    path, train, test = market_file
    attributes = load_market_attribute_mat(path)
    assert sorted(attributes) == [1, 2, 3, 7, 10]
    assert attributes == {**expected_rows(train), **expected_rows(test)}
    assert list(attributes[2]) == list(MARKET_NAMES)  # the file's field order, image_index left out
    classes = attribute_classes(attributes)
    assert classes["age"] == max(2, max(row["age"] for row in attributes.values()))
    assert all(classes[name] == 2 for name in MARKET_NAMES if name != "age")
    table = attribute_table(attributes, [7, 2])
    assert table.shape == (2, len(MARKET_NAMES))
    assert table[0, 0].item() == attributes[7]["age"] - 1


def test_duke_file_with_numeric_codes_and_char_matrix_ids(tmp_path):
    train = split_struct(["0005", "0012"], DUKE_NAMES, seed=2)
    test = split_struct(["0019"], DUKE_NAMES, seed=3)
    train["image_index"] = np.array(["0005", "0012"])  # a char matrix instead of a cell
    test["gender"] = test["gender"].astype(np.float64)  # doubles holding integers
    path = tmp_path / "duke_attribute.mat"
    write_mat(path, "duke_attribute", train, test)
    attributes = load_duke_attribute_mat(path)
    assert sorted(attributes) == [5, 12, 19]
    assert attributes[12]["boots"] == int(train["boots"][1])
    assert attributes[19]["gender"] == int(test["gender"][0])
    assert set(attributes[5]) == set(DUKE_NAMES)


def test_splits_with_attributes_in_different_orders_are_aligned_by_name(tmp_path):
    train = split_struct(["0001"], ("bag", "hat"), seed=0)
    test = {"hat": np.array([2]), "bag": np.array([1]), "image_index": np.array(["0002"], dtype=object)}
    path = tmp_path / "duke_attribute.mat"
    write_mat(path, "duke_attribute", train, test)
    attributes = load_duke_attribute_mat(path)
    assert attributes[2] == {"bag": 1, "hat": 2}
    assert list(attributes[2]) == ["bag", "hat"]


def test_load_attributes_dispatches_on_suffix_and_dataset(market_file, tmp_path):
    path, train, test = market_file
    assert load_attributes("market1501", "unused", str(path)) == load_market_attribute_mat(path)
    duke = tmp_path / "duke_attribute.mat"
    write_mat(duke, "duke_attribute", split_struct(["0001"], DUKE_NAMES, 0), split_struct(["0002"], DUKE_NAMES, 1))
    assert sorted(load_attributes("dukemtmc", "unused", str(duke))) == [1, 2]
    csv = tmp_path / "attributes.csv"
    csv.write_text("pid,gender,age\n3,1,2\n4,2,4\n")
    assert load_attributes("market1501", "unused", str(csv)) == {3: {"gender": 1, "age": 2}, 4: {"gender": 2, "age": 4}}
    assert load_attributes("market1501", "unused", "") is None
    with pytest.raises(DatasetError, match="expected a variable 'duke_attribute', found \\['market_attribute'\\]"):
        load_attributes("dukemtmc", "unused", str(path))  # the Market file given for DukeMTMC
    with pytest.raises(DatasetError, match="msmt17"):
        load_attributes("msmt17", "unused", str(path))
    with pytest.raises(DatasetError, match="expected a .csv .* or a .mat file"):
        load_attributes("market1501", "unused", str(tmp_path / "attributes.json"))


def test_synthetic_attributes_csv_is_found_under_the_root(tmp_path):
    (tmp_path / "attributes.csv").write_text("pid,hat\n1,2\n")
    assert load_attributes("synthetic", str(tmp_path), "") == {1: {"hat": 2}}


def market(train, test) -> dict:
    return {"market_attribute": {"train": train, "test": test}}


# case → (contents of the .mat file from a valid train split of pids 2, 7, 10 and test split of pid 1,
# the DatasetError message expected)
BAD_FILES = {
    "no test split": (lambda train, test: {"market_attribute": {"train": train}},
                      r"fields \['train', 'test'\], found fields \['train'\]"),
    "top level not a struct": (lambda train, test: {"market_attribute": np.zeros((2, 3))},
                               r"expected a 1×1 struct .* found a 2×3 float64 array"),
    "split not a struct": (lambda train, test: market(train, np.ones(3)), r"test: expected a 1×1 struct"),
    "no image_index": (lambda train, test: market({k: v for k, v in train.items() if k != "image_index"}, test),
                       r"train: expected a struct with fields \['image_index'\]"),
    "codes of the wrong length": (lambda train, test: market({**train, "bag": np.array([1, 2])}, test),
                                  r"train\.bag: expected a 1×3 numeric array .* found a 1×2 int64 array"),
    "fractional codes": (lambda train, test: market({**train, "bag": np.array([1.0, 1.5, 2.0])}, test),
                         r"train\.bag: expected integer codes"),
    "ids not numbers": (lambda train, test: market({**train, "image_index": np.array(["a", "b", "c"], dtype=object)},
                                                  test), r"train\.image_index: expected identity ids"),
    "no attributes": (lambda train, test: market({"image_index": train["image_index"]}, test),
                      r"expected attribute fields beside 'image_index', found none"),
    "splits with other attributes": (
        lambda train, test: market(train, {"age": test["age"], "image_index": test["image_index"]}),
        r"test has attributes \['age'\].*expected the same attributes in both splits"),
    "identity in both splits, other codes": (
        lambda train, test: market(train, {**train, "age": train["age"] % 4 + 1}),
        r"identity 2 appears in both splits with different codes"),
    "identity twice in a split, other codes": (
        lambda train, test: market({**train, "image_index": np.array(["0002", "0007", "0002"], dtype=object)}, test),
        r"identity 2 is listed twice with different codes"),
    "another variable": (lambda train, test: {"other": np.ones(1)},
                         r"expected a variable 'market_attribute', found \['other'\]"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_wrong_structure_names_what_was_expected_and_found(tmp_path, case):
    contents, message = BAD_FILES[case]
    train = split_struct(["0002", "0007", "0010"], MARKET_NAMES, seed=0)
    test = split_struct(["0001"], MARKET_NAMES, seed=1)
    path = tmp_path / "market_attribute.mat"
    savemat(path, contents(train, test))
    with pytest.raises(DatasetError, match=message):
        load_market_attribute_mat(path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_market_attribute_mat(tmp_path / "market_attribute.mat")
    broken = tmp_path / "duke_attribute.mat"
    broken.write_bytes(b"this is not a MATLAB file at all" * 8)
    with pytest.raises(DatasetError, match="cannot read .* as a MATLAB v5 file"):
        load_duke_attribute_mat(broken)
