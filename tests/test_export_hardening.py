"""Export faults of issue 23, each with the test that failed before: a full disk under the TorchScript and
OpenVINO writers (one line, nothing left behind, the previous file intact), the real reason for an output or
input path that cannot be used, and the int8 choices a user has when the parity check fails (calibration
method, per-channel or per-tensor weights, an explicit min-cosine bound)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from _full_disk import full_disk, run_cli_on_full_disk, size_limit_works

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from reidkit.cli import main  # noqa: E402
from reidkit.errors import ConfigError, ReidkitError  # noqa: E402

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """configs/tiny.yaml trained for one epoch at 32×16 (a few seconds)."""
    from reidkit.config import load_config
    from reidkit.engine.trainer import train

    root = tmp_path_factory.mktemp("export_hardening")
    config = load_config(TINY, [f"data.root={root / 'data'}", "data.height=32", "data.width=16", "train.epochs=1",
                                "train.eval_every=1", "train.checkpoint_every_steps=0", "eval.ranked_queries=0"])
    train(config, root / "run", progress=False, log=lambda *_: None)
    return root / "run"


def _one_error_line(err: str, *names: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reidkit: error: "), err
    assert all(name in lines[0] for name in names) and "Traceback" not in err, err
    return lines[0]


def _left_behind(folder: Path) -> list[str]:
    """Names in `folder` other than the previous output: temporary files or staging folders."""
    return sorted(path.name for path in folder.iterdir() if path.name not in ("model.pt", "model.xml", "model.bin"))


# --- item 1: a full disk under the TorchScript and OpenVINO writers ---------------------------------------------

@pytest.mark.skipif(not size_limit_works(), reason="needs RLIMIT_FSIZE")
def test_a_full_disk_while_exporting_torchscript_is_one_line(trained, tmp_path):
    """torch's own file writer aborted the process (exit 134, `c10::Error ... unexpected pos`) and left its
    staging folder; the file is now serialised in memory and written by Python, whose write fails with EFBIG."""
    out = tmp_path / "model.pt"
    out.write_bytes(b"the previous output")
    result = run_cli_on_full_disk(["export", "--run", str(trained), "--format", "torchscript", "--out", str(out),
                                   "--parity-images", "2"], limit=4096)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    line = _one_error_line(result.stderr, str(out))
    assert "file too large" in line and "choose another --out" in line
    assert out.read_bytes() == b"the previous output" and _left_behind(tmp_path) == []


@pytest.mark.skipif(not size_limit_works(), reason="needs RLIMIT_FSIZE")
@pytest.mark.parametrize("module, function, message", [
    # OpenVINO's C++ writer fills the disk: it says only "basic_ios::clear: iostream error" (was a traceback)
    ("openvino", "save_model", r"OpenVINO could not write model\.xml in the temporary folder .* \(basic_ios::clear: "
                               r"iostream error\): free space there \(the disk may be full\) or set TMPDIR"),
    # the IR is complete; the --out disk fills while it is copied there: Python's error names the cause
    ("shutil", "copyfile", r"file too large .* writing {out}: raise the limit or choose another --out"),
])
def test_a_full_disk_while_exporting_openvino_is_one_line(trained, tmp_path, monkeypatch, capsys, module, function,
                                                          message):
    import importlib

    pytest.importorskip("openvino")
    target = importlib.import_module(module)
    unlimited = getattr(target, function)

    def on_a_full_disk(*args, **kwargs):
        with full_disk(monkeypatch, 4096):
            return unlimited(*args, **kwargs)

    monkeypatch.setattr(target, function, on_a_full_disk)
    out = tmp_path / "model.xml"
    out.write_bytes(b"the previous output")
    out.with_suffix(".bin").write_bytes(b"the previous weights")
    capsys.readouterr()
    code = main(["--quiet", "export", "--run", str(trained), "--format", "openvino", "--out", str(out),
                 "--parity-images", "2"])
    line = _one_error_line(capsys.readouterr().err, "model.xml")
    assert code == 2 and re.search(message.format(out=re.escape(str(out))), line), line
    assert out.read_bytes() == b"the previous output"
    assert out.with_suffix(".bin").read_bytes() == b"the previous weights"
    assert _left_behind(tmp_path) == []


# --- item 9: the real reason for a path that cannot be used ------------------------------------------------------

@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_out_where_no_file_can_be_created_is_refused_before_the_export(trained, monkeypatch, capsys):
    """/proc passes os.access(W_OK) for root; the export ran to its end and then said "the disk may be full"."""
    import reidkit.export.source

    def never(*args, **kwargs):
        raise AssertionError("the export started")

    monkeypatch.setattr(reidkit.export.source, "prepare_source", never)
    assert main(["--quiet", "export", "--run", str(trained), "--out", "/proc/x.onnx"]) == 2
    line = _one_error_line(capsys.readouterr().err, "/proc/x.onnx")
    assert re.search(r"cannot create files in the folder /proc \((no such file or directory|permission denied)\); "
                     r"choose another path$", line), line


def test_an_input_path_says_what_it_is(tmp_path):
    from reidkit.engine.checkpoint import load_weights
    from reidkit.engine.saved_runs import load_run_config
    from reidkit.export import load_model
    from reidkit.models.weights import read_state_dict
    from reidkit.retrieval.feature_files import load_feature_file

    folder = tmp_path / "model.safetensors"  # a folder with a file's name
    folder.mkdir()
    (tmp_path / "link.safetensors").symlink_to(tmp_path / "gone.safetensors")
    with pytest.raises(ReidkitError, match=f"weights file {re.escape(str(folder))} is a folder; give a "):
        load_weights(folder)
    with pytest.raises(ConfigError, match="is a folder"):
        read_state_dict(folder)
    (tmp_path / "model.onnx").mkdir()
    with pytest.raises(ReidkitError, match="is a folder; write it with `reidkit export`"):
        load_model(tmp_path / "model.onnx")
    with pytest.raises(ReidkitError, match="feature file .* is a folder; write one with"):
        load_feature_file(folder)
    with pytest.raises(ReidkitError, match=r"link\.safetensors is a link to .*gone\.safetensors, which does not exist"):
        load_weights(tmp_path / "link.safetensors")
    with pytest.raises(ReidkitError, match="absent.safetensors does not exist"):
        load_weights(tmp_path / "absent.safetensors")
    if Path("/dev/null").exists():
        with pytest.raises(ReidkitError, match="is not a regular file"):
            load_weights("/dev/null")
    (tmp_path / "config.yaml").write_text("data: {}\n")
    with pytest.raises(ReidkitError, match="config.yaml is a file, not a run folder; pass the --out"):
        load_run_config(tmp_path / "config.yaml")


def test_export_with_a_folder_for_weights_says_it_is_a_folder(trained, capsys):
    assert main(["--quiet", "export", "--run", str(trained), "--weights", str(trained), "--out",
                 str(trained.parent / "m.onnx")]) == 2
    _one_error_line(capsys.readouterr().err, f"weights file {trained} is a folder")


# --- item 12: int8 calibration method, per-channel or per-tensor weights, an explicit min-cosine ------------------

def _conv_graph(path: Path) -> None:
    """A 1×1 convolution from `images` [N, 1, 4, 4] to 2 channels with weights 1 and 100 (no bias), then Relu."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.array([1.0, 100.0], np.float32).reshape(2, 1, 1, 1), "weights")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "weights"], ["conv"]), helper.make_node("Relu", ["conv"], ["features"])],
        "conv", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 2, 4, 4])], [weights])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _scales(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {tensor.name: numpy_helper.to_array(tensor) for tensor in onnx.load(str(path)).graph.initializer
            if tensor.name.endswith("_scale")}


@pytest.fixture(scope="module")
def calibration_images() -> np.ndarray:
    """10,000 images of 16 values in [0, 1), and in the last one pixel of 100: one value in 160,000, so below
    the 0.001 % that Percentile (99.999th percentile of |x|) clips."""
    images = np.random.default_rng(0).random((10_000, 1, 4, 4), dtype=np.float32)
    images[-1, 0, 0, 0] = 100.0
    return images


@pytest.mark.parametrize("method, input_range", [
    ("minmax", (100.0, 100.0)),  # the observed range [0, 100]
    # onnxruntime's Entropy builds one 128-bin histogram of all the data and searches 128 quantised bins: its
    # one candidate threshold is the whole range, so it keeps the outlier too
    ("entropy", (100.0, 100.0)),
    # the 99.999th percentile of |x| lies near 1, on an edge of its 2048 bins over [0, 100] (width 0.049)
    ("percentile", (1 - 0.05, 1 + 0.05)),
])
def test_each_calibration_method_sets_the_input_range(tmp_path, calibration_images, method, input_range):
    from reidkit.export.onnx_int8 import quantize

    _conv_graph(tmp_path / "float.onnx")
    quantize(tmp_path / "float.onnx", tmp_path / "int8.onnx", calibration_images, method)
    step = float(_scales(tmp_path / "int8.onnx")["images_scale"])  # uint8: range / 255, a float32 (rel. 6e-8)
    low, high = input_range
    assert low / 255 * (1 - 1e-6) <= step <= high / 255 * (1 + 1e-6)


@pytest.mark.parametrize("per_channel", [True, False])
def test_per_channel_weights_keep_a_small_channel_beside_a_large_one(tmp_path, calibration_images, per_channel):
    import onnx
    from onnx import numpy_helper

    from reidkit.export.onnx_int8 import quantize

    _conv_graph(tmp_path / "float.onnx")
    quantize(tmp_path / "float.onnx", tmp_path / "int8.onnx", calibration_images[:100], per_channel=per_channel)
    initializers = {tensor.name: numpy_helper.to_array(tensor)
                    for tensor in onnx.load(str(tmp_path / "int8.onnx")).graph.initializer}
    # symmetric int8 on 7 bits (reduce_range: integers in [−64, 64]): scale = max |w| / 64, per channel (1/64 and
    # 100/64) or of the whole tensor (100/64); float32 scales, relative error ≤ 6e-8
    expected_scales = [1 / 64, 100 / 64] if per_channel else 100 / 64
    np.testing.assert_allclose(initializers["weights_scale"], expected_scales, rtol=1e-6)
    # weight 1 is 64 steps of 1/64, or round(1 / (100/64)) = 1 step of 100/64 (1.56: a 56 % error)
    assert initializers["weights_quantized"].ravel().tolist() == ([64, 64] if per_channel else [1, 64])


def test_int8_options_reach_the_file_and_min_cosine_sets_the_bound(trained, tmp_path, capsys):
    base = ["--quiet", "export", "--run", str(trained), "--format", "onnx-int8", "--parity-images", "2",
            "--calibration-images", "8"]
    assert main([*base, "--out", str(tmp_path / "a.onnx"), "--calibration-method", "percentile",
                 "--no-per-channel", "--min-cosine", "0.5"]) == 0
    assert "(tolerance min cos ≥ 0.5)" in capsys.readouterr().out
    scales = _scales(tmp_path / "a.onnx")  # activations always have one scale; per-channel weights have one per row
    assert len(scales) > 10 and all(scale.size == 1 for scale in scales.values())
    assert main([*base, "--out", str(tmp_path / "c.onnx"), "--min-cosine", "1"]) == 2  # int8 never reaches 1
    line = _one_error_line(capsys.readouterr().err, "onnx-int8 parity check failed", "(tolerance: min cos ≥ 1)")
    assert "--calibration-method percentile, --no-per-channel" in line and "--min-cosine X" in line
    assert not (tmp_path / "c.onnx").exists()


@pytest.mark.parametrize("option, value", [("--min-cosine", "1.5"), ("--min-cosine", "nan"),
                                           ("--calibration-method", "kl")])
def test_bad_int8_options_are_refused_by_the_parser(option, value, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["export", "--run", "r", "--out", "m.onnx", option, value])
    assert exit.value.code == 2 and f"argument {option}" in capsys.readouterr().err


def test_the_library_checks_its_int8_arguments(trained, tmp_path):
    from reidkit.export import export

    with pytest.raises(ValueError, match="calibration_method must be one of minmax, entropy, percentile"):
        export(trained, "onnx-int8", tmp_path / "m.onnx", calibration_method="kl")
    with pytest.raises(ValueError, match=r"min_cosine must be in \[0, 1\]"):
        export(trained, "onnx-int8", tmp_path / "m.onnx", min_cosine=2.0)
    assert list(tmp_path.iterdir()) == []
