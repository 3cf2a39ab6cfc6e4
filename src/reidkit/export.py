"""ONNX export of a trained run's retrieval feature, with a parity check, and torch-free ONNX extraction.

The exported graph maps normalised images ``[N, 3, H, W]`` float32 (input ``images``, dynamic batch axis)
to the retrieval feature ``[N, D]`` float32 (output ``features``): the model output named by the run's
``eval.feature``, averaged with the output of the mirrored image when ``eval.flip`` is set, i.e. exactly
what ``reidkit extract`` computes. H and W are fixed at export time (the run's ``data.height/width``).

``extract_with_onnx`` runs such a file with onnxruntime alone: images are preprocessed with PIL and
numpy (bilinear resize with PIL's antialiasing, scale to [0, 1], ImageNet mean/std), which equals
``reidkit.data.transforms.build_test_transform`` on PIL images up to float rounding, so inference needs
neither torch nor torchvision. onnx and onnxruntime are optional: ``pip install "reidkit[export]"``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from reidkit.config.sections import MIN_HEIGHT, MIN_WIDTH
from reidkit.data.images import read_rgb
from reidkit.errors import ReidkitError
from reidkit.outputs import write_file

INPUT_NAME, OUTPUT_NAME = "images", "features"
PARITY_TOLERANCE = 1e-4  # max abs feature difference allowed between onnxruntime and PyTorch
_NATIVE_DYNAMO_OPSET = 18  # the torch.export-based exporter writes opset >= 18 natively
# The normalisation of reidkit.data.transforms (ImageNet statistics), restated here so that importing this
# module and running ONNX inference never imports torch; a test checks that both agree.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _require(module: str):
    """Import an optional module of the `export` extra, or raise a ReidkitError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ReidkitError(f"{module} is not installed; ONNX export and inference need it: "
                           f'pip install "reidkit[export]"') from error


def _feature_module(model, feature: str, flip: bool):
    """An nn.Module: images [N, 3, H, W] → model(images)[feature] [N, D], flip-averaged when `flip`."""
    import torch
    from torch import nn

    class FeatureModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            features = self.model(images)[feature]
            if flip:
                features = (features + self.model(torch.flip(images, dims=[3]))[feature]) / 2
            return features

    return FeatureModel().eval()


def _write_onnx(module, example, out_path: Path, opset: int) -> None:
    """Export `module` with a dynamic batch axis at exactly `opset`.

    Opset >= 18 uses the torch.export-based exporter; below 18 the TorchScript exporter is used,
    because the new exporter cannot down-convert ReduceMean (global pooling) to opset 17.
    """
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if opset >= _NATIVE_DYNAMO_OPSET:
            _require("onnxscript")  # the torch.export-based exporter is built on it
            torch.onnx.export(module, (example,), str(out_path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=True,
                              external_data=False, dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
                              verbose=False)
        else:
            torch.onnx.export(module, (example,), str(out_path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def _session(onnx_path: str | Path):
    """An onnxruntime CPU inference session on `onnx_path`."""
    onnxruntime = _require("onnxruntime")
    if not Path(onnx_path).is_file():
        raise ReidkitError(f"ONNX file {onnx_path} does not exist; write it with `reidkit export`")
    try:
        return onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise ReidkitError(f"{onnx_path} is not a loadable ONNX model ({type(error).__name__}); write one with "
                           f"`reidkit export`") from error


def export_onnx(run_dir: str | Path, out_path: str | Path, opset: int = 17, height: int | None = None,
                width: int | None = None, weights: str | Path | None = None, parity_images: int = 4,
                overrides: list[str] | None = None) -> dict:
    """Export a run's retrieval feature to ONNX and check it against PyTorch on real query images.

    Only `out_path` is written, atomically and only once both checks passed (a failure leaves an earlier file
    there unchanged). The parity check preprocesses the first `parity_images` query images of the run's data set with `build_test_transform` and compares onnxruntime with PyTorch on CPU.

    Args:
        run_dir: run folder written by `reidkit train`.
        out_path: the `.onnx` file to write (parent folders are created).
        opset: ONNX opset version of the graph.
        height: input height in pixels; default the run's `data.height`.
        width: input width in pixels; default the run's `data.width`.
        weights: a checkpoint to export instead of `run_dir/model.safetensors`.
        parity_images: query images used for the parity check (at least 1).
        overrides: `key=value` config overrides (e.g. `eval.flip=true`).

    Returns:
        ``{"path", "opset", "height", "width", "feature", "flip", "feat_dim", "parity_images",
        "max_abs_diff"}``.

    Raises:
        ReidkitError: onnx/onnxruntime missing, a bad run folder or data set, or a parity difference
            above 1e-4.
    """
    import torch

    from reidkit.data.build import build_dataset
    from reidkit.data.transforms import build_test_transform
    from reidkit.engine.runs import load_run_config, load_run_model

    onnx = _require("onnx")
    _require("onnxruntime")
    if parity_images < 1:
        raise ValueError(f"parity_images must be >= 1, got {parity_images}")
    config = load_run_config(run_dir, overrides)
    height = config.data.height if height is None else height
    width = config.data.width if width is None else width
    if height < MIN_HEIGHT or width < MIN_WIDTH:
        raise ReidkitError(f"export input size {height}×{width} is too small; give at least "
                           f"{MIN_HEIGHT}×{MIN_WIDTH} pixels")
    module = _feature_module(load_run_model(run_dir, config, weights).cpu(), config.eval.feature,
                             config.eval.flip)
    samples = build_dataset(config.data, progress=False).query[:parity_images]
    transform = build_test_transform(height, width)
    images = []
    for path, _, _ in samples:
        try:
            images.append(transform(read_rgb(path)))
        except (OSError, ValueError) as error:
            raise ReidkitError(f"cannot read query image {path} for the parity check ({error}); replace "
                               f"or delete the file") from error
    batch = torch.stack(images)
    with torch.no_grad():
        expected = module(batch).numpy()
    checked = {}

    def write_checked(temporary: Path) -> None:
        """Export to `temporary`, stamp the properties and check opset and parity before it is renamed."""
        with torch.no_grad():
            _write_onnx(module, batch[:1].repeat(2, 1, 1, 1), temporary, opset)  # batch 2: the axis stays dynamic
        graph = onnx.load(str(temporary))
        written_opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
        if written_opset != opset:
            raise ReidkitError(f"the exporter wrote opset {written_opset}, not the requested {opset}; "
                               f"choose --opset {written_opset}")
        onnx.helper.set_model_props(graph, {"feature": config.eval.feature, "flip": str(config.eval.flip),
                                            "height": str(height), "width": str(width)})
        onnx.save(graph, str(temporary), format="protobuf")
        actual = _session(temporary).run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
        checked["difference"] = difference = float(np.abs(actual - expected).max())
        if not difference <= PARITY_TOLERANCE:
            raise ReidkitError(f"ONNX parity check failed: max abs feature difference {difference:.3g} > "
                               f"{PARITY_TOLERANCE} on {len(samples)} query images; no ONNX file was written")

    out_path = write_file(out_path, write_checked)
    return {"path": str(out_path), "opset": opset, "height": height, "width": width,
            "feature": config.eval.feature, "flip": config.eval.flip, "feat_dim": int(expected.shape[1]),
            "parity_images": len(samples), "max_abs_diff": checked["difference"]}


def preprocess_images(image_paths: Sequence[str | Path], height: int, width: int) -> np.ndarray:
    """Images as a normalised float32 batch [N, 3, height, width], without torch.

    Same steps as `build_test_transform`: RGB, bilinear resize (PIL, antialiased), [0, 1], ImageNet
    mean/std.

    Raises:
        ReidkitError: an image that cannot be read.
    """
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    batch = np.empty((len(image_paths), 3, height, width), np.float32)
    for index, path in enumerate(image_paths):
        try:
            resized = read_rgb(path).resize((width, height), Image.Resampling.BILINEAR)
        except (OSError, ValueError) as error:
            raise ReidkitError(f"cannot read image {path} ({error})") from error
        pixels = np.asarray(resized, dtype=np.float32) / 255.0
        batch[index] = ((pixels - mean) / std).transpose(2, 0, 1)
    return batch


def extract_with_onnx(onnx_path: str | Path, image_paths: Sequence[str | Path], height: int | None = None,
                      width: int | None = None, batch_size: int = 64) -> np.ndarray:
    """Retrieval features [N, D] float32 of image files, computed by onnxruntime (no torch needed).

    Args:
        onnx_path: a file written by `export_onnx`.
        image_paths: N image files.
        height: input height; default the fixed height of the ONNX input.
        width: input width; default the fixed width of the ONNX input.
        batch_size: images per onnxruntime call.

    Raises:
        ReidkitError: onnxruntime missing, a missing ONNX file, or an unreadable image.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    session = _session(onnx_path)
    shape = session.get_inputs()[0].shape
    height = height or (shape[2] if isinstance(shape[2], int) else None)
    width = width or (shape[3] if isinstance(shape[3], int) else None)
    if height is None or width is None:
        raise ReidkitError(f"{onnx_path} has no fixed input size; pass height and width")
    chunks = [session.run([OUTPUT_NAME], {INPUT_NAME: preprocess_images(image_paths[i:i + batch_size],
                                                                        height, width)})[0]
              for i in range(0, len(image_paths), batch_size)]
    dim = session.get_outputs()[0].shape[1]
    return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else \
        np.empty((0, dim if isinstance(dim, int) else 0), np.float32)


def extract_split_onnx(onnx_path: str | Path, samples: Sequence[tuple[str, int, int]], out: str | Path,
                       batch_size: int = 64) -> np.ndarray:
    """Like `reidkit.engine.features.extract_split`, with onnxruntime: writes the same feature file
    (`features`, `pids`, `camids`, metadata `paths`), readable by `load_feature_file`; returns [N, D]."""
    from safetensors.numpy import save_file

    features = extract_with_onnx(onnx_path, [s[0] for s in samples], batch_size=batch_size)
    properties = _session(onnx_path).get_modelmeta().custom_metadata_map
    arrays = {"features": np.ascontiguousarray(features), "pids": np.array([s[1] for s in samples], np.int64),
              "camids": np.array([s[2] for s in samples], np.int64)}
    metadata = {"paths": json.dumps([str(s[0]) for s in samples]), "onnx": str(onnx_path),
                **{k: properties[k] for k in ("feature", "flip") if k in properties}}
    write_file(out, lambda temporary: save_file(arrays, str(temporary), metadata=metadata))
    return features
