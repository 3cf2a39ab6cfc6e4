"""Per-identity attribute labels (Lin et al., "Improving Person Re-identification by Attribute and
Identity Learning", Pattern Recognition 2019) as class indices for the attribute heads.

Files use the Market-1501 annotation codes: 1/2 for binary attributes (no/yes, male/female, ...) and 1..4
for age; here every code c becomes the class index c − 1, and each attribute has max(code) classes.

Two file formats give the same `raw pid → {attribute name: code}` mapping:
- a CSV `pid,<name>,...` (`reidkit.data.datasets.load_attributes_csv`; the synthetic set writes one);
- the public MATLAB annotations released with the paper, `market_attribute.mat` (Market-1501) and
  `duke_attribute.mat` (DukeMTMC-reID), read by `load_market_attribute_mat` / `load_duke_attribute_mat`.

Assumed layout of the .mat files (MATLAB v5, as `scipy.io.loadmat` returns it): one variable,
`market_attribute` or `duke_attribute`, a 1×1 struct with fields `train` and `test` (in any order); each
of those is a 1×1 struct whose field `image_index` is a 1×N cell of identity ids as strings ('0002'; a
char matrix or numbers are accepted too) and whose every other field is one attribute (its name, e.g.
`age`, `backpack`, `upblack`, ...) holding a 1×N (or N×1) numeric array of codes aligned with
`image_index`. Market-1501 has 27 attributes (age 1..4, the rest 1/2), DukeMTMC-reID 23 (all 1/2). The
attribute names are taken from the file, not from a fixed list; the train split's field order is kept.
The two splits are merged (their identities are disjoint in the public files) and must name the same
attributes; an identity listed twice must have the same codes both times. MATLAB v7.3 (HDF5) files are
not read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from reidkit.data.datasets import load_attributes_csv
from reidkit.data.parsing import ID_RULE, id_from_number, parse_id
from reidkit.errors import DatasetError


def attribute_classes(attributes: dict[int, dict[str, int]]) -> dict[str, int]:
    """Attribute name → number of classes (the largest code seen, at least 2), in file order.

    Raises:
        DatasetError: a code below 1 (codes are 1-based).
    """
    names = list(next(iter(attributes.values())))
    classes = {}
    for name in names:
        codes = [row[name] for row in attributes.values()]
        if min(codes) < 1:
            raise DatasetError(f"attribute '{name}' has code {min(codes)}; codes are 1-based (1 = first class)")
        classes[name] = max(2, max(codes))
    return classes


def attribute_table(attributes: dict[int, dict[str, int]], raw_pids: list[int]) -> torch.Tensor:
    """Class indices [len(raw_pids), A] (int64) of each identity in `raw_pids` order (train label order).

    Raises:
        DatasetError: an identity without attributes (names up to five of them).
    """
    missing = [pid for pid in raw_pids if pid not in attributes]
    if missing:
        raise DatasetError(f"{len(missing)} identities have no attributes (e.g. pids {missing[:5]}); "
                           "give every training identity a row in the attributes file")
    names = list(attribute_classes(attributes))
    return torch.tensor([[attributes[pid][name] - 1 for name in names] for pid in raw_pids], dtype=torch.int64)


# The variable holding the annotation struct in each public .mat file, by data set name.
MAT_VARIABLES = {"market1501": "market_attribute", "dukemtmc": "duke_attribute"}
MAT_SPLITS = ("train", "test")
MAT_INDEX_FIELD = "image_index"


def load_market_attribute_mat(path: str | Path) -> dict[int, dict[str, int]]:
    """Read the public Market-1501 attribute file `market_attribute.mat` (Lin et al. 2019).

    Returns:
        raw pid → {attribute name: code}, train and test identities merged (layout in the module docstring).

    Raises:
        DatasetError: missing or unreadable file, or a structure other than the one described.
    """
    return load_attribute_mat(path, MAT_VARIABLES["market1501"])


def load_duke_attribute_mat(path: str | Path) -> dict[int, dict[str, int]]:
    """Read the public DukeMTMC-reID attribute file `duke_attribute.mat` (Lin et al. 2019).

    Returns:
        raw pid → {attribute name: code}, train and test identities merged (layout in the module docstring).

    Raises:
        DatasetError: missing or unreadable file, or a structure other than the one described.
    """
    return load_attribute_mat(path, MAT_VARIABLES["dukemtmc"])


def load_attribute_mat(path: str | Path, variable: str) -> dict[int, dict[str, int]]:
    """Read an attribute .mat file whose annotation struct is the top-level `variable`.

    Raises:
        DatasetError: missing or unreadable file, or a structure other than the one described in the
            module docstring (the message names what was expected and what was found).
    """
    from scipy.io import loadmat  # heavy import, needed only for .mat files
    from scipy.io.matlab import MatReadError

    mat_path = Path(path)
    if not mat_path.is_file():
        raise DatasetError(f"attributes file {mat_path} does not exist")
    try:
        contents = loadmat(mat_path)
    except (MatReadError, ValueError, TypeError, NotImplementedError, OSError) as error:
        raise DatasetError(f"cannot read {mat_path} as a MATLAB v5 file ({error}); expected the public "
                           f"{variable}.mat") from error
    found = sorted(key for key in contents if not key.startswith("__"))
    if variable not in contents:
        raise DatasetError(f"{mat_path}: expected a variable '{variable}', found {found or 'no variables'}")
    top = _struct(contents[variable], f"{mat_path}: {variable}", MAT_SPLITS)
    splits = [_read_split(_struct(top[split], f"{mat_path}: {variable}.{split}", (MAT_INDEX_FIELD,)),
                          f"{mat_path}: {variable}.{split}") for split in MAT_SPLITS]
    names = list(next(iter(splits[0].values())))  # every split lists at least one identity
    merged: dict[int, dict[str, int]] = {}
    for split, rows in zip(MAT_SPLITS, splits):
        for pid, codes in rows.items():
            if set(codes) != set(names):
                raise DatasetError(f"{mat_path}: {variable}.{split} has attributes {sorted(codes)}, the train "
                                   f"split {sorted(names)}; expected the same attributes in both splits")
            codes = {name: codes[name] for name in names}
            if merged.setdefault(pid, codes) != codes:
                raise DatasetError(f"{mat_path}: identity {pid} appears in both splits with different codes")
    return merged


def _describe(value) -> str:
    """A short description of a loadmat value for error messages."""
    if isinstance(value, np.ndarray) and value.dtype.names:
        return f"a {'×'.join(map(str, value.shape))} struct with fields {list(value.dtype.names)}"
    if isinstance(value, np.ndarray):
        kind = "cell array" if value.dtype == object else f"{value.dtype} array"
        return f"a {'×'.join(map(str, value.shape))} {kind}"
    return f"a {type(value).__name__}"


def _struct(value, where: str, required: tuple[str, ...]) -> np.void:
    """The single record of a 1×1 MATLAB struct holding at least the fields `required`."""
    if not (isinstance(value, np.ndarray) and value.dtype.names and value.size == 1):
        raise DatasetError(f"{where}: expected a 1×1 struct with fields {list(required)}, found {_describe(value)}")
    missing = [name for name in required if name not in value.dtype.names]
    if missing:
        raise DatasetError(f"{where}: expected a struct with fields {list(required)}, found fields "
                           f"{list(value.dtype.names)}")
    return value.reshape(-1)[0]


def _read_split(record: np.void, where: str) -> dict[int, dict[str, int]]:
    """raw pid → {name: code} of one split struct (`image_index` plus one field per attribute)."""
    pids = _identity_ids(record[MAT_INDEX_FIELD], f"{where}.{MAT_INDEX_FIELD}")
    names = [name for name in record.dtype.names if name != MAT_INDEX_FIELD]
    if not names:
        raise DatasetError(f"{where}: expected attribute fields beside '{MAT_INDEX_FIELD}', found none")
    columns = {name: _codes(record[name], f"{where}.{name}", len(pids)) for name in names}
    rows: dict[int, dict[str, int]] = {}
    for position, pid in enumerate(pids):
        codes = {name: columns[name][position] for name in names}
        if rows.setdefault(pid, codes) != codes:
            raise DatasetError(f"{where}: identity {pid} is listed twice with different codes")
    return rows


def _identity_ids(value, where: str) -> list[int]:
    """Identity ids of an `image_index` field: a cell of strings, a char matrix or numbers."""
    if not isinstance(value, np.ndarray) or value.dtype.names or value.size == 0:
        raise DatasetError(f"{where}: expected a 1×N cell of identity ids such as '0002', found {_describe(value)}")
    pids = []
    for item in value.reshape(-1):
        while isinstance(item, np.ndarray) and item.size == 1:  # a cell holds a 1-element char array
            item = item.reshape(-1)[0]
        try:
            pid = parse_id(item.strip()) if isinstance(item, str) else id_from_number(item)
        except (TypeError, ValueError):  # neither text nor a number
            pid = None
        if pid is None:
            raise DatasetError(f"{where}: expected identity ids such as '0002' ({ID_RULE}), found {item!r}")
        pids.append(pid)
    return pids


def _codes(value, where: str, count: int) -> list[int]:
    """The `count` integer codes of one attribute field (a 1×N or N×1 numeric array)."""
    if not (isinstance(value, np.ndarray) and value.dtype.kind in "iuf" and value.size == count):
        raise DatasetError(f"{where}: expected a 1×{count} numeric array of codes (one per image_index entry), "
                           f"found {_describe(value)}")
    codes = [id_from_number(code) for code in value.reshape(-1)]
    if None in codes:
        raise DatasetError(f"{where}: expected integer codes (whole numbers below 10⁹), found {value.reshape(-1)[:3].tolist()}...")
    return codes


def load_attributes(dataset_name: str, root: str, attributes_file: str) -> dict[int, dict[str, int]] | None:
    """The attributes of a data set: `attributes_file` when given, else `root/attributes.csv` for the
    synthetic set; None when the data set has none.

    A `.csv` file is read by `load_attributes_csv`; a `.mat` file is the public annotation of the data set
    named by `dataset_name` (`market1501` → `market_attribute.mat`, `dukemtmc` → `duke_attribute.mat`).

    Raises:
        DatasetError: a suffix other than .csv/.mat, a .mat file for another data set, or a bad file.
    """
    if not attributes_file:
        return load_attributes_csv(Path(root) / "attributes.csv") if dataset_name == "synthetic" else None
    suffix = Path(attributes_file).suffix.lower()
    if suffix == ".csv":
        return load_attributes_csv(attributes_file)
    if suffix == ".mat":
        if dataset_name not in MAT_VARIABLES:
            raise DatasetError(f"data.attributes={attributes_file}: .mat attribute files are the public "
                               f"annotations of {' and '.join(MAT_VARIABLES)}, but data.dataset is "
                               f"{dataset_name}; give a CSV (pid,<name>,...) instead")
        return load_attribute_mat(attributes_file, MAT_VARIABLES[dataset_name])
    raise DatasetError(f"data.attributes={attributes_file}: expected a .csv (pid,<name>,...) or a .mat file "
                       f"(market_attribute.mat / duke_attribute.mat), found suffix '{suffix or 'none'}'")
