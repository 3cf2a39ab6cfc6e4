"""The search service with FastAPI's TestClient: results, query picks, upload limits, no file access."""

import asyncio
import io
import json
import os
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("python_multipart")
from _untrained_run import build_untrained_run  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from reidkit.errors import ReidkitError  # noqa: E402
from reidkit.retrieval import GalleryIndex  # noqa: E402
from reidkit.serve.app import create_app, decode_upload  # noqa: E402

TOPK = 5
RESULT_KEYS = {"rank", "index", "path", "image_url", "pid", "camid", "distance", "same_person"}
THRESHOLD = 0.02  # the run's open-set threshold written by the fixture


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """(run folder, index file, query feature file, query samples) of an untrained tiny model."""
    root = tmp_path_factory.mktemp("serve")
    run, _, _, dataset = build_untrained_run(root)
    write_open_set_metrics(run, THRESHOLD)
    return run, root / "index.safetensors", root / "query.safetensors", dataset.query


def write_open_set_metrics(run: Path, threshold: float) -> None:
    """A metrics.json with the open-set figures a decision reads (as `reidkit eval` writes them)."""
    figures = {"pairs": "test", "metric": "cosine", "threshold": threshold, "target_fpr": 0.001, "eer": 0.25}
    (run / "metrics.json").write_text(json.dumps({"rank1": 0.5, "mAP": 0.4, "mINP": 0.3, "open_set": figures}))


@pytest.fixture(scope="module")
def client(service):
    run, index, queries, _ = service
    return TestClient(create_app(index, run, topk=TOPK, query_features=queries))


@pytest.fixture(scope="module")
def strict_client(service):
    run, index, queries, _ = service
    return TestClient(create_app(index, run, topk=TOPK, query_features=queries, max_upload_bytes=20_000,
                                 max_pixels=100 * 100))


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def upload(client: TestClient, data: bytes, content_type: str = "image/jpeg", name: str = "query.jpg"):
    return client.post("/search", files={"image": (name, data, content_type)})


def check_results(results: list[dict]) -> None:
    assert len(results) == TOPK
    assert all(set(r) == RESULT_KEYS for r in results)
    assert [r["rank"] for r in results] == list(range(1, TOPK + 1))
    assert all(isinstance(r["pid"], int) and isinstance(r["camid"], int) for r in results)
    assert all(r["image_url"] == f"/image/gallery/{r['index']}" for r in results)
    distances = [r["distance"] for r in results]
    assert distances == sorted(distances)


def test_page_is_self_contained(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    for marker in ('id="upload-form"', 'id="queries"', 'id="results"', 'id="decision"', 'post("/search"',
                   'post("/search/batch"', 'post("/gallery"', 'api("/health")'):
        assert marker in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    info = client.get("/info").json()
    assert info["topk"] == TOPK and info["uploads"] is True and info["num_queries"] == 21


def test_query_index_search_equals_the_index(service, client):
    _, index_path, query_path, query = service
    index = GalleryIndex.load(index_path)
    features = GalleryIndex.from_feature_file(query_path).features
    expected = index.search(features[3:4], k=TOPK)
    answer = client.post("/search", json={"query_index": 3}).json()
    check_results(answer["results"])
    assert [r["index"] for r in answer["results"]] == expected.indices[0].tolist()
    np.testing.assert_allclose([r["distance"] for r in answer["results"]], expected.distances[0], atol=1e-6)
    assert answer["query"]["pid"] == query[3][1] and answer["query"]["image_url"] == "/image/query/3"
    assert len(client.get("/queries").json()["queries"]) == len(query)


def test_uploading_a_query_image_finds_what_its_index_finds(service, client):
    _, _, _, query = service
    data = Path(query[3][0]).read_bytes()
    answer = upload(client, data).json()
    check_results(answer["results"])
    picked = client.post("/search", json={"query_index": 3}).json()
    assert [r["index"] for r in answer["results"]] == [r["index"] for r in picked["results"]]
    np.testing.assert_allclose([r["distance"] for r in answer["results"]],
                               [r["distance"] for r in picked["results"]], atol=1e-5)
    png = encode(Image.open(query[3][0]), "PNG")
    assert upload(client, png, "image/png", "query.png").status_code == 200


def test_images_are_served_from_the_index_only(service, client):
    _, _, _, query = service
    response = client.get("/image/query/3")
    assert response.status_code == 200 and response.content == Path(query[3][0]).read_bytes()
    assert client.get("/image/gallery/0").status_code == 200
    for url in ("/image/gallery/../../../etc/passwd", "/image/gallery/..%2F..%2Fetc%2Fpasswd",
                "/image/..%2F..%2Fetc/passwd", "/image/gallery/%2Fetc%2Fpasswd", "/image/gallery/-1",
                "/image/gallery/1e3", "/image/gallery/0x1", "/image/gallery/99999", "/image/secrets/0",
                "/image/gallery/0/..", "/etc/passwd"):
        assert client.get(url).status_code == 404, url


def test_upload_limits(service, strict_client):
    _, _, _, query = service
    assert upload(strict_client, Path(query[0][0]).read_bytes()).status_code == 200  # small and within limits
    too_big = upload(strict_client, encode(Image.effect_noise((300, 300), 60).convert("RGB"), "PNG"), "image/png")
    assert too_big.status_code == 413 and "limit" in too_big.json()["detail"]
    just_over = upload(strict_client, b"\xff" * 20_001)  # within the multipart allowance, over the file limit
    assert just_over.status_code == 413 and "20001 bytes" in just_over.json()["detail"]
    too_many_pixels = upload(strict_client, encode(Image.new("RGB", (101, 100)), "PNG"), "image/png")
    assert too_many_pixels.status_code == 413 and "pixels" in too_many_pixels.json()["detail"]


def test_huge_image_header_is_refused_before_decoding(client):
    bomb = encode(Image.new("1", (5000, 5000)), "PNG")  # 25 Mpx in a few kB, above 4096×4096
    response = upload(client, bomb, "image/png")
    assert len(bomb) < 100_000 and response.status_code == 413


@pytest.mark.parametrize("content_type, data, status", [
    ("text/plain", b"hello", 415),
    ("image/gif", encode(Image.new("RGB", (8, 8)), "GIF"), 415),
    ("image/jpeg", b"definitely not a jpeg", 400),
    ("image/png", encode(Image.new("RGB", (8, 8)), "GIF"), 400),  # a GIF posing as a PNG
    ("image/jpeg", b"", 400),
])
def test_bad_uploads_get_a_clear_4xx(client, content_type, data, status):
    response = upload(client, data, content_type)
    assert response.status_code == status and response.json()["detail"]


def test_truncated_jpeg_is_a_400(service, client):
    _, _, _, query = service
    data = Path(query[0][0]).read_bytes()
    response = upload(client, data[: len(data) // 2])
    assert response.status_code == 400 and "corrupt" in response.json()["detail"]


def test_bad_requests(client):
    assert client.post("/search", json={"query_index": "3"}).status_code == 400
    assert client.post("/search", json={"query_index": True}).status_code == 400
    assert client.post("/search", json={"query_index": 10_000}).status_code == 404
    assert client.post("/search", json={"query_index": -1}).status_code == 404
    assert client.post("/search", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/search", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    assert client.post("/search", data={"field": "no file"}, files={}).status_code in (400, 415)
    no_file = client.post("/search", content=b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b--\r\n",
                          headers={"content-type": "multipart/form-data; boundary=b"})
    assert no_file.status_code == 400 and "no file" in no_file.json()["detail"]


def test_without_a_run_uploads_are_disabled(service):
    _, index, queries, query = service
    client = TestClient(create_app(index, query_features=queries, topk=TOPK))
    assert upload(client, Path(query[0][0]).read_bytes()).status_code == 501
    check_results(client.post("/search", json={"query_index": 0}).json()["results"])
    bare = TestClient(create_app(index, topk=TOPK))
    assert bare.post("/search", json={"query_index": 0}).status_code == 404
    assert bare.get("/queries").json() == {"queries": []}


def test_the_run_named_by_the_index_enables_uploads(service, tmp_path):
    run, index_path, _, query = service
    index = GalleryIndex.load(index_path)
    GalleryIndex(index.features, index.pids, index.camids, index.paths, index.metric, run_dir=str(run),
                 model_digest=index.model_digest).save(tmp_path / "named.safetensors")
    client = TestClient(create_app(tmp_path / "named.safetensors", topk=TOPK))  # query set: the run's split
    assert client.get("/info").json()["uploads"] is True
    check_results(upload(client, Path(query[3][0]).read_bytes()).json()["results"])
    assert client.post("/search", json={"query_index": 3}).json()["query"]["path"] == query[3][0]


def test_decode_upload_and_dimension_check(service, tmp_path):
    image = decode_upload(encode(Image.new("L", (4, 6)), "PNG"), "image/png; charset=binary", 10_000, 100)
    assert image.mode == "RGB" and image.size == (4, 6)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    buffer = io.BytesIO()
    Image.new("RGB", (4, 6)).save(buffer, format="JPEG", exif=exif)
    assert decode_upload(buffer.getvalue(), "image/jpeg", 10_000, 100).size == (6, 4)
    run, _, queries, _ = service
    GalleryIndex(torch.zeros(2, 7), [1, 2], [0, 1], ["a.jpg", "b.jpg"],
                 model_digest=GalleryIndex.load(service[1]).model_digest).save(tmp_path / "other.safetensors")
    with pytest.raises(ReidkitError, match="dimension"):
        create_app(tmp_path / "other.safetensors", query_features=queries)


def test_a_missing_extra_is_named(service, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(ReidkitError, match=r"reidkit\[serve\]"):
        create_app(service[1])


# --- decisions, health, batch search, gallery additions (issue 16) -------------------------------------------

def test_decisions_follow_the_runs_threshold_or_the_query_parameter(client):
    answer = client.post("/search", json={"query_index": 3}).json()
    decision, results = answer["decision"], answer["results"]
    assert decision["threshold"] == THRESHOLD and "FPR ≤ 0.001 on test pairs" in decision["source"]
    assert [r["same_person"] for r in results] == [r["distance"] < THRESHOLD for r in results]
    assert decision["same_person"] == (results[0]["distance"] < THRESHOLD)
    everyone = client.post("/search?threshold=2", json={"query_index": 3}).json()
    assert everyone["decision"] == {"same_person": True, "threshold": 2.0, "source": "given threshold",
                                    "nearest_distance": results[0]["distance"]}
    assert all(r["same_person"] for r in everyone["results"])
    nobody = client.post("/search?threshold=0", json={"query_index": 3}).json()
    assert nobody["decision"]["same_person"] is False and not any(r["same_person"] for r in nobody["results"])
    info = client.get("/info").json()
    assert info["threshold"] == THRESHOLD and info["max_batch"] == 8 and info["can_add"] is False


def test_health(service, client):
    from reidkit.engine.indexing import model_digest

    health = client.get("/health").json()
    assert health == {"status": "ok", "gallery_size": len(GalleryIndex.load(service[1])), "uploads_in_progress": 0,
                      "uploads_waiting": 0, "model_digest": model_digest(service[0])}


def test_batch_search_answers_each_file_as_a_single_search(service, client):
    _, _, _, query = service
    files = [("images", (Path(query[i][0]).name, Path(query[i][0]).read_bytes(), "image/jpeg")) for i in (3, 5, 7)]
    answers = client.post("/search/batch", files=files).json()["answers"]
    assert [a["query"]["name"] for a in answers] == [Path(query[i][0]).name for i in (3, 5, 7)]
    for i, answer in zip((3, 5, 7), answers):
        single = upload(client, Path(query[i][0]).read_bytes()).json()
        check_results(answer["results"])
        assert [r["index"] for r in answer["results"]] == [r["index"] for r in single["results"]]
        np.testing.assert_allclose([r["distance"] for r in answer["results"]],
                                   [r["distance"] for r in single["results"]], atol=1e-5)
        assert answer["decision"]["same_person"] == single["decision"]["same_person"]
    broken = files[:1] + [("images", ("bad.jpg", b"not a jpeg", "image/jpeg"))]
    refused = client.post("/search/batch", files=broken)
    assert refused.status_code == 400 and refused.json()["detail"].startswith("file 2 of 2:")
    too_many = client.post("/search/batch", files=files * 3)  # 9 files > max_batch 8
    assert too_many.status_code == 400 and "Too many files" in too_many.json()["detail"]
    assert client.post("/search/batch", json={"query_index": 1}).status_code == 415


def copy_of_the_run(service, tmp_path) -> tuple[Path, Path]:
    """(run copy, index of its gallery recording the copy's model digest and its run folder)."""
    from reidkit.engine.indexing import model_digest

    run, index_path, _, _ = service
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    index = GalleryIndex.load(index_path)
    GalleryIndex(index.features, index.pids, index.camids, index.paths, index.metric, run_dir=str(copy),
                 model_digest=model_digest(copy)).save(tmp_path / "index.safetensors")
    return copy, tmp_path / "index.safetensors"


def test_added_images_are_searchable_persisted_and_served(service, tmp_path, monkeypatch):
    _, _, queries, query = service
    run, index_path = copy_of_the_run(service, tmp_path)
    assert TestClient(create_app(index_path, query_features=queries)).post("/gallery").status_code == 403
    app = create_app(index_path, query_features=queries, topk=TOPK, allow_add=True)
    client = TestClient(app)
    before, size = index_path.read_bytes(), len(GalleryIndex.load(index_path))
    new = [Path(query[i][0]) for i in (2, 4)]
    files = [("images", (path.name, path.read_bytes(), "image/jpeg")) for path in new]
    monkeypatch.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    full = client.post("/gallery", files=files)  # the index file cannot be replaced: nothing changes
    assert full.status_code == 507 and str(tmp_path) not in full.json()["detail"]
    assert index_path.read_bytes() == before and client.get("/info").json()["gallery_size"] == size
    monkeypatch.undo()
    added = client.post("/gallery", files=files).json()
    assert added["gallery_size"] == size + 2 and [a["index"] for a in added["added"]] == [size, size + 1]
    assert [(a["pid"], a["camid"]) for a in added["added"]] == [(query[i][1], query[i][2]) for i in (2, 4)]
    saved = GalleryIndex.load(index_path)  # persisted: a restarted service sees the additions
    assert len(saved) == size + 2 and saved.model_digest == GalleryIndex.load(index_path).model_digest != ""
    assert all(Path(p).parent == tmp_path / "index_images" for p in saved.paths[size:])
    assert str((tmp_path / "index_images").resolve()) in saved.image_roots
    assert not list(tmp_path.glob("*.tmp")) and not list((tmp_path / "index_images").glob("*.tmp"))
    found = upload(client, new[1].read_bytes()).json()["results"][0]  # an added image finds itself first
    assert found["index"] == size + 1 and found["distance"] < 1e-4
    assert client.get(f"/image/gallery/{size + 1}").content == new[1].read_bytes()
    restarted = TestClient(create_app(index_path, query_features=queries))
    assert restarted.get("/info").json()["gallery_size"] == size + 2
    (run / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes() + b" ")  # another model now
    changed = client.post("/gallery", files=files[:1])
    assert changed.status_code == 409 and "model changed" in changed.json()["detail"]
    assert len(GalleryIndex.load(index_path)) == size + 2


# --- issue 15: query features of another model (6), confined images (7) ----------------------------------

def with_model_digest(source: Path, out: Path, digest: str) -> Path:
    """A copy of a feature file whose metadata records `digest` as the model that made it."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), "pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = handle.metadata()
    save_file(tensors, str(out), metadata={**metadata, "model_digest": digest})
    return out


def test_query_features_of_another_model_are_refused(service, tmp_path):
    run, index_path, queries, _ = service
    index = GalleryIndex.load(index_path)
    GalleryIndex(index.features, index.pids, index.camids, index.paths, index.metric,
                 model_digest="a" * 64).save(tmp_path / "index.safetensors")
    other = with_model_digest(queries, tmp_path / "other.safetensors", "b" * 64)
    with pytest.raises(ReidkitError, match=r"different models \(weights SHA-256 bbbbbbbbbbbb… and aaaaaaaaaaaa…\)"):
        create_app(tmp_path / "index.safetensors", query_features=other)
    same = with_model_digest(queries, tmp_path / "same.safetensors", "a" * 64)
    assert TestClient(create_app(tmp_path / "index.safetensors", query_features=same)).get(
        "/info").json()["num_queries"] == 21


def test_reidkit_extract_records_the_model_digest(service, tmp_path):
    from reidkit.cli import main
    from reidkit.engine.indexing import model_digest
    from reidkit.retrieval.feature_files import feature_file_metadata

    run = service[0]
    assert main(["--quiet", "extract", "--run", str(run), "--split", "query", "--out", str(tmp_path / "q.st")]) == 0
    assert feature_file_metadata(tmp_path / "q.st")["model_digest"] == model_digest(run) != ""


def test_images_are_confined_to_the_folders_recorded_at_index_time(tmp_path):
    gallery, outside = tmp_path / "gallery", tmp_path / "outside"
    gallery.mkdir()
    outside.mkdir()
    for folder, name in ((gallery, "0001_c1s1_000001_01.jpg"), (gallery, "0001_c2s1_000001_01.jpg"),
                         (outside, "secret.jpg")):
        Image.new("RGB", (8, 16), (len(name), 0, 0)).save(folder / name)
    paths = [str(p) for p in sorted(gallery.iterdir())] + [str(outside / "secret.jpg"), "/etc/passwd"]
    GalleryIndex(torch.randn(4, 3), [1, 1, 2, 3], [0, 1, 0, 0], paths,
                 image_roots=[str(gallery)]).save(tmp_path / "index.safetensors")
    client = TestClient(create_app(tmp_path / "index.safetensors"))
    assert client.get("/image/gallery/0").content == Path(paths[0]).read_bytes()
    second = Path(paths[1])
    second.unlink()
    second.symlink_to(outside / "secret.jpg")  # replaced after indexing by a link leaving the folder
    for number in (1, 2, 3):  # the link, an edited index naming a file outside, a non-image
        refused = client.get(f"/image/gallery/{number}")
        assert refused.status_code == 404 and refused.json() == {"detail": f"no image gallery/{number}"}
    second.unlink()
    second.symlink_to(paths[0])  # a link staying inside the folder is served
    assert client.get("/image/gallery/1").content == Path(paths[0]).read_bytes()
    # an index without recorded folders serves none (issue 23, item 8: it took their common parent, maybe `/`)
    GalleryIndex(torch.randn(2, 3), [1, 1], [0, 1], paths[:2]).save(tmp_path / "old.safetensors")
    old = TestClient(create_app(tmp_path / "old.safetensors"))
    assert [old.get(f"/image/gallery/{i}").status_code for i in (0, 1)] == [404, 404]


# --- issue 15: bounded uploads with real concurrent requests (1), body timeout and disconnects (9) -------------

def test_decoding_runs_off_the_event_loop_bounded_and_refuses_when_full(service, monkeypatch):
    """Decodes that block (a slow, huge image) leave the server answering; at most max_decodes run at once;
    with max_uploads held and max_waiting waiting, the next upload is a 503 with Retry-After."""
    import httpx
    from _live_server import serve_in_thread

    import reidkit.serve.app

    run, index, queries, query = service
    release, lock, state = threading.Event(), threading.Lock(), {"now": 0, "most": 0, "started": 0}
    real = reidkit.serve.app.decode_upload

    def slow_decode(*args, **kwargs):
        with lock:
            state["now"] += 1
            state["started"] += 1
            state["most"] = max(state["most"], state["now"])
        release.wait(timeout=20)
        with lock:
            state["now"] -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(reidkit.serve.app, "decode_upload", slow_decode)
    app = create_app(index, run, topk=TOPK, query_features=queries, max_uploads=2, max_waiting=1, max_decodes=1,
                     max_batch=1)
    data = Path(query[0][0]).read_bytes()

    async def scenario(url: str):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            def post():
                return http.post("/search", files={"image": ("q.jpg", data, "image/jpeg")})
            held = [asyncio.create_task(post()) for _ in range(3)]  # 2 hold the slots (1 decoding), 1 waits
            for _ in range(200):
                await asyncio.sleep(0.05)
                health = (await http.get("/health", timeout=5)).json()  # answered while a decode blocks
                if state["started"] == 1 and (health["uploads_in_progress"], health["uploads_waiting"]) == (2, 1):
                    break
            assert (health["uploads_in_progress"], health["uploads_waiting"]) == (2, 1), health
            busy = await post()
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert "busy" in busy.json()["detail"]
            release.set()
            return [await task for task in held]

    with serve_in_thread(app) as url:
        answers = asyncio.run(scenario(url))
    assert [a.status_code for a in answers] == [200, 200, 200] and state["most"] == 1


def read_answer(sock) -> str:
    """One HTTP answer (head and its Content-Length of body) read from a socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return (head + b"\r\n\r\n" + body).decode("utf-8")


def test_a_slow_body_times_out_with_408(service):
    import socket

    from _live_server import serve_in_thread

    run, index, queries, _ = service
    app = create_app(index, run, topk=TOPK, query_features=queries, body_timeout=0.5)
    with serve_in_thread(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                         b"Content-Length: 100000\r\n\r\n--b\r\n")  # then nothing more
            answer = read_answer(sock)
    assert answer.startswith("HTTP/1.1 408") and "not received within 0.5 s" in answer


@pytest.fixture(scope="module")
def server_process(service, tmp_path_factory):
    """`reidkit serve` of the fixture's run in its own process (defaults: 16 uploads held, 2 decodes; a long
    body timeout, which also bounds the wait for a slot, for a loaded test machine), and its log file."""
    from _live_server import serve_in_process

    run, index, queries, _ = service
    log = tmp_path_factory.mktemp("serve_log") / "serve.log"
    with serve_in_process(log, "--index", str(index), "--run", str(run), "--queries", str(queries),
                          "--body-timeout", "300") as (url, process):
        yield url, process, log


def test_a_client_leaving_mid_body_is_one_log_line(server_process):
    import socket

    url, _, log = server_process
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 100000\r\n\r\n--b\r\n" + b"x" * 1000)
    for _ in range(100):
        text = log.read_text()
        if "disconnected" in text:
            break
        threading.Event().wait(0.1)
    lines = [line for line in text.splitlines() if "disconnected" in line]
    assert len(lines) == 1 and "before sending the whole body (1005 of 100000 bytes)" in lines[0]
    assert "Traceback" not in text


UPLOAD_SIDE = 1024  # each upload decodes to 1024 × 1024 RGB = 3 MB (before: 120 of them grew RSS by ~580 MB)
RSS_CEILING_MB = 200  # growth of the server's peak RSS over its idle RSS allowed for 120 concurrent uploads


@pytest.mark.slow
def test_120_concurrent_large_uploads_stay_under_the_memory_ceiling(server_process):
    import httpx
    from _live_server import peak_rss_bytes, rss_bytes

    url, process, _ = server_process
    ramp = np.linspace(0, 255, UPLOAD_SIDE, dtype=np.uint8)
    pixels = np.stack([np.add.outer(ramp, ramp) // 2, np.tile(ramp, (UPLOAD_SIDE, 1)), ramp[:, None].repeat(
        UPLOAD_SIDE, 1)], axis=2)
    data = encode(Image.fromarray(pixels.astype(np.uint8)), "PNG")  # compresses well: a small body
    idle = rss_bytes(process.pid)

    async def burst():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            return await asyncio.gather(*(http.post("/search", files={"image": ("big.png", data, "image/png")})
                                          for _ in range(120)))

    answers = asyncio.run(burst())
    growth_mb = (peak_rss_bytes(process.pid) - idle) / 2**20
    assert [a.status_code for a in answers] == [200] * 120
    # reduced by 16 (to twice the model's 32-pixel input side) before the model's resize
    assert all(a.json()["query"]["width"] == 64 for a in answers)
    print(f"\n120 concurrent {UPLOAD_SIDE}² PNG uploads ({len(data)} bytes each): idle RSS {idle / 2**20:.0f} MB, "
          f"peak growth {growth_mb:.0f} MB (ceiling {RSS_CEILING_MB} MB)")
    assert growth_mb < RSS_CEILING_MB


def test_serve_options_are_checked_in_one_line(service, capsys):
    from reidkit.cli import main

    run, index, queries, _ = service
    assert main(["serve", "--index", str(index), "--run", str(run), "--queries", str(queries),
                 "--max-batch", "20"]) == 2
    assert capsys.readouterr().err.strip().endswith("raise --max-uploads or lower --max-batch")
    with pytest.raises(SystemExit):
        main(["serve", "--index", str(index), "--body-timeout", "0"])
    assert "is not a number of seconds > 0" in capsys.readouterr().err


# --- issue 23: features without a digest (3), relative galleries (6), hard links (7), NUL / older indexes (8),
# numbers in query parameters (10) ---------------------------------------------------------------------------

def with_metadata(source: Path, out: Path, **changes: str | None) -> Path:
    """A copy of a safetensors file (feature file or index) with metadata keys changed (None: deleted)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), "pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = handle.metadata()
    metadata.update(changes)
    save_file(tensors, str(out), metadata={key: value for key, value in metadata.items() if value is not None})
    return out


@pytest.mark.parametrize("digest", [None, ""], ids=["deleted", "empty"])
def test_features_without_the_model_digest_are_refused_unless_trusted(service, tmp_path, capsys, digest):
    from reidkit.cli import main

    run, index, queries, query = service
    unmarked = with_metadata(queries, tmp_path / "queries.safetensors", model_digest=digest)
    with pytest.raises(ReidkitError, match=r"no model digest is recorded for the query features .*--trust-features"):
        create_app(index, run, query_features=unmarked)
    assert main(["serve", "--index", str(index), "--run", str(run), "--queries", str(unmarked)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("reidkit: error: ") and error.count("\n") == 1 and "--trust-features" in error
    trusted = TestClient(create_app(index, run, query_features=unmarked, trust_features=True))
    assert trusted.get("/info").json()["num_queries"] == len(query)
    # the same mechanism guards an index without the digest, in the service and in `reidkit search`
    named = with_metadata(index, tmp_path / "index.safetensors", model_digest=digest, run_dir=str(run))
    with pytest.raises(ReidkitError, match=r"no model digest is recorded for the gallery index .*--trust-features"):
        create_app(named, run, query_features=queries)
    assert main(["--quiet", "search", "--index", str(named), query[0][0]]) == 2
    error = capsys.readouterr().err
    assert error.startswith("reidkit: error: ") and error.count("\n") == 1 and "--trust-features" in error
    assert main(["--quiet", "search", "--index", str(named), query[0][0], "--trust-features"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--trust-features" in help_text and "skips the check" in help_text


def test_an_index_of_a_relative_gallery_serves_its_images_from_another_folder(service, tmp_path, monkeypatch):
    from reidkit.cli import main

    run, _, queries, _ = service
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    (site / "gallery").mkdir(parents=True)
    elsewhere.mkdir()
    originals = sorted((run.parent / "data" / "bounding_box_test").glob("*.jpg"))[:3]
    for original in originals:
        shutil.copy(original, site / "gallery" / original.name)
    monkeypatch.chdir(site)
    assert main(["--quiet", "index", "--run", str(run), "--gallery", "gallery", "--out", "index.safetensors"]) == 0
    monkeypatch.chdir(elsewhere)
    client = TestClient(create_app(site / "index.safetensors", run, query_features=queries))
    for number, original in enumerate(originals):
        assert client.get(f"/image/gallery/{number}").content == original.read_bytes()


@pytest.fixture
def linked_gallery(service, tmp_path):
    """(index file made by `build_gallery_index` over 3 gallery images, gallery folder, an outside file)."""
    from reidkit.engine.indexing import build_gallery_index

    run = service[0]
    gallery, outside = tmp_path / "gallery", tmp_path / "outside"
    gallery.mkdir()
    outside.mkdir()
    for original in sorted((run.parent / "data" / "bounding_box_test").glob("*.jpg"))[:3]:
        shutil.copy(original, gallery / original.name)
    secret = outside / "passwd"  # stands in for /etc/passwd
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    os.link(gallery / sorted(os.listdir(gallery))[2], outside / "second_name.jpg")  # 2 links when indexed
    build_gallery_index(run, gallery, progress=False).save(tmp_path / "index.safetensors")
    return tmp_path / "index.safetensors", gallery, secret


def test_a_file_swapped_in_after_indexing_is_not_served(service, linked_gallery):
    run, _, queries, _ = service
    index_path, gallery, secret = linked_gallery
    client = TestClient(create_app(index_path, run, query_features=queries))
    paths = GalleryIndex.load(index_path).paths
    assert [client.get(f"/image/gallery/{i}").status_code for i in range(3)] == [200, 200, 200]  # 3rd: 2 links
    Path(paths[0]).unlink()
    os.link(secret, paths[0])  # a hard link to a file outside the gallery, under an indexed name
    with open(paths[1], "ab") as handle:  # an indexed file edited in place
        handle.write(b"\0")
    for number in (0, 1):
        refused = client.get(f"/image/gallery/{number}")
        assert refused.status_code == 404 and refused.json() == {"detail": f"no image gallery/{number}"}


def test_without_recorded_identities_a_file_of_several_links_is_not_served(service, linked_gallery, tmp_path):
    run, _, queries, _ = service
    index_path, _, secret = linked_gallery
    index = GalleryIndex.load(index_path)
    older = tmp_path / "older.safetensors"  # image folders recorded, file identities not (issue 15's format)
    GalleryIndex(index.features, index.pids, index.camids, index.paths, index.metric, model_digest=index.model_digest,
                 image_roots=index.image_roots).save(older)
    client = TestClient(create_app(older, run, query_features=queries))
    assert client.get("/image/gallery/0").status_code == 200
    Path(index.paths[0]).unlink()
    os.link(secret, index.paths[0])
    assert [client.get(f"/image/gallery/{i}").status_code for i in (0, 2)] == [404, 404]  # 2 links each


def test_a_nul_byte_in_an_indexed_path_is_a_404(tmp_path):
    GalleryIndex(torch.randn(2, 3), [1, 2], [0, 0], [str(tmp_path / "a\0.jpg"), "\0"],
                 image_roots=[str(tmp_path)]).save(tmp_path / "index.safetensors")
    client = TestClient(create_app(tmp_path / "index.safetensors"))
    assert [client.get(f"/image/gallery/{i}").status_code for i in (0, 1)] == [404, 404]


def test_an_index_without_image_folders_serves_no_image_but_searches(service, tmp_path):
    run, index_path, queries, _ = service
    index = GalleryIndex.load(index_path)
    older = tmp_path / "older.safetensors"
    GalleryIndex(index.features, index.pids, index.camids, index.paths, index.metric,
                 model_digest=index.model_digest).save(older)
    with_metadata(older, older, image_roots=None)  # written before image folders were recorded
    client = TestClient(create_app(older, run, query_features=queries, topk=TOPK))
    refused = client.get("/image/gallery/0")
    assert refused.status_code == 404 and "reidkit index --run RUN --gallery DIR" in refused.json()["detail"]
    assert str(tmp_path) not in refused.json()["detail"]
    check_results(client.post("/search", json={"query_index": 3}).json()["results"])
    assert client.get("/image/query/3").status_code == 200


@pytest.mark.parametrize("text", ["-1", "1e308", "1e-3", "1_0", "१", "١", "+1", " 1", "1 ", "0x1", "inf", "nan",
                                  "", ".", "1.", "2.5", "1" * 40, "0.5\n", "½"])
def test_a_threshold_must_be_a_plain_decimal_in_range(client, text):
    from urllib.parse import quote

    refused = client.post(f"/search?threshold={quote(text)}", json={"query_index": 3})
    assert refused.status_code == 400 and "plain decimal number from 0 to 2" in refused.json()["detail"]


def test_a_threshold_in_range_decides_and_is_given_once(client):
    answers = {text: client.post(f"/search?threshold={text}", json={"query_index": 3}).json()
               for text in ("0", "0.5", ".5", "2", "2.000", "0.0000001")}
    assert [answer["decision"]["threshold"] for answer in answers.values()] == [0, 0.5, 0.5, 2, 2, 1e-7]
    assert not any(r["same_person"] for r in answers["0"]["results"])
    assert all(r["same_person"] for r in answers["2"]["results"])  # cosine distances of this model are < 2
    twice = client.post("/search?threshold=0.5&threshold=0.6", json={"query_index": 3})
    assert twice.status_code == 400 and "once" in twice.json()["detail"]


@pytest.mark.parametrize("declared", ["\u00b2", "\u0967\u0966", "12x"])
def test_a_content_length_that_is_not_ascii_digits_is_left_to_the_body_count(declared):
    """A Content-Length of other scripts' digits ("²".isdigit() is True, int("²") fails) is not read as a
    number: the body is counted as it arrives, and a small body is returned whole."""
    from reidkit.serve.uploads import read_body

    class Request:
        headers = {"content-length": declared}

        async def stream(self):
            yield b"abc"

    assert asyncio.run(read_body(Request(), limit=10, timeout=5.0)) == b"abc"
