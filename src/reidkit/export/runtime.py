"""Running an exported model of any format: `load_model(path)` by file suffix, and feature extraction of
image files with it (preprocessed with PIL and numpy, `preprocess_images`, so that ONNX and OpenVINO
inference never import torch)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from reidkit.errors import ReidkitError
from reidkit.export.common import ModelInfo, preprocess_images
from reidkit.outputs import input_problem


class ExportedModel(Protocol):
    """A loaded exported file: `info`, and `model(images [N, 3, H, W] float32) -> features [N, D] float32`."""

    info: ModelInfo

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def _loaders() -> dict[str, Callable[[Path], ExportedModel]]:
    from reidkit.export.onnx_fp32 import OnnxModel
    from reidkit.export.openvino_ir import OpenVinoModel
    from reidkit.export.tensorrt_engine import TensorRtModel
    from reidkit.export.torchscript import TorchScriptModel

    return {".onnx": OnnxModel, ".xml": OpenVinoModel, ".engine": TensorRtModel, ".pt": TorchScriptModel}


def load_model(path: str | Path) -> ExportedModel:
    """The exported model in `path`, by its suffix: .onnx (onnxruntime), .xml (OpenVINO), .engine (TensorRT),
    .pt (TorchScript).

    Raises:
        ReidkitError: a missing file, another suffix, a file its runtime cannot load, a missing runtime.
    """
    path = Path(path)
    loader = _loaders().get(path.suffix.lower())
    if loader is None:
        raise ReidkitError(f"{path} is not an exported model: give a .onnx, .xml (OpenVINO), .engine (TensorRT) "
                           f"or .pt (TorchScript) file written by `reidkit export`")
    problem = input_problem(path)
    if problem:
        raise ReidkitError(f"model file {path} {problem}; write it with `reidkit export`")
    return loader(path)


def extract_with_model(model: str | Path | ExportedModel, image_paths: Sequence[str | Path],
                       height: int | None = None, width: int | None = None, batch_size: int = 64,
                       progress: bool = False) -> np.ndarray:
    """Retrieval features [N, D] float32 of image files, computed by an exported model (a path or a loaded one).

    Args:
        height: input height; default the exported model's.
        width: input width; default the exported model's.
        batch_size: images per call of the model.

    Raises:
        ReidkitError: as `load_model`; an unreadable image; a model without a known input size and no
            `height`/`width`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = load_model(model) if isinstance(model, (str, Path)) else model
    height, width = height or model.info.height, width or model.info.width
    if not (height and width):
        raise ReidkitError("the model has no fixed input size; pass height and width")
    chunks = [model(preprocess_images(image_paths[i:i + batch_size], height, width, model.info.interpolation))
              for i in tqdm(range(0, len(image_paths), batch_size), desc="extract", unit="batch", leave=False,
                            disable=None if progress else True)]
    if not chunks:
        return np.empty((0, 0), np.float32)
    features = np.concatenate(chunks).astype(np.float32, copy=False)
    bad_rows = int((~np.isfinite(features)).any(axis=1).sum())
    if bad_rows:
        raise ReidkitError(f"the exported model gives NaN or infinite features for {bad_rows} of {len(features)} "
                           f"images; export it again from weights that have not diverged")
    return features


def extract_split_model(model: str | Path, samples: Sequence[tuple[str, int, int]], out: str | Path,
                        batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Like `reidkit.engine.extraction.extract_split`, with an exported model: writes the same feature file
    (`features`, `pids`, `camids`, metadata `paths`, `feature`, `flip`, `model`, `format`), atomically, readable by
    `load_feature_file`; returns [N, D]."""
    import torch  # only here: inference itself runs without torch

    from reidkit.retrieval.feature_files import save_feature_file

    loaded = load_model(model)
    features = extract_with_model(loaded, [s[0] for s in samples], batch_size=batch_size, progress=progress)
    save_feature_file(out, torch.from_numpy(features), samples,
                      {"model": str(model), "format": loaded.info.format, "feature": str(loaded.info.feature),
                       "flip": str(loaded.info.flip)})
    return features
