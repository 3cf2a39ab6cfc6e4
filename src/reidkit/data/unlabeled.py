"""Unlabelled training images for adaptation: every image under a folder, cameras read from Market-style names.

A sample is `(path, pid, camid)` as everywhere; pid is −1 (unknown) for a folder's images.
"""

from __future__ import annotations

import re
from pathlib import Path

from reidkit.data.datasets import IMAGE_EXTENSIONS, Sample
from reidkit.errors import DatasetError

# `0002_c3s1_000451_03.jpg`, `0005_c2_f0046985.jpg`: ASCII digits only, bounded lengths
CAMERA_IN_NAME = re.compile(r"-?[0-9]{1,8}_c([0-9]{1,3})")


def load_unlabeled_folder(root: str | Path) -> list[Sample]:
    """Every image (.jpg, .jpeg, .png) under `root`, recursively, in sorted path order, with pid −1 and the
    camera of its Market-style name (`PPPP_cC...`, camera C ≥ 1 → camid C − 1) when every name has one,
    else camid 0 for all.

    Raises:
        DatasetError: the folder is missing or holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"adapt.unlabeled_folders: {root} is not a folder; give a folder of person crops")
    paths = sorted(path for path in root.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file())
    if not paths:
        raise DatasetError(f"adapt.unlabeled_folders: no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}; "
                           "add the crops or fix the path")
    matches = [CAMERA_IN_NAME.match(path.name) for path in paths]
    named = all(match and int(match.group(1)) >= 1 for match in matches)
    return [(str(path), -1, int(match.group(1)) - 1 if named else 0) for path, match in zip(paths, matches)]
