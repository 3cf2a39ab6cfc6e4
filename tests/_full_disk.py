"""Fault injection for tests: a disk that fills up inside a `with` block.

Where the platform has `RLIMIT_FSIZE` (Linux, macOS), no file can grow past `limit` bytes inside the block:
the kernel fails the write with EFBIG, exactly as a full disk fails it with ENOSPC, in reidkit's own writes
and in those of torch, safetensors, PIL, matplotlib and onnx alike. The kernel would first send SIGXFSZ,
which kills the process unless ignored; `reidkit`'s CLI ignores it, and so does this helper for the test
process. Elsewhere, `os.fsync` reports ENOSPC (as it can on a real full disk), which fails every file
`reidkit.outputs.write_file` writes durably.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys

try:
    import resource
except ImportError:  # Windows
    resource = None


def size_limit_works() -> bool:
    """Whether RLIMIT_FSIZE can be lowered and raised back in this process."""
    if resource is None or not hasattr(signal, "SIGXFSZ"):
        return False
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    except (OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def full_disk(monkeypatch, limit: int = 512):
    """Inside the block no file grows past `limit` bytes (RLIMIT_FSIZE), or fsync fails with ENOSPC."""
    if not size_limit_works():
        def no_space(descriptor: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with monkeypatch.context() as patch:
            patch.setattr(os, "fsync", no_space)
            yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def run_cli_on_full_disk(args: list[str], limit: int = 512, **kwargs) -> subprocess.CompletedProcess:
    """`python -m reidkit --quiet ARGS` in a subprocess whose files cannot grow past `limit` bytes, with
    SIGXFSZ at its default action (the CLI must ignore it itself, or it dies of the signal)."""
    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # not the SIG_IGN a test process may have set and passed on
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run([sys.executable, "-m", "reidkit", "--quiet", *args], capture_output=True, text=True,
                          preexec_fn=limit_files, **kwargs)
