"""Model weights on disk: `*.safetensors` (no pickled code) with a small string metadata header.

Files are written to a temporary name and renamed, so a crash never leaves a half-written checkpoint
under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from reidkit.errors import ReidkitError


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write the state dict of `model` to `path` atomically (temporary file, fsync, rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    temporary = path.with_name(path.name + ".tmp")
    save_file(state, str(temporary), metadata=metadata or {})
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read `(state_dict, metadata)` from a `.safetensors` file.

    Raises:
        ReidkitError: the file is missing or is not a safetensors file (e.g. truncated).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ReidkitError(f"weights file {path} does not exist; train first or give the right run folder")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises several error types for a damaged header or body
        raise ReidkitError(f"{path} is not a readable .safetensors file ({error}); "
                           "it may be truncated: use an earlier checkpoint") from error


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load `state` into `model` strictly, naming mismatched keys and shapes in one error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        raise ReidkitError(f"{source} does not fit this model: missing {missing[:5]}, unexpected "
                           f"{unexpected[:5]}, wrong shape {wrong_shape[:5]} (first 5 of each); "
                           "check model.backbone and the data set the run was trained on")
    model.load_state_dict(state)
