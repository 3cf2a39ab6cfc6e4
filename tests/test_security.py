"""The search service's security with real HTTP requests on 127.0.0.1 (uvicorn in a thread): tokens and scopes,
rate limits, the audit log, headers, origin checks, filters and retention, over the file index and Milvus."""

import hashlib
import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from _live_server import serve_in_thread  # noqa: E402
from _untrained_run import build_untrained_run  # noqa: E402

from reidkit.errors import ReidkitError  # noqa: E402
from reidkit.retrieval.filters import SearchFilter  # noqa: E402
from reidkit.retrieval.gallery import NewItems, open_gallery  # noqa: E402
from reidkit.serve.app import ROUTE_SCOPES, create_app, serve  # noqa: E402
from reidkit.serve.security import FAILURE_BURST, add_token, remove_token  # noqa: E402

TOPK = 5


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """(root, run, index file, query features, query samples, tokens file, {token id: secret})."""
    root = tmp_path_factory.mktemp("security")
    run, _, _, dataset = build_untrained_run(root)
    tokens = root / "tokens.json"
    secrets = {name: add_token(tokens, name, scopes) for name, scopes in
               (("reader", ["search"]), ("writer", ["search", "write"]), ("leaving", ["search"]))}
    return root, run, root / "index.safetensors", root / "query.safetensors", dataset.query, tokens, secrets


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def make_app(service, tmp_path, index=None, **options):
    root, run, index_file, queries, _, tokens, _ = service
    return create_app(index or index_file, run, topk=TOPK, query_features=queries, tokens=tokens,
                      audit_log=tmp_path / "audit.jsonl", **options)


@pytest.fixture(scope="module")
def site(service, tmp_path_factory):
    """Base URL of a service with tokens (no writes), and its audit log."""
    folder = tmp_path_factory.mktemp("site")
    with serve_in_thread(make_app(service, folder)) as url:
        yield url, folder / "audit.jsonl"


def test_every_route_is_guarded_and_scoped(service, tmp_path, site):
    app = make_app(service, tmp_path)
    routes = [route for route in app.routes if hasattr(route, "dependant")]
    declared = {(method, route.path) for route in routes for method in route.methods}
    assert declared == set(ROUTE_SCOPES)  # every route has a scope, and no scope names a route that is gone
    guard = app.router.dependencies[0].dependency
    assert all(guard in [dependency.call for dependency in route.dependant.dependencies] for route in routes)
    url, _ = site
    for method, path in sorted(ROUTE_SCOPES):  # real requests without a token: only the page answers
        response = httpx.request(method, url + path.replace("{split}", "gallery").replace("{number}", "0"))
        assert response.status_code == (200 if ROUTE_SCOPES[(method, path)] is None else 401), (method, path)
        if response.status_code == 401:
            assert response.headers["www-authenticate"] == "Bearer" and "token" in response.json()["detail"]


def test_tokens_and_scopes(service, site):
    url, _ = site
    secrets = service[6]
    assert httpx.get(url + "/info", headers=bearer("rk_wrong")).status_code == 401
    assert httpx.get(url + "/info", headers={"Authorization": secrets["reader"]}).status_code == 401  # no "Bearer"
    info = httpx.get(url + "/info", headers=bearer(secrets["reader"]))
    assert info.status_code == 200 and info.json()["authentication"] is True
    answer = httpx.post(url + "/search", json={"query_index": 2}, headers=bearer(secrets["reader"]))
    assert answer.status_code == 200 and len(answer.json()["results"]) == TOPK
    image = httpx.get(url + answer.json()["results"][0]["image_url"], headers=bearer(secrets["reader"]))
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    refused = httpx.post(url + "/gallery/delete", json={"ids": [0]}, headers=bearer(secrets["reader"]))
    assert refused.status_code == 403 and "lacks the 'write' scope" in refused.json()["detail"]


def test_a_removed_or_expired_token_is_refused_at_once(service, site, tmp_path):
    url, _ = site
    tokens, secrets = service[5], service[6]
    assert httpx.get(url + "/health", headers=bearer(secrets["leaving"])).status_code == 200
    remove_token(tokens, "leaving")
    assert httpx.get(url + "/health", headers=bearer(secrets["leaving"])).status_code == 401
    expired = add_token(tokens, "expired", ["search"], days=1e-9)
    assert httpx.get(url + "/health", headers=bearer(expired)).status_code == 401
    assert httpx.get(url + "/health", headers=bearer(secrets["reader"])).status_code == 200


def test_guessing_tokens_hits_the_rate_limit(service, tmp_path):
    with serve_in_thread(make_app(service, tmp_path)) as url:
        codes = [httpx.get(url + "/info", headers=bearer(f"rk_guess{i}")) for i in range(FAILURE_BURST + 2)]
        assert [r.status_code for r in codes[:FAILURE_BURST]] == [401] * FAILURE_BURST
        assert codes[-1].status_code == 429 and int(codes[-1].headers["retry-after"]) >= 1
        # the real token is still let in: the failures count against guessing, not against the token
        assert httpx.get(url + "/info", headers=bearer(service[6]["reader"])).status_code == 200


def test_each_token_has_its_own_rate_limit(service, tmp_path):
    secrets = service[6]
    # 0.01 requests per second in bursts of 1: the second request within 100 s is over the limit
    with serve_in_thread(make_app(service, tmp_path, rate_limit=0.01)) as url:
        codes = [httpx.get(url + "/health", headers=bearer(secrets["reader"])) for _ in range(2)]
        assert codes[0].status_code == 200 and codes[1].status_code == 429
        assert 1 <= int(codes[1].headers["retry-after"]) <= 100 and "rate limit" in codes[1].json()["detail"]
        assert httpx.get(url + "/health", headers=bearer(secrets["writer"])).status_code == 200


def test_the_audit_log_names_token_endpoint_query_digest_and_results(service, site):
    url, audit = site
    query = Path(service[4][3][0]).read_bytes()
    answer = httpx.post(url + "/search", files={"image": ("q.jpg", query, "image/jpeg")},
                        headers=bearer(service[6]["reader"])).json()
    httpx.post(url + "/search", json={"query_index": 1})  # refused: no token
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    upload = [r for r in records if r.get("path") == "/search" and r["status"] == 200 and "sha256" in r["query"]][-1]
    assert upload["token"] == "reader" and upload["method"] == "POST" and upload["client"] == "127.0.0.1"
    assert upload["query"]["sha256"] == hashlib.sha256(query).hexdigest()
    assert upload["returned"] == [result["index"] for result in answer["results"]]
    refused = records[-1]
    assert (refused["path"], refused["status"], refused["token"]) == ("/search", 401, None)
    assert query.hex()[:64] not in audit.read_text() and "rk_" not in audit.read_text()  # no bytes, no secret


def test_security_headers_and_no_cross_origin_access(service, site):
    url, _ = site
    page = httpx.get(url + "/")
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy and "'unsafe-inline'" not in policy
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    assert "token-form" in page.text and "sessionStorage.setItem" in page.text and "localStorage." not in page.text
    json_answer = httpx.get(url + "/info", headers=bearer(service[6]["reader"]))
    assert json_answer.headers["x-content-type-options"] == "nosniff" and "access-control-allow-origin" not in \
        json_answer.headers
    preflight = httpx.options(url + "/search", headers={"Origin": "http://evil.example",
                                                        "Access-Control-Request-Method": "POST"})
    assert preflight.status_code >= 400 and "access-control-allow-origin" not in preflight.headers
    foreign = httpx.post(url + "/search", json={"query_index": 0},
                         headers={**bearer(service[6]["reader"]), "Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "cross-origin" in foreign.json()["detail"]


def test_a_public_bind_without_tokens_is_refused(service, capsys):
    from reidkit.cli import main

    with pytest.raises(ReidkitError, match="reachable from other machines"):
        serve(service[2], host="0.0.0.0")
    assert main(["serve", "--index", str(service[2]), "--host", "192.0.2.1"]) == 2
    assert "--insecure-no-auth" in capsys.readouterr().err


def milvus_copy(index_file: Path, out: Path):
    """A Milvus Lite gallery holding the items of the index file, with the same ids and metadata."""
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from reidkit.retrieval.milvus_backend import MilvusGallery

    index = open_gallery(index_file)
    gallery = MilvusGallery.create(out, index.dim, index.metric, "milvus-flat", run_dir=index.run_dir,
                                   model_digest=index.model_digest, image_roots=index.image_roots)
    gallery.add(index.features, NewItems(index.pids.tolist(), index.camids.tolist(), index.timestamps.tolist(),
                                         index.track_ids.tolist(), index.paths, index.file_ids.numpy()))
    return gallery


@pytest.mark.parametrize("backend", ["exact", "milvus-flat"])
def test_filters_and_retention_through_the_service(service, tmp_path, backend):
    import shutil

    root, _, index_file, _, _, _, secrets = service
    writer = bearer(secrets["writer"])
    copy = tmp_path / "index.safetensors"
    shutil.copy(index_file, copy)
    location = copy if backend == "exact" else tmp_path / "gallery.db"
    if backend != "exact":
        milvus_copy(index_file, location)
    with serve_in_thread(make_app(service, tmp_path, index=location, allow_delete=True)) as url:
        reference = open_gallery(index_file)
        cameras = sorted(set(reference.camids.tolist()))[:2]
        answer = httpx.post(url + f"/search?cameras={','.join(str(c + 1) for c in cameras)}", json={"query_index": 4},
                            headers=writer).json()
        assert {r["camid"] for r in answer["results"]} <= set(cameras)
        expected = reference.search(_query_features(root)[4:5], TOPK, where=SearchFilter(camids=tuple(cameras)))
        assert [r["index"] for r in answer["results"]] == expected.ids[0].tolist()
        bad = httpx.post(url + "/search?cameras=0", json={"query_index": 4}, headers=writer)
        assert bad.status_code == 400 and "camera numbers from 1" in bad.json()["detail"]
        # retention: delete the first camera's items; none comes back, none is served
        doomed = [int(i) for i in reference.item_ids[reference.camids == cameras[0]].tolist()]
        kept = int(reference.item_ids[reference.camids != cameras[0]][0])
        deleted = httpx.post(url + "/gallery/delete", json={"cameras": [cameras[0] + 1]}, headers=writer).json()
        assert deleted["deleted"] == doomed and deleted["gallery_size"] == len(reference.paths) - len(doomed)
        for number in range(6):
            found = httpx.post(url + "/search", json={"query_index": number}, headers=writer).json()["results"]
            assert not {r["index"] for r in found} & set(doomed)
        assert httpx.get(url + f"/image/gallery/{doomed[0]}", headers=writer).status_code == 404
        assert httpx.get(url + f"/image/gallery/{kept}", headers=writer).status_code == 200
    assert open_gallery(location).count() == len(reference.paths) - len(doomed)  # saved: a restart keeps it


def _query_features(root: Path):
    from reidkit.retrieval.feature_files import load_feature_file

    return load_feature_file(root / "query.safetensors")[0]


def test_nothing_is_answered_unaudited(service, tmp_path):
    with serve_in_thread(make_app(service, tmp_path)) as url:
        reader = bearer(service[6]["reader"])
        assert httpx.post(url + "/search", json={"query_index": 0}, headers=reader).status_code == 200
        (tmp_path / "audit.jsonl").unlink()
        (tmp_path / "audit.jsonl").mkdir()  # the log cannot be appended to any more
        failed = httpx.post(url + "/search", json={"query_index": 0}, headers=reader)
        assert failed.status_code == 500 and "results" not in failed.text


def test_reidkit_index_builds_a_milvus_gallery_like_the_file_index(service, tmp_path, capsys):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from reidkit.cli import main

    root, run = service[0], service[1]
    gallery_dir = str(root / "data" / "bounding_box_test")
    assert main(["--quiet", "index", "--run", str(run), "--gallery", gallery_dir, "--backend", "milvus-flat",
                 "--out", str(tmp_path / "g.db")]) == 0
    assert main(["--quiet", "index", "--run", str(run), "--gallery", gallery_dir, "--out",
                 str(tmp_path / "g.safetensors")]) == 0
    milvus, exact = open_gallery(tmp_path / "g.db"), open_gallery(tmp_path / "g.safetensors")
    assert milvus.count() == exact.count() and milvus.model_digest == exact.model_digest != ""
    assert milvus.image_roots == exact.image_roots and milvus.run_dir == exact.run_dir
    ids = list(range(exact.count()))
    assert milvus.items(ids) == exact.items(ids)  # paths, cameras, file times, file identities
    queries = _query_features(root)
    assert milvus.search(queries, TOPK).ids.tolist() == exact.search(queries, TOPK).ids.tolist()
    assert main(["--quiet", "index", "--run", str(run), "--gallery", gallery_dir, "--backend", "milvus-flat",
                 "--out", str(tmp_path / "g.safetensors")]) == 2
    assert "a milvus-flat gallery is a Milvus Lite file" in capsys.readouterr().err
