"""The export formats, the file suffix each is written with, and the int8 calibration methods (no imports: the
CLI parser reads them)."""

FORMATS = ("onnx", "onnx-fp16", "onnx-int8", "openvino", "tensorrt", "torchscript")
SUFFIXES = {"onnx": ".onnx", "onnx-fp16": ".onnx", "onnx-int8": ".onnx", "openvino": ".xml", "tensorrt": ".engine",
            "torchscript": ".pt"}
# onnxruntime's CalibrationMethod MinMax, Entropy, Percentile (`reidkit.export.onnx_int8`)
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
