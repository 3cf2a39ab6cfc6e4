"""Tracklets end to end from the command line: `synth --tracklets`, `train` on them with learned temporal
attention, `export` to ONNX with a dynamic frame axis (parity at another T), `search --tracklet`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reidkit.cli import main
from reidkit.data.images import read_rgb
from reidkit.data.tracklets import load_mars
from reidkit.data.transforms import build_test_transform
from reidkit.engine.indexing import embed_tracklet
from reidkit.engine.saved_runs import load_run_config, load_run_model


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("video")
    assert main(["synth", "--quiet", "--tracklets", "--out", str(base / "data"), "--identities", "8",
                 "--cameras", "3"]) == 0
    run = base / "run"
    assert main(["train", "--quiet", "--out", str(run), "data.dataset=synthetic_video", f"data.root={base / 'data'}",
                 "data.synthetic_identities=8", "data.synthetic_cameras=3", "data.height=32", "data.width=16",
                 "data.p=2", "data.k=2", "data.seq_len=3", "data.workers=0", "model.backbone=resnet18",
                 "model.temporal=attention", "train.epochs=1", "train.warmup_epochs=0", "train.device=cpu",
                 "eval.ranked_queries=1", "eval.chunk_frames=4", "loss.trihard.weight=1.0"]) == 0
    return base, run


def frames_tensor(paths, config) -> torch.Tensor:
    transform = build_test_transform(config.data.height, config.data.width)
    return torch.stack([transform(read_rgb(path)) for path in paths])


def test_training_on_tracklets_evaluates_one_feature_per_tracklet(video_run):
    base, run = video_run
    metrics = json.loads((run / "metrics.json").read_text())
    dataset = load_mars(base / "data")
    assert metrics["num_valid_queries"] == len(dataset.query)
    assert 0.0 < metrics["mAP"] <= 1.0
    assert list((run / "ranked").glob("*.png"))  # tracklet pictures drawn


def test_onnx_export_takes_tracklets_of_any_length(video_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    base, run = video_run
    assert main(["export", "--quiet", "--run", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                 "--parity-images", "2"]) == 0
    config = load_run_config(run)
    model = load_run_model(run, config)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    paths = load_mars(base / "data").gallery[0][0]
    for length in (1, 5):  # the export saw T = data.seq_len = 3
        tracklets = frames_tensor([paths[i % len(paths)] for i in range(length)], config)[None].repeat(3, 1, 1, 1, 1)
        with torch.no_grad():
            expected = model(tracklets)[config.eval.feature].numpy()
        got = session.run(None, {session.get_inputs()[0].name: tracklets.numpy()})[0]
        # float32 graphs computed in another order: differences of a few ulps of the feature scale
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


def test_search_takes_several_images_as_one_query(video_run, capsys):
    base, run = video_run
    assert main(["index", "--quiet", "--run", str(run), "--gallery", str(base / "data" / "bbox_test")]) == 0
    paths = list(load_mars(base / "data").query[0][0][:3])
    capsys.readouterr()
    assert main(["search", "--index", str(run / "index.safetensors"), "--tracklet", "--topk", "2", *paths]) == 0
    printed = capsys.readouterr().out
    assert printed.count("query ") == 1 and "tracklet of 3 images" in printed
    config = load_run_config(run)
    with torch.no_grad():
        expected = load_run_model(run, config)(frames_tensor(paths, config)[None])[config.eval.feature]
    torch.testing.assert_close(embed_tracklet(run, paths), expected, rtol=1e-5, atol=1e-5)


def test_extract_writes_one_feature_per_tracklet(video_run, tmp_path):
    from reidkit.retrieval.feature_files import load_feature_file

    base, run = video_run
    out = tmp_path / "query.safetensors"
    assert main(["extract", "--quiet", "--run", str(run), "--split", "query", "--out", str(out)]) == 0
    features, pids, _, paths = load_feature_file(out)
    query = load_mars(base / "data").query
    assert features.shape[0] == len(query) and pids.tolist() == [pid for _, pid, _ in query]
    assert paths == [frames[0] for frames, _, _ in query]


def test_the_service_takes_several_uploaded_frames_as_one_query(video_run, tmp_path):
    """POST /search/tracklet answers what `reidkit search --tracklet` finds for the same frames: 6 frames in
    chunks of eval.chunk_frames = 4, so the chunk merge is exercised."""
    from fastapi.testclient import TestClient

    from reidkit.retrieval.gallery import open_gallery
    from reidkit.serve.app import create_app

    base, run = video_run
    index = tmp_path / "index.safetensors"
    assert main(["index", "--quiet", "--run", str(run), "--gallery", str(base / "data" / "bbox_test"),
                 "--out", str(index)]) == 0
    frames = load_mars(base / "data").query[0][0]
    paths = [frames[i % len(frames)] for i in range(6)]
    client = TestClient(create_app(index, run, topk=3))
    files = [("frames", (f"{i}.jpg", open(path, "rb").read(), "image/jpeg")) for i, path in enumerate(paths)]
    answer = client.post("/search/tracklet", files=files).json()
    expected = open_gallery(index).search(embed_tracklet(run, paths), k=3)
    assert answer["query"]["tracklet"] and [f["name"] for f in answer["query"]["frames"]] == [f"{i}.jpg" for i in range(6)]
    assert [r["index"] for r in answer["results"]] == expected.ids[0].tolist()
    np.testing.assert_allclose([r["distance"] for r in answer["results"]], expected.distances[0], atol=1e-5)
    single = client.post("/search/tracklet", files=files[:1]).json()
    one = open_gallery(index).search(embed_tracklet(run, paths[:1]), k=3)
    assert [r["index"] for r in single["results"]] == one.ids[0].tolist()
    broken = client.post("/search/tracklet", files=files[:2] + [("frames", ("x.jpg", b"not a jpeg", "image/jpeg"))])
    assert broken.status_code == 400 and broken.json()["detail"].startswith("file 3 of 3:")
    too_many = client.post("/search/tracklet", files=files * 2)  # 12 frames > max_batch 8
    assert too_many.status_code == 400 and "Too many files" in too_many.json()["detail"]
    assert client.post("/search/tracklet", json={"query_index": 0}).status_code == 415
    picked = client.post("/search", json={"query_index": 0}).json()  # the run's query tracklets, embedded at start
    whole = open_gallery(index).search(embed_tracklet(run, list(frames)), k=3)
    assert picked["query"]["path"] == frames[0] and [r["index"] for r in picked["results"]] == whole.ids[0].tolist()
