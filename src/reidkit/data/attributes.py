"""Per-identity attribute labels (Lin et al., "Improving Person Re-identification by Attribute and
Identity Learning", Pattern Recognition 2019) as class indices for the attribute heads.

Files use the Market-1501 annotation codes: 1/2 for binary attributes (no/yes, male/female, ...) and 1..4
for age; here every code c becomes the class index c − 1, and each attribute has max(code) classes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reidkit.data.datasets import load_attributes_csv
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


def load_attributes(dataset_name: str, root: str, attributes_file: str) -> dict[int, dict[str, int]] | None:
    """The attributes of a data set: `attributes_file` when given, else `root/attributes.csv` for the
    synthetic set; None when the data set has none."""
    if attributes_file:
        return load_attributes_csv(attributes_file)
    if dataset_name == "synthetic":
        return load_attributes_csv(Path(root) / "attributes.csv")
    return None
