"""The search service with FastAPI's TestClient: results, query picks, upload limits, no file access."""

import io
import sys
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
RESULT_KEYS = {"rank", "index", "path", "image_url", "pid", "camid", "distance"}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """(run folder, index file, query feature file, query samples) of an untrained tiny model."""
    root = tmp_path_factory.mktemp("serve")
    run, _, _, dataset = build_untrained_run(root)
    return run, root / "index.safetensors", root / "query.safetensors", dataset.query


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
    for marker in ('id="upload-form"', 'id="queries"', 'id="results"', "fetch(\"/search\""):
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
    GalleryIndex(index.features, index.pids, index.camids, index.paths, index.metric,
                 run_dir=str(run)).save(tmp_path / "named.safetensors")
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
    GalleryIndex(torch.zeros(2, 7), [1, 2], [0, 1], ["a.jpg", "b.jpg"]).save(tmp_path / "other.safetensors")
    with pytest.raises(ReidkitError, match="dimension"):
        create_app(tmp_path / "other.safetensors", query_features=queries)


def test_a_missing_extra_is_named(service, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(ReidkitError, match=r"reidkit\[serve\]"):
        create_app(service[1])
