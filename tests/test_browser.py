"""The search page in a real headless browser: uvicorn in a thread, Debian chromium driven by playwright.

Needs the `playwright` Python package and a chromium at $REIDKIT_CHROMIUM (default /usr/bin/chromium); no
`playwright install` download. Skipped when either is missing, except under CI (env CI set), where
conftest.py turns the skip into a failure. The screenshot goes to pytest's tmp dir and is copied to runs/artifacts/search_page.png.
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("REIDKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent.parent / "runs" / "artifacts"
TOPK = 8


def _missing() -> str | None:
    try:
        import fastapi  # noqa: F401
        import playwright.sync_api  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        return f"{error.name} is not installed (pip install playwright and reidkit[serve])"
    if not Path(CHROMIUM).is_file():
        return f"no chromium at {CHROMIUM} (apt-get install chromium, or set REIDKIT_CHROMIUM)"
    return None


if _missing():
    pytest.skip(_missing(), allow_module_level=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Base URL of a running service over an untrained tiny model, and a query whose exact nearest gallery
    item is a true match (same pid, other camera) by a clear margin."""
    import uvicorn

    from _untrained_run import build_untrained_run

    from reidkit.serve.app import create_app

    root = tmp_path_factory.mktemp("browser")
    run, index, queries, dataset = build_untrained_run(root)

    result = index.search(queries, k=2)
    candidates = [(float(result.distances[i, 1] - result.distances[i, 0]), i) for i, (_, pid, camid)
                  in enumerate(dataset.query) if int(index.pids[result.indices[i, 0]]) == pid
                  and int(index.camids[result.indices[i, 0]]) != camid]
    assert candidates, "no query has a true match first; the fixture needs one"
    margin, chosen = max(candidates)
    assert margin > 1e-4

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(root / "index.safetensors", run, topk=TOPK, query_features=root / "query.safetensors")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", dataset.query[chosen]
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser.new_page(viewport={"width": 1280, "height": 1000})
        browser.close()


def results(page) -> list[dict]:
    return page.eval_on_selector_all("#results figure.result", """figures => figures.map(f => ({
        rank: Number(f.dataset.rank), pid: Number(f.dataset.pid), camid: Number(f.dataset.camid),
        loaded: f.querySelector("img").complete && f.querySelector("img").naturalWidth > 0}))""")


def test_upload_finds_the_true_match_first(site, page, tmp_path):
    url, (path, pid, camid) = site
    page.goto(url)
    page.wait_for_selector("#queries .query img")  # the query strip is filled from /queries
    page.set_input_files("#file-input", path)
    page.click("#upload-button")
    page.wait_for_function(f"document.querySelectorAll('#results figure.result').length === {TOPK}")
    page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete)")
    found = results(page)
    assert page.locator("#results img").count() == TOPK
    assert [r["rank"] for r in found] == list(range(1, TOPK + 1)) and all(r["loaded"] for r in found)
    assert found[0]["pid"] == pid and found[0]["camid"] != camid
    assert page.text_content("#status") == f"{TOPK} results"
    shot = page.screenshot(path=str(tmp_path / "search_page.png"), full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "search_page.png", ARTIFACTS / "search_page.png")


def test_picking_a_query_marks_the_matches(site, page):
    url, _ = site
    page.goto(url)
    page.click("#queries .query[data-index='0']")
    page.wait_for_function(f"document.querySelectorAll('#results figure.result').length === {TOPK}")
    query_pid = page.evaluate("fetch('/queries').then(r => r.json()).then(a => a.queries[0].pid)")
    found = results(page)
    matches = page.eval_on_selector_all("#results figure.result.match", "figures => figures.length")
    assert matches == sum(r["pid"] == query_pid for r in found)


def test_a_bad_upload_shows_the_error(site, page, tmp_path):
    url, _ = site
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    page.goto(url)
    page.set_input_files("#file-input", str(bad))
    page.click("#upload-button")
    page.wait_for_selector("#status.error")
    assert page.text_content("#status").startswith("error 400") and page.locator("#results img").count() == 0
