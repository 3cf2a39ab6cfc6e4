"""Vehicle ReID data sets: VeRi-776 and VehicleID, as `ReidDataset`s of `(path, vehicle id, camid)`.

VeRi-776 (Liu et al., "Large-scale vehicle re-identification in urban surveillance videos", ICME 2016):
`image_train/`, `image_query/`, `image_test/` (the gallery); names `0001_c001_00016450_0.jpg` give vehicle 1
and camera 1 (camid 0). Its evaluation is the Market-1501 rule: for each query, gallery images of the same
vehicle seen by the same camera are junk (eval.junk=market).

VehicleID (Liu et al., "Deep Relative Distance Learning: Tell the Difference Between Similar Vehicles",
CVPR 2016): `image/<name>.jpg` and `train_test_split/train_list.txt` and `test_list_{800,1600,2400}.txt`
(the small, medium and large test sets), lines `<image name without .jpg> <vehicle id>`. There are no
cameras; its protocol draws one image per test vehicle as the gallery and uses all other test images as
queries, 10 times, and reports the mean (`reidkit.metrics.vehicleid.evaluate_vehicleid`, eval.protocol
"vehicleid"). Query and gallery are therefore both the whole test list here; each image's camid is its
position among its vehicle's images, so that the Market-1501 junk rule of the pictures and reports removes
exactly the query image itself.
"""

from __future__ import annotations

from pathlib import Path

from reidkit.data.datasets import ReidDataset, Sample, StrPath, _found, _load_market_layout, relabel
from reidkit.data.parsing import ID_RULE, parse_id, read_text
from reidkit.errors import DatasetError

VEHICLEID_TEST_SIZES = (800, 1600, 2400)


def load_veri776(root: StrPath) -> ReidDataset:
    """Load VeRi-776 from `<root>/{image_train,image_test,image_query}/`.

    Raises:
        DatasetError: missing folders, an empty split or a file name that does not parse.
    """
    return _load_market_layout(root, "veri776", "VeRi-776", "0001_c001_00016450_0.jpg",
                               ("image_train", "image_test", "image_query"))


def _read_vehicleid_list(list_file: Path, image_dir: Path) -> list[tuple[str, int]]:
    """(image path, vehicle id) of each `<image name> <vehicle id>` line."""
    if not list_file.is_file():
        raise DatasetError(f"VehicleID: {list_file} does not exist; found in {list_file.parent}: "
                           f"{_found(list_file.parent)}. Point data.root at the folder holding image/ and "
                           "train_test_split/.")
    entries = []
    for number, line in enumerate(read_text(list_file, "VehicleID").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        vehicle = parse_id(fields[1]) if len(fields) == 2 else None
        if vehicle is None:
            raise DatasetError(f"VehicleID: cannot parse {list_file} line {number}: {line!r}; expected "
                               f"'<image name> <vehicle id>', e.g. '0004977 2' ({ID_RULE}).")
        entries.append((str(image_dir / f"{Path(fields[0]).stem}.jpg"), vehicle))
    if not entries:
        raise DatasetError(f"VehicleID: {list_file} lists no images")
    if not Path(entries[0][0]).is_file():
        raise DatasetError(f"VehicleID: {list_file} names {entries[0][0]}, which does not exist. Images listed "
                           f"there must lie in {image_dir}.")
    return entries


def load_vehicleid(root: StrPath, test_size: int = 800) -> ReidDataset:
    """Load VehicleID with the test list of `test_size` vehicles (800 small, 1600 medium, 2400 large).

    Train samples get camid 0; query and gallery are both the whole test list, each image's camid being its
    position among the images of its vehicle (see the module docstring).

    Raises:
        DatasetError: an unknown test size, missing folders or list files, or a malformed line.
    """
    if test_size not in VEHICLEID_TEST_SIZES:
        raise DatasetError(f"VehicleID test size {test_size} does not exist; use one of {VEHICLEID_TEST_SIZES}")
    base = Path(root)
    image_dir, lists = base / "image", base / "train_test_split"
    if not image_dir.is_dir() or not lists.is_dir():
        raise DatasetError(f"VehicleID layout expected folders image/ and train_test_split/ under {base}; found: "
                           f"{_found(base)}. Point data.root at the folder that contains them.")
    train, raw_pids = relabel([(path, pid, 0) for path, pid in
                               _read_vehicleid_list(lists / "train_list.txt", image_dir)])
    seen: dict[int, int] = {}
    test: list[Sample] = []
    for path, pid in _read_vehicleid_list(lists / f"test_list_{test_size}.txt", image_dir):
        seen[pid] = seen.get(pid, -1) + 1
        test.append((path, pid, seen[pid]))
    return ReidDataset("vehicleid", str(root), train, test, list(test), raw_pids)
