"""Format `onnx-fp16`: the ONNX graph with float16 weights and arithmetic, float32 input and output.

Converted by onnxruntime's own `onnxruntime.transformers.float16` (no further package); run by `OnnxModel`.
Halves the file; fast where the runtime has float16 kernels (GPUs, recent ARM and x86 CPUs).
"""

from __future__ import annotations

from pathlib import Path

from reidkit.export.common import require
from reidkit.export.onnx_fp32 import set_info, write_onnx_model
from reidkit.export.source import Source


def write(source: Source, out: Path, opset: int = 17) -> None:
    """Write the float16 ONNX file `out` (converted from the float32 graph)."""
    onnx = require("onnx", "ONNX export")
    float16 = require("onnxruntime.transformers.float16", "float16 conversion")
    write_onnx_model(source, out, opset)
    graph = float16.convert_float_to_float16(onnx.load(str(out)), keep_io_types=True)
    set_info(graph, source.info)
    onnx.save(graph, str(out))
