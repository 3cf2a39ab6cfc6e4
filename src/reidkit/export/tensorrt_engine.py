"""Format `tensorrt`: a serialised TensorRT engine (`.engine`, float32 with TF32 off) built from the float32
ONNX graph, with an optimisation profile for batches 1 to `MAX_BATCH` (tuned for `OPT_BATCH`), and its
metadata in a JSON file beside it (`model.json` for `model.engine`).

Needs NVIDIA's `tensorrt` package (10.x: ``pip install "reidkit[tensorrt]"``) and a CUDA GPU; an engine is
specific to the GPU model and TensorRT version that built it. `TensorRtModel` runs it with CUDA buffers from PyTorch.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from reidkit.errors import ReidkitError
from reidkit.export.common import INPUT_NAME, OUTPUT_NAME, ModelInfo
from reidkit.export.onnx_fp32 import write_onnx_model
from reidkit.export.source import Source

MAX_BATCH, OPT_BATCH = 256, 64


def require_tensorrt():
    """The tensorrt module when it and a CUDA GPU are present; otherwise one ReidkitError saying which is
    missing."""
    import importlib

    import torch

    try:
        tensorrt = importlib.import_module("tensorrt")
    except ImportError as error:
        raise ReidkitError("TensorRT export and inference need NVIDIA's tensorrt package and a CUDA GPU; "
                           'tensorrt is not installed: pip install "reidkit[tensorrt]" (on a machine with an NVIDIA '
                           "GPU), or choose --format onnx / onnx-fp16 / openvino") from error
    if not torch.cuda.is_available():
        raise ReidkitError("TensorRT export and inference need a CUDA GPU, and none is visible here "
                           "(torch.cuda.is_available() is False); run on an NVIDIA GPU machine, or choose "
                           "--format onnx / onnx-int8 / openvino for the CPU")
    return tensorrt


def metadata_path(engine_path: Path) -> Path:
    return Path(engine_path).with_suffix(".json")


def write(source: Source, out: Path, opset: int = 17) -> None:
    """Build the engine `out` (.engine) and its metadata file."""
    tensorrt = require_tensorrt()
    logger = tensorrt.Logger(tensorrt.Logger.WARNING)
    builder = tensorrt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = tensorrt.OnnxParser(network, logger)
    with tempfile.TemporaryDirectory() as folder:
        float_graph = Path(folder) / "float.onnx"
        write_onnx_model(source, float_graph, opset)
        if not parser.parse(float_graph.read_bytes()):
            problems = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ReidkitError(f"TensorRT cannot parse the exported ONNX graph: {problems}")
    config = builder.create_builder_config()
    config.clear_flag(tensorrt.BuilderFlag.TF32)  # float32 arithmetic, as PyTorch on CPU
    profile = builder.create_optimization_profile()
    sides = (3, source.info.height, source.info.width)
    profile.set_shape(INPUT_NAME, (1, *sides), (OPT_BATCH, *sides), (MAX_BATCH, *sides))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ReidkitError("TensorRT could not build an engine for this model (see its log above)")
    out.write_bytes(bytes(engine))
    metadata_path(out).write_text(json.dumps(source.info.as_strings()))


class TensorRtModel:
    """A TensorRT engine run on the GPU: `model(images [N, 3, H, W] float32) -> [N, D] float32` (numpy, CPU),
    in chunks of at most `MAX_BATCH` images."""

    def __init__(self, path: str | Path) -> None:
        import torch

        tensorrt = require_tensorrt()
        self.runtime = tensorrt.Runtime(tensorrt.Logger(tensorrt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise ReidkitError(f"{path} is not a TensorRT engine this TensorRT version and GPU can load; "
                               f"build it here with `reidkit export --format tensorrt`")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        side_file = metadata_path(Path(path))
        values = json.loads(side_file.read_text()) if side_file.is_file() else {}
        self.info = ModelInfo.from_strings(values, "tensorrt", 0, 0)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        chunks = []
        for start in range(0, len(images), MAX_BATCH):
            with torch.cuda.stream(self.stream):  # copies and the engine on one stream, in order
                inputs = torch.from_numpy(images[start:start + MAX_BATCH]).cuda()
                self.context.set_input_shape(INPUT_NAME, tuple(inputs.shape))
                outputs = torch.empty(tuple(self.context.get_tensor_shape(OUTPUT_NAME)), dtype=torch.float32,
                                      device="cuda")
                self.context.set_tensor_address(INPUT_NAME, inputs.data_ptr())
                self.context.set_tensor_address(OUTPUT_NAME, outputs.data_ptr())
                self.context.execute_async_v3(self.stream.cuda_stream)
                chunks.append(outputs.cpu().numpy())
        return np.concatenate(chunks)
