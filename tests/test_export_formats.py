"""Every export format from a small trained run: parity with PyTorch on real images, dynamic batch, metrics of
`reidkit eval --model` next to the PyTorch eval, deterministic int8 calibration, and one clear error for bad
input (unknown format, wrong suffix, missing package or GPU, a file that is not a model)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from reidkit.cli import main  # noqa: E402
from reidkit.data.build import build_dataset  # noqa: E402
from reidkit.engine.extraction import image_outputs
from reidkit.engine.saved_runs import load_run_config, load_run_model
from reidkit.errors import ReidkitError  # noqa: E402
from reidkit.export import TOLERANCES, Tolerance, export, extract_with_model, load_model  # noqa: E402
from reidkit.export.onnx_int8 import calibration_paths  # noqa: E402
from reidkit.retrieval.feature_files import load_feature_file

pytestmark = pytest.mark.numerics  # exported files vs PyTorch (int8 kernels differ by CPU)

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")
CPU_FORMATS = {"onnx": "model.onnx", "onnx-fp16": "model.onnx", "onnx-int8": "model.onnx",
               "openvino": "model.xml", "torchscript": "model.pt"}
# Accuracy of `eval --model` against the PyTorch eval of the same weights, on the 21 queries of the tiny set:
# (|Δ mAP|, |Δ rank-1| in queries). Full-precision formats differ by float rounding only.
EVAL_TOLERANCE = {"onnx": (1e-3, 0), "openvino": (1e-3, 0), "torchscript": (1e-3, 0), "onnx-fp16": (0.01, 1),
                  "onnx-int8": (0.05, 2)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """configs/tiny.yaml trained for one epoch at 32×16 (a few seconds), and its PyTorch eval metrics."""
    from reidkit.config import load_config
    from reidkit.engine.trainer import train

    root = tmp_path_factory.mktemp("formats")
    config = load_config(TINY, [f"data.root={root / 'data'}", "data.height=32", "data.width=16", "train.epochs=1",
                                "train.eval_every=1", "train.checkpoint_every_steps=0", "eval.ranked_queries=0"])
    train(config, root / "run", progress=False, log=lambda *_: None)
    assert main(["--quiet", "eval", "--run", str(root / "run"), "--out", str(root / "torch_eval")]) == 0
    return root / "run", json.loads((root / "torch_eval" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """Every CPU format exported with the CLI (each prints its parity figures), in its own folder."""
    run, _ = trained
    paths = {}
    for format, name in CPU_FORMATS.items():
        out = tmp_path_factory.mktemp(format) / name
        assert main(["--quiet", "export", "--run", str(run), "--format", format, "--out", str(out),
                     "--parity-images", "8", "--calibration-images", "32"]) == 0
        paths[format] = out
    return paths


@pytest.mark.parametrize("format", CPU_FORMATS)
def test_each_format_matches_pytorch_on_real_images_at_any_batch(trained, exported, format):
    run, _ = trained
    out = exported[format]
    expected_files = {"model.xml", "model.bin"} if format == "openvino" else {out.name}
    assert {p.name for p in out.parent.iterdir()} == expected_files
    model = load_model(out)
    assert (model.info.format, model.info.feature, model.info.flip, model.info.height, model.info.width) == \
        (format, "bn_features", False, 32, 16)
    config = load_run_config(run)
    paths = [s[0] for s in build_dataset(config.data, progress=False).query[8:14]]  # not the parity images
    reference = image_outputs(load_run_model(run, config), paths, config, torch.device("cpu"),
                              ("bn_features",))["bn_features"].numpy().astype(np.float64)
    for batch_size in (1, 4):  # batch 4 leaves a last batch of 2: the batch axis is dynamic
        features = extract_with_model(out, paths, batch_size=batch_size).astype(np.float64)
        assert features.shape == reference.shape
        cosine = (features * reference).sum(1) / np.linalg.norm(features, axis=1) / np.linalg.norm(reference, axis=1)
        tolerance = TOLERANCES[format]
        assert cosine.min() >= tolerance.min_cosine
        if tolerance.max_abs_diff is not None:  # 1e-4, plus the PIL-vs-torchvision preprocessing difference
            np.testing.assert_allclose(features, reference, atol=2 * tolerance.max_abs_diff, rtol=0)
        else:  # reduced precision really is reduced: not bit-equal to float32
            assert np.abs(features - reference).max() > 1e-6


@pytest.mark.parametrize("format", CPU_FORMATS)
def test_eval_model_measures_the_accuracy_of_each_format(trained, exported, format, tmp_path, capsys):
    run, torch_metrics = trained
    assert main(["--quiet", "eval", "--run", str(run), "--model", str(exported[format]),
                 "--out", str(tmp_path)]) == 0
    assert f"[{format} model" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["format"], metrics["feature"], metrics["flip"]) == (format, "bn_features", False)
    assert metrics["num_valid_queries"] == torch_metrics["num_valid_queries"] == 21
    map_tolerance, rank1_queries = EVAL_TOLERANCE[format]
    assert abs(metrics["mAP"] - torch_metrics["mAP"]) <= map_tolerance
    assert abs(metrics["rank1"] - torch_metrics["rank1"]) * 21 <= rank1_queries + 1e-9
    assert (tmp_path / "plots" / "cmc.png").is_file()


def test_extract_with_an_exported_model_writes_a_feature_file(trained, exported, tmp_path):
    run, _ = trained
    out = tmp_path / "q.safetensors"
    assert main(["--quiet", "extract", "--run", str(run), "--split", "query", "--model", str(exported["openvino"]),
                 "--out", str(out)]) == 0
    features, pids, _, paths = load_feature_file(out)
    config = load_run_config(run)
    query = build_dataset(config.data, progress=False).query
    assert pids.tolist() == [s[1] for s in query] and paths == [s[0] for s in query]
    reference = image_outputs(load_run_model(run, config), paths, config, torch.device("cpu"), ("bn_features",))
    np.testing.assert_allclose(features.numpy(), reference["bn_features"].numpy(), atol=2e-4, rtol=0)


def test_calibration_images_are_evenly_spaced_and_int8_is_deterministic(trained, exported, tmp_path):
    samples = [(f"{i}.jpg", 0, 0) for i in range(10)]
    assert calibration_paths(samples, 4) == ["0.jpg", "2.jpg", "5.jpg", "7.jpg"]  # i·10 // 4
    assert calibration_paths(samples, 50) == [s[0] for s in samples]
    run, _ = trained
    again = export(run, "onnx-int8", tmp_path / "again.onnx", parity_images=2, calibration_images=32)
    assert again.path.read_bytes() == exported["onnx-int8"].read_bytes()
    assert again.parity.min_cosine >= TOLERANCES["onnx-int8"].min_cosine


def test_a_failed_parity_check_leaves_no_file(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(TOLERANCES, "openvino", Tolerance(None, 1.5))  # no cosine reaches 1.5
    with pytest.raises(ReidkitError, match=r"openvino parity check failed: .* min cosine 1\.0"):
        export(trained[0], "openvino", tmp_path / "model.xml", parity_images=2)
    assert list(tmp_path.iterdir()) == []


def test_bad_formats_and_suffixes_are_one_clear_error(trained, tmp_path, capsys):
    run = str(trained[0])
    with pytest.raises(ReidkitError, match="unknown export format 'onnx16'; choose one of onnx, onnx-fp16"):
        export(run, "onnx16", tmp_path / "m.onnx")
    with pytest.raises(SystemExit):
        main(["export", "--run", run, "--format", "onnx16", "--out", str(tmp_path / "m.onnx")])
    assert "invalid choice: 'onnx16'" in capsys.readouterr().err
    assert main(["export", "--run", run, "--format", "openvino", "--out", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.strip() == f"reidkit: error: the openvino file must end in .xml: use --out " \
                                              f"{tmp_path / 'm.xml'}"
    assert list(tmp_path.iterdir()) == []


def test_missing_packages_and_gpu_are_named(trained, tmp_path, monkeypatch):
    run = trained[0]
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ReidkitError, match=r'openvino is not installed; OpenVINO export needs it: pip install '
                                           r'"reidkit\[openvino\]"'):
        export(run, "openvino", tmp_path / "m.xml")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not installable here: the error path is what runs
    with pytest.raises(ReidkitError, match="need NVIDIA's tensorrt package and a CUDA GPU; tensorrt is not "
                                           r'installed: pip install "reidkit\[tensorrt\]"'):
        export(run, "tensorrt", tmp_path / "m.engine")
    monkeypatch.setitem(sys.modules, "tensorrt", type(sys)("tensorrt"))  # the package without a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ReidkitError, match="need a CUDA GPU, and none is visible here"):
        export(run, "tensorrt", tmp_path / "m.engine")
    (tmp_path / "m.engine").write_bytes(b"engine")
    with pytest.raises(ReidkitError, match="need a CUDA GPU"):  # loading one too
        load_model(tmp_path / "m.engine")
    (tmp_path / "m.engine").unlink()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, content, message", [
    ("config.yaml", None, "is not an exported model: give a .onnx, .xml"),
    ("absent.onnx", None, "model file .* does not exist; write it with `reidkit export`"),
    ("text.onnx", b"not a model", "is not a loadable ONNX model"),
    ("text.pt", b"not a model", "is not a loadable TorchScript model"),
    ("text.xml", b"<?xml version='1.0'?><html/>", "is not an OpenVINO IR"),
])
def test_eval_refuses_a_file_that_is_not_a_model_in_one_line(trained, tmp_path, capsys, name, content, message):
    import re

    run = trained[0]
    path = run / name if name == "config.yaml" else tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert main(["--quiet", "eval", "--run", str(run), "--model", str(path), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("reidkit: error: ") and re.search(message, err)


def test_eval_model_refuses_weights_and_the_pair_head(trained, exported, capsys):
    from dataclasses import replace

    from reidkit.export.evaluation import evaluate_exported

    run, model = trained[0], exported["onnx"]
    assert main(["--quiet", "eval", "--run", str(run), "--model", str(model), "--weights", "x.safetensors"]) == 2
    assert "--model and --weights exclude each other" in capsys.readouterr().err
    config = load_run_config(run)
    with pytest.raises(ReidkitError, match="not the pair head: set eval.verify_topk=0"):
        evaluate_exported(model, build_dataset(config.data, progress=False), replace(config.eval, verify_topk=5),
                          protocol="all_gallery")
