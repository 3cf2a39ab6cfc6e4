"""Format `torchscript`: the feature module traced with `torch.jit.trace` and frozen (BatchNorm folded into
the convolutions), saved with its metadata as the extra file `reidkit.json`; loadable from C++ (libtorch)
without Python. PyTorch marks TorchScript as deprecated in favour of torch.export; it is still what most
C++ deployments load."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np

from reidkit.errors import ReidkitError
from reidkit.export.common import ModelInfo
from reidkit.export.source import Source

METADATA_FILE = "reidkit.json"


def write(source: Source, out: Path) -> None:
    """Write the TorchScript file `out` (.pt)."""
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        traced = torch.jit.trace(source.module, source.images[:1].repeat(2, 1, 1, 1))  # batch 2: stays dynamic
        frozen = torch.jit.freeze(traced)
        buffer = io.BytesIO()  # in memory: torch's file writer aborts the process when the disk fills
        torch.jit.save(frozen, buffer, _extra_files={METADATA_FILE: json.dumps(source.info.as_strings())})
    out.write_bytes(buffer.getvalue())  # a full disk here is an OSError with its errno


class TorchScriptModel:
    """A TorchScript file run by PyTorch on the CPU: `model(images [N, 3, H, W] float32) -> [N, D] float32`."""

    def __init__(self, path: str | Path) -> None:
        import torch

        files = {METADATA_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        except Exception as error:  # torch raises RuntimeError or ValueError for a non-TorchScript file
            raise ReidkitError(f"{path} is not a loadable TorchScript model (a .pt written by `reidkit export "
                               f"--format torchscript`)") from error
        values = json.loads(files[METADATA_FILE]) if files[METADATA_FILE] else {}
        self.info = ModelInfo.from_strings(values, "torchscript", 0, 0)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(images)).float().numpy()
