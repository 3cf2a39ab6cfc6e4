"""ONNX export of a tiny run: parity with PyTorch on real images, dynamic batch, torch-free extraction."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from reidkit.data.build import build_dataset  # noqa: E402
from reidkit.engine.extraction import image_outputs
from reidkit.engine.saved_runs import load_run_config, load_run_model
from reidkit.errors import ReidkitError  # noqa: E402
from reidkit.export import export_onnx, extract_split_onnx, extract_with_onnx, preprocess_images  # noqa: E402
from reidkit.retrieval.feature_files import load_feature_file

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")
FLIP = ["eval.flip=true"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder of configs/tiny.yaml with an untrained model (export does not need training)."""
    from reidkit.config import load_config, save_config
    from reidkit.engine.checkpoint import save_weights
    from reidkit.engine.saved_runs import model_metadata
    from reidkit.models.reid import build_model, model_kwargs

    root = tmp_path_factory.mktemp("export")
    config = load_config(TINY, [f"data.root={root / 'data'}", "data.height=32", "data.width=16"])
    dataset = build_dataset(config.data, progress=False)
    torch.manual_seed(0)
    model = build_model(num_classes=dataset.num_train_pids, **model_kwargs(config.model))
    (root / "run").mkdir()
    save_config(config, root / "run" / "config.yaml")
    save_weights(model, root / "run" / "model.safetensors", model_metadata(model, config))
    return root / "run"


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The run exported with eval.flip=true: the graph holds the model twice (image and mirror)."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return out, export_onnx(tiny_run, out, overrides=FLIP)


def test_export_writes_one_file_and_reports_parity(exported):
    out, info = exported
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]
    assert info["max_abs_diff"] <= 1e-4 and info["parity_images"] == 4
    assert (info["opset"], info["height"], info["width"], info["feature"], info["flip"]) == \
        (17, 32, 16, "bn_features", True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, 32, 16]
    assert not isinstance(session.get_inputs()[0].shape[0], int)  # dynamic batch axis
    assert session.get_modelmeta().custom_metadata_map["feature"] == "bn_features"


@pytest.mark.parametrize("batch", [1, 5])
def test_dynamic_batch_matches_pytorch_on_real_images(tiny_run, exported, batch):
    out, _ = exported
    config = load_run_config(tiny_run, FLIP)
    paths = [s[0] for s in build_dataset(config.data, progress=False).query[:batch]]
    features = extract_with_onnx(out, paths, batch_size=batch)
    expected = image_outputs(load_run_model(tiny_run, config), paths, config, torch.device("cpu"),
                             ("bn_features",))["bn_features"].numpy()
    assert features.shape == (batch, expected.shape[1]) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_numpy_preprocessing_equals_the_test_transform(tiny_run, interpolation):
    """To the bit: the same PIL resize, then the same float32 operations (pixels − 255·mean) / (255·std)."""
    from PIL import Image

    from reidkit import export
    from reidkit.data import transforms
    from reidkit.data.transforms import build_test_transform

    assert (export.IMAGENET_MEAN, export.IMAGENET_STD) == (transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)

    config = load_run_config(tiny_run)
    path = build_dataset(config.data, progress=False).gallery[0][0]
    with Image.open(path) as image:
        expected = build_test_transform(32, 16, interpolation=interpolation)(image.convert("RGB")).numpy()
    np.testing.assert_array_equal(preprocess_images([path], 32, 16, interpolation)[0], expected)


def test_an_exported_file_carries_its_runs_interpolation():
    from reidkit.errors import ReidkitError
    from reidkit.export import ModelInfo

    info = ModelInfo("onnx", "bn_features", False, 64, 32, "bicubic")
    assert ModelInfo.from_strings(info.as_strings(), "onnx", 0, 0) == info
    assert ModelInfo.from_strings({"feature": "features"}, "onnx", 64, 32).interpolation == "bilinear"  # older files
    with pytest.raises(ReidkitError, match="resized with 'nearest'; reidkit resizes with bilinear or bicubic"):
        ModelInfo.from_strings({"interpolation": "nearest"}, "onnx", 64, 32)


def test_feature_file_from_onnx_reads_like_extract_split(tiny_run, exported, tmp_path):
    out, _ = exported
    samples = build_dataset(load_run_config(tiny_run).data, progress=False).query[:3]
    features = extract_split_onnx(out, samples, tmp_path / "q.safetensors", batch_size=2)
    loaded, pids, camids, paths = load_feature_file(tmp_path / "q.safetensors")
    np.testing.assert_array_equal(loaded.numpy(), features)
    assert pids.tolist() == [s[1] for s in samples] and camids.tolist() == [s[2] for s in samples]
    assert paths == [s[0] for s in samples]


def test_errors_are_clear(tmp_path, exported):
    with pytest.raises(ReidkitError, match="does not exist"):
        extract_with_onnx(tmp_path / "missing.onnx", [])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ReidkitError, match="cannot read image"):
        extract_with_onnx(exported[0], [bad])
    with pytest.raises(ReidkitError, match="config.yaml"):
        export_onnx(tmp_path, tmp_path / "x.onnx")


def test_a_missing_extra_is_named(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ReidkitError, match=r"reidkit\[export\]"):
        extract_with_onnx(exported[0], [])


def test_onnx_extraction_never_imports_torch(tiny_run, exported):
    import subprocess

    paths = [s[0] for s in build_dataset(load_run_config(tiny_run).data, progress=False).query[:2]]
    script = ("import sys; sys.modules['torch'] = sys.modules['torchvision'] = None\n"
              "from reidkit.export import extract_with_onnx\n"
              f"print(extract_with_onnx({str(exported[0])!r}, {paths!r}).shape)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 512)"


def test_a_failed_parity_check_removes_the_file(tiny_run, tmp_path, monkeypatch):
    from reidkit.export import TOLERANCES, Tolerance

    monkeypatch.setitem(TOLERANCES, "onnx", Tolerance(-1.0, 0.0))  # any difference fails
    with pytest.raises(ReidkitError, match="parity check failed"):  # also exports without flip
        export_onnx(tiny_run, tmp_path / "model.onnx", parity_images=1)
    assert list(tmp_path.iterdir()) == []
