"""Shared by the service tests: the app served by uvicorn in a thread on a free port, or the `reidkit serve`
command in its own process (for its memory and its log)."""

import contextlib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


@contextlib.contextmanager
def serve_in_thread(app):
    """Yield the base URL of `app` served by uvicorn in a daemon thread until the block ends."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def serve_in_process(log: Path, *options: str):
    """Yield (base URL, process) of `reidkit serve OPTIONS` on a free port; its stdout and stderr go to `log`."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "reidkit", "serve", "--port", str(port), *options],
                                   stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # imports take minutes on a loaded 2-core machine
        while True:
            assert process.poll() is None, f"reidkit serve stopped: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "reidkit serve did not start"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/info", timeout=2).status_code in (200, 401):  # 401: up, with tokens
                    break
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def peak_rss_bytes(pid: int) -> int:
    """The peak resident memory (VmHWM) of process `pid`."""
    return _status_kb(pid, "VmHWM") * 1024


def rss_bytes(pid: int) -> int:
    """The resident memory (VmRSS) of process `pid` now."""
    return _status_kb(pid, "VmRSS") * 1024


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)
