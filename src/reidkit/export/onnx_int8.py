"""Format `onnx-int8`: onnxruntime static quantisation (QDQ) of the ONNX graph, calibrated on training images.

Weights int8 per output channel (or one scale per tensor) on 7 bits (onnxruntime's `reduce_range`),
activations uint8 per tensor with ranges from onnxruntime's calibration (`CALIBRATION_METHODS`: MinMax, the
default, takes the observed range; Entropy the range that keeps the KL divergence of the activation histogram
smallest; Percentile clips at the 99.999th percentile of |x|) over `calibration_images` training images of the
run's data set, taken evenly spaced over the sorted training list (so many identities and cameras, and the
same images every time: the file is deterministic). The graph is first pre-processed (shape inference, Conv +
BatchNorm folding) as onnxruntime recommends; the BNNeck's BatchNormalization stays float. Run by `OnnxModel`.

Why 7-bit weights: on CPUs without VNNI (AVX2-only, most AMD and older Intel servers) onnxruntime's u8×s8
kernels add pairs of products in int16 (`vpmaddubsw`), which saturates for 255·127·2 > 32,767; with weights
in [−64, 63] the pair sum stays below 32,767 and the file computes the same on every x86-64 CPU. Measured on
an AVX2 AMD EPYC (tiny config, 60 query images): min cosine to float32 0.977 with 8-bit weights, 0.998 with
7-bit ones.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from reidkit.export.common import INPUT_NAME, preprocess_images, require
from reidkit.export.formats import CALIBRATION_METHODS
from reidkit.export.onnx_fp32 import set_info, write_onnx_model
from reidkit.export.source import Source

CALIBRATION_BATCH = 32


def calibration_paths(train_samples: list, count: int) -> list[str]:
    """`count` image paths evenly spaced over `train_samples` (all of them when there are fewer)."""
    if count < 1:
        raise ValueError(f"calibration_images must be >= 1, got {count}")
    count = min(count, len(train_samples))
    return [train_samples[i * len(train_samples) // count][0] for i in range(count)]


def write(source: Source, out: Path, opset: int = 17, calibration_images: int = 128,
          calibration_method: str = "minmax", per_channel: bool = True) -> None:
    """Write the int8 ONNX file `out`."""
    onnx = require("onnx", "ONNX export")
    require("onnxruntime.quantization", "int8 quantisation")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    paths = calibration_paths(sorted(source.dataset.train), calibration_images)
    images = preprocess_images(paths, source.info.height, source.info.width, source.info.interpolation)
    with tempfile.TemporaryDirectory() as folder:
        float_graph, prepared = Path(folder) / "float.onnx", Path(folder) / "prepared.onnx"
        write_onnx_model(source, float_graph, opset)
        quant_pre_process(str(float_graph), str(prepared))
        quantize(prepared, out, images, calibration_method, per_channel)
    graph = onnx.load(str(out))
    set_info(graph, source.info)
    onnx.save(graph, str(out))


def quantize(float_graph: Path, out: Path, images: np.ndarray, calibration_method: str = "minmax",
             per_channel: bool = True) -> None:
    """Quantise the float ONNX file `float_graph` (input `images`) to the QDQ file `out`: weights int8 on 7 bits
    (one scale per output channel when `per_channel`, else per tensor), activations uint8 with ranges calibrated by
    `calibration_method` on `images` [N, 3, H, W] (in equal batches of at most `CALIBRATION_BATCH`);
    BatchNormalization stays float.

    Raises:
        ValueError: `calibration_method` is not one of `CALIBRATION_METHODS`.
    """
    if calibration_method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration_method must be one of {', '.join(CALIBRATION_METHODS)}, got "
                         f"{calibration_method!r}")
    quantization = require("onnxruntime.quantization", "int8 quantisation")
    from onnxruntime.quantization.registry import QDQRegistry

    methods = quantization.CalibrationMethod
    method = dict(zip(CALIBRATION_METHODS, (methods.MinMax, methods.Entropy, methods.Percentile)))[calibration_method]

    # batches of one size: onnxruntime's histogram collectors (Entropy, Percentile) stack them into one array
    batch = max(size for size in range(1, CALIBRATION_BATCH + 1) if len(images) % size == 0)

    class Calibration(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(range(0, len(images), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self.batches, None)
            return None if start is None else {INPUT_NAME: images[start:start + batch]}

    quantization.quantize_static(
        str(float_graph), str(out), Calibration(), quant_format=quantization.QuantFormat.QDQ,
        per_channel=per_channel, reduce_range=True, activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8,
        calibrate_method=method,
        op_types_to_quantize=[op for op in QDQRegistry if op != "BatchNormalization"])
