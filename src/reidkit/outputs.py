"""Output paths checked before the work that fills them, so a bad `--out` never costs a finished computation."""

from __future__ import annotations

import os
from pathlib import Path

from reidkit.errors import ReidkitError


def output_file(path: str | Path, suffix: str = "") -> Path:
    """`path` (with `suffix` appended when it lacks it, as numpy's `save` does) as a file that can be written:
    its folder is created; a path that is a folder, lies under a file or in a read-only folder is refused."""
    out = Path(path)
    if suffix and out.suffix != suffix:
        out = out.with_name(out.name + suffix)
    if out.is_dir():
        raise ReidkitError(f"--out {out} is a folder; give a file name, e.g. {out / ('out' + (suffix or '.bin'))}")
    _writable_folder(out.parent, f"--out {out}")
    return out


def output_folder(path: str | Path) -> Path:
    """`path` as a folder to write into, created when missing; a file there or a read-only place is refused."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ReidkitError(f"--out {out} is a file; give a folder")
    _writable_folder(out, f"--out {out}")
    return out


def _writable_folder(folder: Path, what: str) -> None:
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ReidkitError(f"{what}: {existing} is a file, not a folder; choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ReidkitError(f"{what}: cannot create the folder {folder} ({error.strerror})") from error
    if not os.access(folder, os.W_OK):
        raise ReidkitError(f"{what}: the folder {folder} is not writable; choose another path")
