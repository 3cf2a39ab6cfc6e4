"""CUHK03 (labeled or detected boxes) under the new 767/700 protocol or the classic 20 splits.

References: Li et al., "DeepReID: Deep Filter Pairing Neural Network for Person Re-identification"
(CVPR 2014: the data set, `cuhk-03.mat` and its 20 test splits of 100 identities); Zhong et al.,
"Re-ranking Person Re-identification with k-reciprocal Encoding" (CVPR 2017: the new protocol,
767 training and 700 test identities, `cuhk03_new_protocol_config_{labeled,detected}.mat`).

Files under ``root`` (what each protocol reads):
- ``cuhk-03.mat`` (or ``cuhk03_release/cuhk-03.mat``), MATLAB v7.3, i.e. HDF5, read with h5py. HDF5
  holds MATLAB arrays with their dimensions reversed, and cells as arrays of object references:
  ``labeled`` and ``detected`` are 5×1 cells, one per camera pair, each a [persons × 10] cell of
  images (HDF5 shape ``[10, persons]``); slots 1-5 come from the pair's first camera, 6-10 from the
  second; an image is an H×W×3 uint8 array (HDF5 ``[3, W, H]``); a missing image is an empty array
  (HDF5 shape ``(2,)`` holding its dimensions 0, 0). ``testsets`` is a 20×1 cell of [100 × 2]
  arrays of 1-based (camera pair, person) rows.
- ``images_labeled/``, ``images_detected/``: the images as PNG files
  ``{pair}_{person:03d}_{camera}_{slot:02d}.png`` (``1_001_1_01.png``: pair 1, person 1, camera 1,
  slot 1; camera 1 for slots 1-5, 2 for 6-10), the names the new-protocol files list. They are
  written from ``cuhk-03.mat`` on first use when missing (into a ``.partial`` folder renamed at the
  end, so an interrupted extraction is redone).
- ``cuhk03_new_protocol_config_{labeled,detected}.mat`` (MATLAB v5, read with scipy): ``filelist``
  (image names), ``labels`` (identity of each), ``camId`` (1 or 2), and ``train_idx``,
  ``query_idx``, ``gallery_idx``: 1-based indices into ``filelist``.

Identities and cameras. New protocol: pid = ``labels``, camid = ``camId`` - 1. Classic splits:
pid = 1000 · pair + person (``1_001_…`` is pid 1001), camid = camera within the pair - 1. Classic
split k: the 100 identities of ``testsets[k]`` are the test set, every other identity (both
cameras) is the train set; query = test images from the first camera, gallery = those from the
second. Evaluate classic splits with the single-gallery-shot protocol
(:func:`reidkit.metrics.rank.evaluate_single_gallery_shot`); the new protocol with ``evaluate_rank``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from reidkit.data.datasets import ReidDataset, Sample, StrPath, _found, relabel
from reidkit.data.parsing import ID_RULE, id_from_number
from reidkit.errors import DatasetError
from reidkit.outputs import flush_to_disk, write_image

VARIANTS = ("labeled", "detected")
PROTOCOLS = ("new", "classic")
MAT_LOCATIONS = ("cuhk-03.mat", "cuhk03_release/cuhk-03.mat")
# pair_person_camera_slot in ASCII digits; pair and person bounded so that pid = 1000 · pair + person stays below 10⁹
IMAGE_NAME = re.compile(r"^([0-9]{1,6})_([0-9]{1,3})_([12])_([0-9]{1,2})\.png$")
SLOTS_PER_CAMERA = 5


def load_cuhk03(root: StrPath, variant: str = "labeled", protocol: str = "new", split: int = 0) -> ReidDataset:
    """Load CUHK03 from ``root`` (layout and identity rules in the module docstring).

    Args:
        root: folder holding ``cuhk-03.mat`` and/or the new-protocol files and image folders.
        variant: ``"labeled"`` (hand-drawn boxes) or ``"detected"`` (DPM boxes).
        protocol: ``"new"`` (767/700 identities, one split) or ``"classic"`` (20 splits of 100
            test identities, single-gallery-shot evaluation).
        split: classic split index in ``[0, 20)``; must be 0 for the new protocol.

    Returns:
        A ReidDataset named ``cuhk03_<variant>`` (new) or ``cuhk03_<variant>_classic<split>``.

    Raises:
        ValueError: unknown ``variant`` or ``protocol``, or a split other than 0 for the new protocol.
        DatasetError: missing files (the message names the expected files and what ``root`` holds),
            a file of the wrong structure, a classic split the file lacks, a split naming missing
            images, or ``cuhk-03.mat`` to read without h5py installed.
    """
    if variant not in VARIANTS or protocol not in PROTOCOLS:
        raise ValueError(f"variant must be one of {VARIANTS} and protocol one of {PROTOCOLS}, "
                         f"got {variant!r} and {protocol!r}")
    if protocol == "new" and split != 0:
        raise ValueError(f"the new protocol has a single split (split=0), got split={split}")
    base = Path(root)
    mat_path = next((base / name for name in MAT_LOCATIONS if (base / name).is_file()), None)
    config_path = base / f"cuhk03_new_protocol_config_{variant}.mat"
    image_dir = base / f"images_{variant}"
    expected = []
    if protocol == "new" and not config_path.is_file():
        expected.append(config_path.name)
    if protocol == "new" and not image_dir.is_dir() and mat_path is None:
        expected.append(f"{image_dir.name}/ (or {MAT_LOCATIONS[0]} to extract it from)")
    if protocol == "classic" and mat_path is None:
        expected.append(" or ".join(MAT_LOCATIONS))
    if expected:
        raise DatasetError(
            f"CUHK03 ({protocol} protocol, {variant}) expected {' and '.join(expected)} under {base}; "
            f"found: {_found(base)}. Point data.root at the folder that contains them."
        )
    if not image_dir.is_dir():
        extract_images(mat_path, variant, image_dir)
    if protocol == "new":
        train, query, gallery = _new_protocol_splits(config_path, image_dir)
        name = f"cuhk03_{variant}"
    else:
        train, query, gallery = _classic_splits(mat_path, image_dir, split)
        name = f"cuhk03_{variant}_classic{split}"
    train, raw_pids = relabel(train)
    return ReidDataset(name, str(root), train, query, gallery, raw_pids)


def extract_images(mat_path: StrPath, variant: str, image_dir: StrPath) -> int:
    """Write every ``variant`` image of ``cuhk-03.mat`` to ``image_dir`` as PNG; return the count.

    Raises:
        DatasetError: the file lacks ``variant``, a cell has an unexpected shape, or h5py is not installed.
    """
    from PIL import Image

    h5py = _import_h5py()
    target, partial = Path(image_dir), Path(f"{image_dir}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    count = 0
    with h5py.File(mat_path, "r") as mat:
        if variant not in mat:
            raise DatasetError(f"{mat_path} has no '{variant}' cell; it holds: {', '.join(sorted(mat.keys()))}.")
        for pair, pair_ref in enumerate(np.ravel(mat[variant][()]), start=1):
            slots = mat[pair_ref][()]  # [10, persons]: MATLAB's [persons × 10] reversed
            if slots.ndim != 2 or slots.shape[0] != 2 * SLOTS_PER_CAMERA:
                raise DatasetError(f"{mat_path}: camera pair {pair} of '{variant}' has HDF5 shape {slots.shape}; "
                                   f"expected a MATLAB [persons x 10] cell of images, HDF5 shape (10, persons).")
            for person in range(slots.shape[1]):
                for slot in range(slots.shape[0]):
                    image = mat[slots[slot, person]][()]
                    if image.ndim != 3 or image.size == 0:  # empty cell: stored as its dimensions (0, 0)
                        continue
                    camera = 1 + slot // SLOTS_PER_CAMERA
                    name = f"{pair}_{person + 1:03d}_{camera}_{slot + 1:02d}.png"
                    write_image(partial / name, Image.fromarray(np.ascontiguousarray(image.T, dtype=np.uint8)), "PNG",
                                durable=False)
                    count += 1
    flush_to_disk()  # the rename below marks the folder complete
    partial.rename(target)
    return count


def _import_h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise DatasetError("reading cuhk-03.mat (MATLAB v7.3 = HDF5) needs h5py: pip install 'reidkit[cuhk03]' "
                           "(or pip install h5py)") from None
    return h5py


def _parse_image_dir(image_dir: Path) -> list[tuple[str, int, int, int]]:
    """``(path, pair, person, camera)`` of every image of an extracted folder, sorted by name."""
    entries = []
    for path in sorted(image_dir.iterdir()):
        match = IMAGE_NAME.match(path.name)
        if match is None:
            raise DatasetError(f"CUHK03: cannot parse file name {path}; expected names like 1_001_1_01.png "
                               f"(pair_person_camera_slot in ASCII digits 0-9, at most 6, 3, 1 and 2 of them). "
                               "Remove the file or re-extract the folder.")
        pair, person, camera, _ = map(int, match.groups())
        entries.append((str(path), pair, person, camera))
    if not entries:
        raise DatasetError(f"CUHK03: {image_dir} holds no images; delete it to extract them again.")
    return entries


def _classic_splits(mat_path: Path, image_dir: Path, split: int) -> tuple[list[Sample], ...]:
    """Train / query (first camera) / gallery (second camera) of classic split ``split``."""
    h5py = _import_h5py()
    with h5py.File(mat_path, "r") as mat:
        if "testsets" not in mat:
            raise DatasetError(f"{mat_path} has no 'testsets' cell; it holds: {', '.join(sorted(mat.keys()))}.")
        refs = np.ravel(mat["testsets"][()])
        if not 0 <= split < len(refs):
            raise DatasetError(f"{mat_path} holds {len(refs)} classic test splits, so split {split} does not "
                               f"exist; choose data.cuhk03_split in 0..{len(refs) - 1}")
        rows = np.asarray(mat[refs[split]][()]).T  # MATLAB [100 x 2], HDF5 (2, 100)
    if rows.ndim != 2 or rows.shape[1] != 2:
        raise DatasetError(f"{mat_path}: testsets[{split}] has MATLAB shape {rows.shape}; expected [N x 2] "
                           f"rows (camera pair, person).")
    test_ids = {(int(pair), int(person)) for pair, person in rows}
    train, query, gallery = [], [], []
    for path, pair, person, camera in _parse_image_dir(image_dir):
        sample = (path, 1000 * pair + person, camera - 1)
        if (pair, person) not in test_ids:
            train.append(sample)
        else:
            (query if camera == 1 else gallery).append(sample)
    if not query or not gallery:
        raise DatasetError(f"CUHK03: no image of the {len(test_ids)} test identities of split {split} "
                           f"in {image_dir} ({len(query)} query, {len(gallery)} gallery).")
    return train, query, gallery


def _new_protocol_splits(config_path: Path, image_dir: Path) -> tuple[list[Sample], ...]:
    """Train / query / gallery listed by a ``cuhk03_new_protocol_config_*.mat`` file."""
    from scipy.io import loadmat

    fields = ("filelist", "labels", "camId", "train_idx", "query_idx", "gallery_idx")
    config = loadmat(config_path)
    missing = [field for field in fields if field not in config]
    if missing:
        present = sorted(key for key in config if not key.startswith("__"))
        raise DatasetError(f"{config_path} lacks {', '.join(missing)}; it holds: {', '.join(present)}.")
    names = [_mat_string(entry) for entry in np.ravel(config["filelist"])]
    pids, cameras = (_whole_numbers(config[key], f"{config_path}: {key}") for key in ("labels", "camId"))
    if not len(names) == len(pids) == len(cameras):
        raise DatasetError(f"{config_path}: filelist, labels and camId differ in length "
                           f"({len(names)}, {len(pids)}, {len(cameras)}).")
    if len(cameras) and not set(np.unique(cameras)) <= {1, 2}:
        raise DatasetError(f"{config_path}: camId holds {sorted(set(np.unique(cameras)))}; expected 1 and 2.")
    splits = []
    for key in fields[3:]:
        indices = _whole_numbers(config[key], f"{config_path}: {key}")
        if len(indices) == 0 or indices.min() < 1 or indices.max() > len(names):
            raise DatasetError(f"{config_path}: {key} must be non-empty 1-based indices into filelist "
                               f"(1..{len(names)}), got range {indices.min(initial=0)}..{indices.max(initial=0)}.")
        splits.append([(str(image_dir / names[i - 1]), int(pids[i - 1]), int(cameras[i - 1]) - 1)
                       for i in indices])
    absent = [path for split in splits for path, _, _ in split if not Path(path).is_file()]
    if absent:
        raise DatasetError(f"{config_path} lists {len(absent)} images missing from {image_dir}, e.g. "
                           f"{', '.join(Path(p).name for p in absent[:3])}; delete {image_dir} to extract "
                           f"them again from cuhk-03.mat.")
    return tuple(splits)


def _whole_numbers(values: Any, where: str) -> np.ndarray:
    """The entries of a MATLAB numeric array as int64, each checked to be a whole number below 10⁹ in size (a
    cast alone would wrap 1e30 or NaN around to some other integer)."""
    flat = np.ravel(values)
    try:
        numbers = [id_from_number(value) for value in flat]
    except (TypeError, ValueError):  # not numbers at all (strings, cells)
        numbers = [None]
    if None in numbers:
        raise DatasetError(f"{where} holds {flat[:3].tolist()}...; expected whole numbers ({ID_RULE}).")
    return np.array(numbers, dtype=np.int64)


def _mat_string(entry: Any) -> str:
    """A file name from a MATLAB cell entry (a char array, possibly nested in 1-element arrays)."""
    value = entry
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.item()
    return "".join(np.ravel(value).astype(str)).strip()
