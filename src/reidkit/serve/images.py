"""Image files of the search service: reading a listed image only from inside the folders recorded when the
index (or query set) was made, and storing images added to the gallery at run time."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from reidkit.outputs import write_file

MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
MAX_IMAGE_FILE_BYTES = 50_000_000  # a listed file larger than this is not served


class ConfinedFolders:
    """Reads files only from inside `roots`: a path is resolved (symlinks followed, `..` removed) and must
    then lie under one of the resolved roots, be a regular file with an image extension and not be a symlink
    when opened (O_NOFOLLOW). Callers get None for any refusal, so no answer tells what exists on disk."""

    def __init__(self, roots: list[str | Path]) -> None:
        self.roots = [Path(root).resolve() for root in roots]

    def read(self, path: str | Path) -> tuple[bytes, str] | None:
        """(bytes, media type) of `path`, or None when it is outside the roots, missing or not an image file."""
        try:
            resolved = Path(path).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, a symlink loop, unreadable
            return None
        media = MEDIA_TYPES.get(resolved.suffix.lower())
        if media is None or not any(resolved.is_relative_to(root) for root in self.roots):
            return None
        try:
            descriptor = os.open(resolved, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:  # swapped for a symlink since resolve(), or unreadable
            return None
        with os.fdopen(descriptor, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_IMAGE_FILE_BYTES:
                return None
            return handle.read(), media


def image_roots_of(paths: list[str]) -> list[str]:
    """The folder that holds every one of `paths` (their common parent), for indexes and query sets that did
    not record their folders; [] for no paths."""
    if not paths:
        return []
    return [os.path.commonpath([str(Path(path).parent.resolve()) for path in paths])]


def store_image(folder: Path, data: bytes, suffix: str) -> Path:
    """Write `data` to `folder/<SHA-256 prefix><suffix>` atomically (`reidkit.outputs.write_file`); an equal
    file already there is reused. Returns the path.

    Raises:
        ReidkitError: the file could not be written (full disk, read-only folder).
    """
    path = folder / f"{hashlib.sha256(data).hexdigest()[:24]}{suffix}"
    return path if path.is_file() else write_file(path, lambda temporary: temporary.write_bytes(data))
