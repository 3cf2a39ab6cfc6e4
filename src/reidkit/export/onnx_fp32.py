"""Format `onnx`: the float32 ONNX graph (also the first step of onnx-fp16, onnx-int8, openvino and tensorrt),
and its onnxruntime CPU runner. onnx and onnxruntime are optional: ``pip install "reidkit[export]"``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from reidkit.errors import ReidkitError
from reidkit.export.common import INPUT_NAME, OUTPUT_NAME, ModelInfo, require
from reidkit.export.source import Source
from reidkit.outputs import input_problem

_NATIVE_DYNAMO_OPSET = 18  # the torch.export-based exporter writes opset >= 18 natively


def write_onnx(module, example, out_path: Path, opset: int) -> None:
    """Export `module` with a dynamic batch axis (and frame axis for tracklets [B, T, 3, H, W]) at exactly
    `opset`.

    Opset >= 18 uses the torch.export-based exporter; below 18 the TorchScript exporter is used,
    because the new exporter cannot down-convert ReduceMean (global pooling) to opset 17.
    """
    import torch

    dynamic = {0: torch.export.Dim("batch"), **({1: torch.export.Dim("frames")} if example.dim() == 5 else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if opset >= _NATIVE_DYNAMO_OPSET:
            require("onnxscript", "ONNX export at opset >= 18")  # the torch.export-based exporter is built on it
            torch.onnx.export(module, (example,), str(out_path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=True,
                              external_data=False, dynamic_shapes={INPUT_NAME: dynamic},
                              verbose=False)
        else:
            torch.onnx.export(module, (example,), str(out_path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch", **({1: "frames"} if example.dim() == 5 else {})},
                                            OUTPUT_NAME: {0: "batch"}})


def set_info(graph, info: ModelInfo) -> None:
    """Store `info` as the ONNX model properties of `graph` (a ModelProto), replacing earlier ones."""
    onnx = require("onnx", "ONNX export")
    del graph.metadata_props[:]
    onnx.helper.set_model_props(graph, info.as_strings())


def write_onnx_model(source: Source, out: Path, opset: int) -> None:
    """The float32 ONNX graph of `source` at `opset`, with `source.info` as its model properties.

    Raises:
        ReidkitError: the exporter wrote another opset than `opset` (the file is removed).
    """
    import torch

    onnx = require("onnx", "ONNX export")
    with torch.no_grad():  # batch 2: the axis stays dynamic
        example = source.images[:1]
        write_onnx(source.module, example.repeat(2, *[1] * (example.dim() - 1)), out, opset)
    graph = onnx.load(str(out))
    written_opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    if written_opset != opset:
        out.unlink()
        raise ReidkitError(f"the exporter wrote opset {written_opset}, not the requested {opset}; "
                           f"choose --opset {written_opset}")
    set_info(graph, source.info)
    onnx.save(graph, str(out))


def write(source: Source, out: Path, opset: int = 17) -> None:
    """Write the float32 ONNX file `out`."""
    write_onnx_model(source, out, opset)


class OnnxModel:
    """An ONNX file run by onnxruntime on the CPU: `model(images [N, 3, H, W] float32) -> [N, D] float32`.

    `info` comes from the model properties that reidkit writes; for other ONNX files, from the input shape.
    """

    def __init__(self, path: str | Path) -> None:
        onnxruntime = require("onnxruntime", "ONNX inference")
        problem = input_problem(path)
        if problem:
            raise ReidkitError(f"ONNX file {path} {problem}; write it with `reidkit export`")
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise ReidkitError(f"{path} is not a loadable ONNX model ({type(error).__name__}); write one with "
                               f"`reidkit export`") from error
        shape = self.session.get_inputs()[0].shape
        fixed = [side if isinstance(side, int) else 0 for side in shape[2:4]] if len(shape) == 4 else [0, 0]
        self.info = ModelInfo.from_strings(self.session.get_modelmeta().custom_metadata_map, "onnx", *fixed)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: images})[0].astype(np.float32, copy=False)
