"""Image files of the search service: reading a listed image only from inside the folders recorded when the
index (or query set) was made and only while it is the file recorded then, and storing images added to the
gallery at run time."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from reidkit.outputs import write_file
from reidkit.retrieval.file_identity import is_recorded_file

MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
MAX_IMAGE_FILE_BYTES = 50_000_000  # a listed file larger than this is not served


class ImageFiles:
    """A list of image files served by number: file i is read only from inside `roots` and only while it is the
    file recorded in `identities[i]` (`reidkit.retrieval.file_identity.is_recorded_file`: same inode, size and
    mtime; one link unless it had more). A path is resolved (symlinks followed, `..` removed) and must then lie
    under one of the resolved roots, be a regular file with an image extension and not be a symlink when opened
    (O_NOFOLLOW). Callers get None for any refusal, so no answer tells what exists on disk.

    Args:
        paths: the image paths, N strings.
        roots: the folders they may be read from; none: no file is served.
        identities: `[N, 4]` identities recorded with the paths (rows of -1 where none was).
    """

    def __init__(self, paths: list[str], roots: list[str | Path], identities) -> None:
        self.paths, self.identities = paths, identities.tolist()
        self.roots = [Path(root).resolve() for root in roots]

    def read(self, number: int) -> tuple[bytes, str] | None:
        """(bytes, media type) of file `number`, or None when it is outside the roots, missing, not an image file or
        not the file recorded."""
        return read_recorded(self.paths[number], self.identities[number], self.roots)


def read_recorded(path: str, recorded: list[int], roots: list[Path]) -> tuple[bytes, str] | None:
    """(bytes, media type) of the image file `path` if it lies inside one of the resolved `roots` and is the file
    `recorded` (`ImageFiles` says how), else None."""
    try:
        resolved = Path(path).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, unreadable, a NUL byte
        return None
    media = MEDIA_TYPES.get(resolved.suffix.lower())
    if media is None or not any(resolved.is_relative_to(root) for root in roots):
        return None
    try:
        descriptor = os.open(resolved, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # swapped for a symlink since resolve(), or unreadable
        return None
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_IMAGE_FILE_BYTES \
                or not is_recorded_file(list(recorded), info):
            return None
        return handle.read(), media


def folders_of(paths: list[str]) -> list[str]:
    """The folders (resolved) that directly hold `paths`, for a query set, which records none."""
    return sorted({str(Path(path).parent.resolve()) for path in paths})


def store_image(folder: Path, data: bytes, suffix: str) -> Path:
    """Write `data` to `folder/<SHA-256 prefix><suffix>` atomically (`reidkit.outputs.write_file`); an equal
    file already there is reused. Returns the path.

    Raises:
        ReidkitError: the file could not be written (full disk, read-only folder).
    """
    path = folder / f"{hashlib.sha256(data).hexdigest()[:24]}{suffix}"
    return path if path.is_file() else write_file(path, lambda temporary: temporary.write_bytes(data))
