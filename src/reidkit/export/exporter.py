"""`export(run, format, out)`: one entry point for every format, each file checked by the one parity check."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from reidkit.errors import ReidkitError
from reidkit.outputs import move_into_place, write_error
from reidkit.export.common import ModelInfo
from reidkit.export.formats import CALIBRATION_METHODS, FORMATS, SUFFIXES
from reidkit.export.parity import Parity, Tolerance, check_parity, tolerance_for


@dataclass(frozen=True)
class Exported(os.PathLike):
    """An exported model: `path` (and, being path-like, usable wherever a path is), every file written
    (`files`: OpenVINO's .bin, TensorRT's .json), its `info`, its `parity` figures, the `tolerance` they met
    and its `feat_dim`."""

    path: Path
    info: ModelInfo
    parity: Parity
    feat_dim: int
    tolerance: Tolerance  # the bound the parity check held it to
    files: list[Path] = field(default_factory=list)

    def __fspath__(self) -> str:
        return str(self.path)


def export(run_dir: str | Path, format: str, out: str | Path, *, opset: int = 17, height: int | None = None,
           width: int | None = None, weights: str | Path | None = None, parity_images: int = 16,
           calibration_images: int = 128, calibration_method: str = "minmax", per_channel: bool = True,
           min_cosine: float | None = None, overrides: list[str] | None = None) -> Exported:
    """Export a run's retrieval feature in `format` and check it against PyTorch on real query images.

    The parity check (`reidkit.export.parity`) runs the first `parity_images` query images of the run's data
    set through PyTorch and through the exported file loaded by its own runtime (`load_model`); the files
    are removed again when it fails.

    Args:
        run_dir: run folder written by `reidkit train`.
        format: one of `FORMATS`: onnx, onnx-fp16, onnx-int8, openvino, tensorrt, torchscript.
        out: the file to write, with the format's suffix (`SUFFIXES`: .onnx, .xml, .engine, .pt).
        opset: ONNX opset of the graph (every format but torchscript goes through ONNX).
        height, width: input size in pixels; default the run's `data.height` / `data.width`.
        weights: a checkpoint to export instead of `run_dir/model.safetensors`.
        parity_images: query images of the parity check (at least 1).
        calibration_images: training images that calibrate onnx-int8 (at least 1).
        calibration_method: how onnx-int8 sets activation ranges (`CALIBRATION_METHODS`: minmax, entropy,
            percentile).
        per_channel: onnx-int8 weights with one scale per output channel (else one per tensor).
        min_cosine: the parity check's min-cosine bound in [0, 1] instead of the format's (`TOLERANCES`).
        overrides: `key=value` config overrides (e.g. `eval.flip=true`).

    Raises:
        ReidkitError: an unknown format, a wrong suffix, a missing package (or GPU, for tensorrt), a bad run
            folder or data set, or a failed parity check.
    """
    from reidkit.export import onnx_fp16, onnx_fp32, onnx_int8, openvino_ir, tensorrt_engine, torchscript
    from reidkit.export.runtime import load_model
    from reidkit.export.source import prepare_source

    if format not in FORMATS:
        raise ReidkitError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.suffix.lower() != SUFFIXES[format]:
        raise ReidkitError(f"the {format} file must end in {SUFFIXES[format]}: use --out "
                           f"{out.with_suffix(SUFFIXES[format])}")
    if format == "tensorrt":
        tensorrt_engine.require_tensorrt()  # before the model is built
    if calibration_images < 1:
        raise ValueError(f"calibration_images must be >= 1, got {calibration_images}")
    if calibration_method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration_method must be one of {', '.join(CALIBRATION_METHODS)}, got "
                         f"{calibration_method!r}")
    tolerance = tolerance_for(format, min_cosine)
    source = prepare_source(run_dir, format, height, width, weights, parity_images, overrides)
    writers = {"onnx": lambda path: onnx_fp32.write(source, path, opset),
               "onnx-fp16": lambda path: onnx_fp16.write(source, path, opset),
               "onnx-int8": lambda path: onnx_int8.write(source, path, opset, calibration_images, calibration_method,
                                                         per_channel),
               "openvino": lambda path: openvino_ir.write(source, path, opset),
               "tensorrt": lambda path: tensorrt_engine.write(source, path, opset),
               "torchscript": lambda path: torchscript.write(source, path)}

    def with_companions(path: Path) -> list[Path]:  # the file and the files that go with it
        return [path, *({"openvino": [path.with_suffix(".bin")], "tensorrt": [tensorrt_engine.metadata_path(path)]}
                        .get(format, []))]

    # The files are written and checked in a staging folder beside `out` under their final names (runtimes
    # read the suffix; OpenVINO's .xml names its .bin), then moved into place, the main file last: a failed
    # writer, runtime or parity check leaves no file behind and an earlier export at `out` intact.
    files = with_companions(out)
    staging = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:
        staging.mkdir(parents=True, exist_ok=True)
        staged = with_companions(staging / out.name)
        writers[format](staged[0])
        parity = check_parity(format, load_model(staged[0])(source.images.numpy()), source.expected, tolerance)
        for path, final in reversed(list(zip(staged, files))):
            move_into_place(path, final)
    except OSError as error:  # a full disk, a size limit, a read-only folder (a converter's own errors pass)
        raise write_error(out, error) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Exported(out, source.info, parity, int(source.expected.shape[1]), tolerance, files)


def export_onnx(run_dir: str | Path, out_path: str | Path, opset: int = 17, height: int | None = None,
                width: int | None = None, weights: str | Path | None = None, parity_images: int = 4,
                overrides: list[str] | None = None) -> dict:
    """`export(run_dir, "onnx", out_path, ...)` as the summary dict of earlier versions: ``{"path", "opset",
    "height", "width", "feature", "flip", "feat_dim", "parity_images", "max_abs_diff"}``."""
    result = export(run_dir, "onnx", out_path, opset=opset, height=height, width=width, weights=weights,
                    parity_images=parity_images, overrides=overrides)
    return {"path": str(result.path), "opset": opset, "height": result.info.height, "width": result.info.width,
            "feature": result.info.feature, "flip": result.info.flip, "feat_dim": result.feat_dim,
            "parity_images": result.parity.images, "max_abs_diff": result.parity.max_abs_diff}
