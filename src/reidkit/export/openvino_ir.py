"""Format `openvino`: OpenVINO IR (`model.xml` + `model.bin` beside it), float32, for Intel CPUs.

Converted from the float32 ONNX graph by `openvino.convert_model` and saved without float16 compression;
the metadata lives in the IR's rt_info under `reidkit`. `OpenVinoModel` compiles it for the CPU with
INFERENCE_PRECISION_HINT f32 (OpenVINO would otherwise compute in bf16 on CPUs that have it).
``pip install "reidkit[openvino]"``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from reidkit.errors import ReidkitError
from reidkit.export.common import ModelInfo, require
from reidkit.export.onnx_fp32 import write_onnx_model
from reidkit.export.source import Source
from reidkit.outputs import first_line


def write(source: Source, out: Path, opset: int = 17) -> None:
    """Write `out` (.xml) and its weights (.bin).

    OpenVINO saves the IR in a temporary folder, from where it is copied to `out`: OpenVINO's writer reports a
    failed write without its cause ("basic_ios::clear: iostream error"), Python's copy with it (a full disk,
    a read-only folder).

    Raises:
        ReidkitError: OpenVINO could not write the IR in the temporary folder.
        OSError: the copy to `out` failed.
    """
    openvino = require("openvino", "OpenVINO export")
    with tempfile.TemporaryDirectory() as folder:
        float_graph, saved = Path(folder) / "float.onnx", Path(folder) / "model.xml"
        write_onnx_model(source, float_graph, opset)
        model = openvino.convert_model(str(float_graph))
        for key, value in source.info.as_strings().items():
            model.set_rt_info(value, ["reidkit", key])
        try:
            openvino.save_model(model, str(saved), compress_to_fp16=False)
        except RuntimeError as error:  # the model is built: only the writing can fail here
            raise ReidkitError(f"OpenVINO could not write {out.name} in the temporary folder {folder} "
                               f"({first_line(error)}): free space there (the disk may be full) or set TMPDIR to a "
                               f"folder with room") from error
        for suffix in (".xml", ".bin"):  # the .xml finds its weights by name: the same stem, .bin
            shutil.copyfile(saved.with_suffix(suffix), out.with_suffix(suffix))


class OpenVinoModel:
    """An OpenVINO IR run on the CPU in float32: `model(images [N, 3, H, W] float32) -> [N, D] float32`."""

    def __init__(self, path: str | Path) -> None:
        openvino = require("openvino", "OpenVINO inference")
        path = Path(path)
        with open(path, "rb") as handle:
            head = handle.read(4096)
        if b"<net " not in head:  # checked here: OpenVINO would try its TensorFlow reader on other files
            raise ReidkitError(f"{path} is not an OpenVINO IR (.xml written by `reidkit export --format openvino`)")
        if not path.with_suffix(".bin").is_file():
            raise ReidkitError(f"the weights {path.with_suffix('.bin')} of {path} are missing; keep the .bin "
                               f"beside the .xml, or export again")
        core = openvino.Core()
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        except RuntimeError as error:  # OpenVINO's parser and plugins raise RuntimeError
            raise ReidkitError(f"{path} is not a loadable OpenVINO model; export it again with `reidkit export "
                               f"--format openvino`") from error
        values = {key: model.get_rt_info(["reidkit", key]).astype(str)
                  for key in ("format", "feature", "flip", "height", "width") if model.has_rt_info(["reidkit", key])}
        shape = model.inputs[0].get_partial_shape()
        fixed = [side.get_length() if side.is_static else 0 for side in list(shape)[2:4]]
        self.info = ModelInfo.from_strings(values, "openvino", *fixed)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        # the result array belongs to the infer request and is overwritten by the next call: copy it
        return np.array(self.compiled(images)[0], dtype=np.float32, copy=True)
