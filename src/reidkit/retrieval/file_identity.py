"""Which file a path named when an index was made: (inode, size, mtime in ns, link count), so the search service
can tell a gallery image from a file swapped in under its name later (a hard link to a secret, an edited file)."""

from __future__ import annotations

import os

import torch
from torch import Tensor

UNKNOWN = -1  # every field of a row not recorded (an older index, a file missing when it was made)
FIELDS = ("inode", "size", "mtime_ns", "links")


def file_identities(paths: list[str]) -> Tensor:
    """Identities `[N, 4]` int64 (`FIELDS`) of `paths` now, symlinks followed; a row of UNKNOWN for a path that
    cannot be read."""
    rows = []
    for path in paths:
        try:
            info = os.stat(path)
        except (OSError, ValueError):  # missing, unreadable, a NUL byte in the name
            rows.append([UNKNOWN] * len(FIELDS))
        else:
            rows.append([info.st_ino, info.st_size, info.st_mtime_ns, info.st_nlink])
    return torch.tensor(rows, dtype=torch.int64).reshape(len(paths), len(FIELDS))


def unknown_identities(count: int) -> Tensor:
    """`[count, 4]` rows of UNKNOWN."""
    return torch.full((count, len(FIELDS)), UNKNOWN, dtype=torch.int64)


def is_recorded_file(recorded: list[int], info: os.stat_result) -> bool:
    """Whether an open file (`os.fstat`) is the one recorded: same inode, size and mtime, and a second link
    only when it had one then. With nothing recorded, only a file of one link passes (a hard link could
    give any file of the disk a name inside the gallery)."""
    if recorded[0] == UNKNOWN:
        return info.st_nlink == 1
    inode, size, mtime_ns, links = recorded
    return ((info.st_ino, info.st_size, info.st_mtime_ns) == (inode, size, mtime_ns)
            and (info.st_nlink == 1 or links > 1))
