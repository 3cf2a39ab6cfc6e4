"""`reidkit --quiet ARGS` run in the test process: `main` as the console script calls it, its exit status and
printed output captured. A subprocess would spend seconds importing torch for each command; an exception
escaping `main` (what would print a traceback) fails the calling test. Tests that need a real process (a
signal, the installed entry point, the environment) start one themselves."""

from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path

from reidkit.cli import main


def reidkit(*args: str, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """The command's exit status (`returncode`), `stdout` and `stderr`, run from the folder `cwd` if given."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        stack.enter_context(contextlib.redirect_stdout(stdout))
        stack.enter_context(contextlib.redirect_stderr(stderr))
        try:
            code = main(["--quiet", *args])
        except SystemExit as exit_:  # argparse: --help, usage errors
            code = exit_.code
    return subprocess.CompletedProcess(["reidkit", "--quiet", *args], code, stdout.getvalue(), stderr.getvalue())
