"""Exports of a trained run's retrieval feature, each checked against PyTorch, and torch-free inference.

Formats (`FORMATS`), one module each: `onnx` (float32, `onnx_fp32`), `onnx-fp16`, `onnx-int8` (static
quantisation calibrated on training images), `openvino` (IR for Intel CPUs), `tensorrt` (NVIDIA GPUs),
`torchscript`. `export(run, format, out)` writes one and runs the shared parity check (`parity`);
`load_model(path)` runs any of them and `extract_with_model` embeds image files with it. onnx and
onnxruntime come with ``pip install "reidkit[export]"``, OpenVINO with ``reidkit[openvino]``.

The names below are imported on first use (so that the CLI's parser, which reads `formats`, stays fast);
importing this package imports neither torch nor any runtime.
"""

import importlib

_PUBLIC = {
    "FORMATS": "formats", "SUFFIXES": "formats",
    "IMAGENET_MEAN": "common", "IMAGENET_STD": "common", "ModelInfo": "common", "preprocess_images": "common",
    "Exported": "exporter", "export": "exporter", "export_onnx": "exporter",
    "TOLERANCES": "parity", "Parity": "parity", "Tolerance": "parity",
    "ExportedModel": "runtime", "extract_split_model": "runtime", "extract_with_model": "runtime",
    "load_model": "runtime",
}
# Names of earlier versions (ONNX only); the functions now run every format.
_ALIASES = {"extract_with_onnx": "extract_with_model", "extract_split_onnx": "extract_split_model"}

__all__ = sorted([*_PUBLIC, *_ALIASES])


def __getattr__(name: str):
    target = _ALIASES.get(name, name)
    if target not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_PUBLIC[target]}"), target)
    globals()[name] = value
    return value
