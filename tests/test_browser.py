"""The search page in a real headless browser: uvicorn in a thread, Debian chromium driven by playwright.

Needs the `playwright` Python package and a chromium at $REIDKIT_CHROMIUM (default /usr/bin/chromium); no
`playwright install` download. Skipped when either is missing, except under CI (env CI set), where
conftest.py turns the skip into a failure. The screenshot goes to pytest's tmp dir and is copied to runs/artifacts/search_page.png.
"""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("REIDKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent.parent / "runs" / "artifacts"
TOPK = 8
THRESHOLD = 0.04  # the run's open-set threshold written by the fixture (between the nearest distances)


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
    from _live_server import serve_in_thread
    from _untrained_run import build_untrained_run
    from test_serve import write_open_set_metrics

    from reidkit.serve.app import create_app
    from reidkit.serve.security import add_token

    root = tmp_path_factory.mktemp("browser")
    run, index, queries, dataset = build_untrained_run(root)

    result = index.search(queries, k=2)
    candidates = [(float(result.distances[i, 1] - result.distances[i, 0]), i) for i, (_, pid, camid)
                  in enumerate(dataset.query) if int(index.pids[result.indices[i, 0]]) == pid
                  and int(index.camids[result.indices[i, 0]]) != camid]
    assert candidates, "no query has a true match first; the fixture needs one"
    margin, chosen = max(candidates)
    assert margin > 1e-4

    write_open_set_metrics(run, THRESHOLD)
    token = add_token(root / "tokens.json", "browser", ["search", "write"])
    app = create_app(root / "index.safetensors", run, topk=TOPK, query_features=root / "query.safetensors",
                     allow_add=True, tokens=root / "tokens.json", audit_log=root / "audit.jsonl")
    with serve_in_thread(app) as url:
        yield url, dataset.query[chosen], dataset.query, token


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser):
    """A page that ignores the service's Content-Security-Policy: playwright evaluates the tests' arrow-function
    predicates with eval, which the policy forbids. `strict_page` keeps the policy."""
    return browser.new_page(viewport={"width": 1280, "height": 1000}, bypass_csp=True)


@pytest.fixture(scope="module")
def strict_page(browser):
    """A page under the service's own Content-Security-Policy (the tests use expressions only, no eval)."""
    return browser.new_page(viewport={"width": 1280, "height": 1000})


def open_page(page, site) -> None:
    """Load the page and give it the token when it asks (a later test finds it kept in the tab's session)."""
    url, token = site[0], site[3]
    page.goto(url)
    page.wait_for_selector("#token-form:not([hidden]), #queries .query img")
    if page.is_visible("#token-form"):
        page.fill("#token-input", token)
        page.click("#token-button")
    page.wait_for_selector("#queries .query img")


def test_the_page_asks_for_a_token_and_keeps_it_for_the_session_only(site, strict_page):
    """Under its CSP (inline script and style allowed by hash, images as blob: URLs) the page works with a token."""
    url, _, _, token = site
    page = strict_page
    page.goto(url)
    page.evaluate("sessionStorage.clear()")
    page.reload()
    page.wait_for_selector("#token-form:not([hidden])")
    assert page.text_content("#status") == "this service needs a token: enter it above"
    assert page.locator("#queries .query").count() == 0
    page.fill("#token-input", "rk_wrong")
    page.click("#token-button")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('the token was refused')")
    page.fill("#token-input", token)
    page.click("#token-button")
    page.wait_for_selector("#queries .query img")
    page.wait_for_function("document.querySelector('#queries .query img').naturalWidth > 0")  # fetched with it
    assert page.is_hidden("#token-form") and page.text_content("#info").startswith("gallery of ")
    stored = page.evaluate("[sessionStorage.getItem('reidkit-token'), localStorage.length, document.cookie]")
    assert stored == [token, 0, ""]


def results(page) -> list[dict]:
    return page.eval_on_selector_all("#results figure.result", """figures => figures.map(f => ({
        rank: Number(f.dataset.rank), pid: Number(f.dataset.pid), camid: Number(f.dataset.camid),
        loaded: f.querySelector("img").complete && f.querySelector("img").naturalWidth > 0}))""")


def test_upload_finds_the_true_match_first(site, page, tmp_path):
    _, (path, pid, camid), _, _ = site
    open_page(page, site)  # the query strip is filled from /queries
    page.set_input_files("#file-input", path)
    page.click("#upload-button")
    page.wait_for_function(f"document.querySelectorAll('#results figure.result').length === {TOPK}")
    page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth)")
    found = results(page)
    assert page.locator("#results img").count() == TOPK
    assert [r["rank"] for r in found] == list(range(1, TOPK + 1)) and all(r["loaded"] for r in found)
    assert found[0]["pid"] == pid and found[0]["camid"] != camid
    assert page.text_content("#status") == f"{TOPK} results"
    # the decision on the nearest item against the run's threshold, as the page's figures say
    same = [f["same"] for f in page.eval_on_selector_all("#results figure.result",
                                                         "figures => figures.map(f => ({same: f.dataset.same}))")]
    decision = page.text_content("#decision")
    assert decision.startswith("same person (nearest distance" if same[0] == "true" else "no match (nearest distance")
    assert decision.endswith(f"{THRESHOLD:.4f})") and f"same person below {THRESHOLD:.4f}" in page.text_content("#info")
    assert page.text_content("#health").startswith("service ok")
    shot = page.screenshot(path=str(tmp_path / "search_page.png"), full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "search_page.png", ARTIFACTS / "search_page.png")


def test_picking_a_query_marks_the_matches(site, page):
    open_page(page, site)
    page.click("#queries .query[data-index='0']")
    page.wait_for_function(f"document.querySelectorAll('#results figure.result').length === {TOPK}")
    query_pid = page.evaluate("fetch('/queries', {headers: {Authorization: 'Bearer ' + sessionStorage.getItem("
                              "'reidkit-token')}}).then(r => r.json()).then(a => a.queries[0].pid)")
    found = results(page)
    matches = page.eval_on_selector_all("#results figure.result.match", "figures => figures.length")
    assert matches == sum(r["pid"] == query_pid for r in found)


def test_a_bad_upload_shows_the_error(site, page, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    open_page(page, site)
    page.set_input_files("#file-input", str(bad))
    page.click("#upload-button")
    page.wait_for_selector("#status.error")
    assert page.text_content("#status").startswith("error 400") and page.locator("#results img").count() == 0


def test_several_files_are_searched_in_one_batch(site, page):
    query = site[2]
    paths = [query[i][0] for i in (1, 2)]
    open_page(page, site)
    page.set_input_files("#file-input", paths)
    page.click("#upload-button")
    page.wait_for_function("document.querySelectorAll('#results .batch-group').length === 2")
    assert page.text_content("#status") == "2 queries searched"
    for i, path in enumerate(paths):
        group = page.locator(f"#results .batch-group[data-query='{i}']")
        assert group.locator("figure.result").count() == TOPK
        assert group.locator(".batch-query").text_content().startswith(f"query {i + 1} ({Path(path).name}): ")


def test_adding_an_image_grows_the_gallery(site, page):
    query = site[2]
    open_page(page, site)
    page.wait_for_selector("#add-button:not([hidden])")
    before = int(page.text_content("#info").split()[2])
    page.set_input_files("#file-input", query[5][0])
    page.click("#add-button")
    page.wait_for_function(f"document.getElementById('info').textContent.startsWith('gallery of {before + 1} ')")
    assert page.text_content("#status") == f"added 1 images; the gallery holds {before + 1}"
    page.click("#upload-button")  # the added image now finds itself first, at distance 0
    page.wait_for_function(f"document.querySelectorAll('#results figure.result').length === {TOPK}")
    assert " · d 0.0000" in page.locator("#results figure.result[data-rank='1'] figcaption").text_content()
