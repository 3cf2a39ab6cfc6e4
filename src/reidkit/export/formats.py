"""The export formats and the file suffix each is written with (no imports: the CLI parser reads them)."""

FORMATS = ("onnx", "onnx-fp16", "onnx-int8", "openvino", "tensorrt", "torchscript")
SUFFIXES = {"onnx": ".onnx", "onnx-fp16": ".onnx", "onnx-int8": ".onnx", "openvino": ".xml", "tensorrt": ".engine",
            "torchscript": ".pt"}
