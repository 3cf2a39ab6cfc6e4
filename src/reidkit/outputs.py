"""Where reidkit reads and writes: output paths checked before the work that fills them (so a bad `--out` never
costs a finished computation), the one atomic writer every file goes through (so a full disk or a kill never
leaves a truncated file under a final name), and the one check of an input path, so that every message gives
the real reason (a folder, a missing file, a device, no permission) in the same words."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
        raise ReidkitError(f"{what}: cannot create the folder {folder} ({os_reason(error)})") from error
    try:  # a real (nameless) file, not os.access: root passes access() for /proc, /sys and any mode bits
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise ReidkitError(f"{what}: cannot create files in the folder {folder} ({os_reason(error)}); choose "
                           f"another path") from error


def os_reason(error: OSError) -> str:
    """The cause of `error` in lower-case words from its errno ("read-only file system", "permission denied")."""
    return os.strerror(error.errno).lower() if error.errno else str(error)


def input_problem(path: str | Path) -> str | None:
    """Why `path` cannot be read as a file, in words that follow its name ("does not exist", "is a folder",
    "is not a regular file (a device, pipe or socket)", "cannot be read (permission denied)"), or None when it
    is a readable regular file."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if error.errno == errno.ENOENT:
            return f"is a link to {os.readlink(path)}, which does not exist" if path.is_symlink() else "does not exist"
        return f"cannot be read ({os_reason(error)})"
    if stat.S_ISDIR(mode):
        return "is a folder"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a device, pipe or socket)"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied)"
    return None


# --- writing files --------------------------------------------------------------------------------------------
# Every file reidkit writes goes through `write_file`: the content is written to a temporary file in the same
# folder, flushed to disk (fsync) and renamed over the final name, so the final name only ever holds a complete
# file, the previous one stays intact until the new one is complete, and a failure leaves no temporary file.
# The one exception is the metrics log (`append_line`), which grows a line at a time: a line is appended whole
# or not at all.

_REASONS = {  # errno: (what happened, the fix)
    errno.ENOSPC: ("no space left on device", "free space or choose another --out"),
    errno.EDQUOT: ("disk quota exceeded", "free space or choose another --out"),
    errno.EFBIG: ("file too large (over the file size limit, `ulimit -f`, or the file system's)",
                  "raise the limit or choose another --out"),
    errno.EROFS: ("read-only file system", "choose another --out"),
    errno.EACCES: ("permission denied", "choose a writable --out"),
    errno.EPERM: ("operation not permitted", "choose a writable --out"),
}


def write_file(path: str | Path, write: Callable[[Path], object], durable: bool = True) -> Path:
    """Write `path` atomically: `write(temporary)` fills a temporary file beside `path`, which is then fsynced
    (when `durable`) and renamed onto `path`.

    Args:
        path: the file to write; its folder is created.
        write: fills the file at the path it is given; that path ends in `.tmp`, so a writer that picks its
            format from the suffix (PIL, matplotlib, numpy) must be told the format or given a handle.
        durable: fsync the file and its folder; False for the many small files of a data set whose
            completion a marker written last records (after `flush_to_disk`).

    Returns:
        `path` as a Path.

    Raises:
        ReidkitError: the write failed (full disk, file size limit, read-only or unwritable folder, or a
            library's own error while writing: torch's RuntimeError, safetensors' SafetensorError); it
            names the file, the cause and the fix. The temporary file is removed and `path` is unchanged.
    """
    path = Path(path)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(temporary)
        move_into_place(temporary, path, durable)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(error, write_failures()):
            raise write_error(path, error) from error
        raise
    return path


def move_into_place(temporary: Path, path: Path, durable: bool = True) -> None:
    """Rename the complete file `temporary` onto `path` (same folder), fsyncing the file first and the folder
    after when `durable`.

    Raises:
        OSError: the fsync or the rename failed; `path` is unchanged.
    """
    if durable:
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
    os.replace(temporary, path)
    if durable:
        _fsync_folder(path.parent)


def flush_to_disk() -> None:
    """Flush every written file to disk (`os.sync`; skipped where missing): one call before the completion
    marker of files written with `durable=False`, instead of one fsync per file (~5 ms each)."""
    if hasattr(os, "sync"):
        os.sync()


def write_text(path: str | Path, text: str) -> Path:
    """`write_file` of UTF-8 `text`."""
    return write_file(path, lambda temporary: temporary.write_text(text, encoding="utf-8", newline=""))


def write_image(path: str | Path, image: Any, format: str, durable: bool = True, **options: Any) -> Path:
    """`write_file` of the PIL `image` encoded as `format` (e.g. "PNG", "JPEG" with quality=95).

    The image is encoded in memory first: PIL's JPEG writer, given a file, can stop at a full disk without an
    error and leave a truncated JPEG (seen with Pillow 13); a write of bytes cannot.
    """
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return write_file(path, lambda temporary: temporary.write_bytes(buffer.getvalue()), durable=durable)


def write_json(path: str | Path, values: Any) -> Path:
    """`write_file` of `values` as indented JSON and a final newline."""
    return write_text(path, json.dumps(values, indent=2) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append `line` and a newline to the log `path`, whole or not at all: a failed append is cut back to
    the previous end of the file (no fsync per line; a reader skips a partial last line a kill leaves).

    Raises:
        ReidkitError: as `write_file`.
    """
    data = memoryview((line + "\n").encode("utf-8"))
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as error:
        raise write_error(path, error) from error
    try:
        end = os.lseek(descriptor, 0, os.SEEK_END)
        while data:  # a write may stop short (e.g. at the file size limit) before it fails
            data = data[os.write(descriptor, data):]
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, end)
        if isinstance(error, OSError):
            raise write_error(path, error) from error
        raise
    finally:
        os.close(descriptor)


def write_error(path: str | Path, error: BaseException) -> ReidkitError:
    """One line naming `path`, what went wrong in `error` and the fix."""
    code = error.errno if isinstance(error, OSError) else next(
        (code for code in _REASONS if os.strerror(code) in str(error)), None)  # safetensors keeps the OS text
    if code in _REASONS:
        reason, fix = _REASONS[code]
        problem = f"{reason} writing {path}"
    elif isinstance(error, OSError) and error.errno:  # the OS said why: say it, and not that the disk may be full
        fix = "choose another --out"
        problem = f"could not write {path} ({os_reason(error)})"
    else:  # torch's writer reports "file write failed" without the cause
        fix = "free space (the disk may be full) or choose another --out"
        problem = f"could not write {path} ({type(error).__name__}: {first_line(error)})"
    return ReidkitError(f"{problem}: {fix}")


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message (libraries append C++ stack traces)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else "no message"


def write_failures() -> tuple[type[BaseException], ...]:
    """Exception types a failed write raises: OSError, torch's RuntimeError, and safetensors' own error type
    when safetensors is loaded (only then can it be raised)."""
    safetensors = sys.modules.get("safetensors")
    return (OSError, RuntimeError, *([safetensors.SafetensorError] if safetensors else []))


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX; skipped where a folder cannot be opened, as on Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
