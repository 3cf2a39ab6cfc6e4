"""Feature files: the features of a list of samples, saved as `.safetensors` with their labels and paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from reidkit.errors import ReidkitError
from reidkit.outputs import input_problem, write_file


def save_feature_file(path: str | Path, features: torch.Tensor, samples: list[tuple[str, int, int]],
                      metadata: dict[str, str]) -> Path:
    """Write a feature file atomically (`reidkit.outputs.write_file`): tensors `features` [N, D], `pids` [N] and
    `camids` [N] int64 of the `(path, pid, camid)` samples; metadata: the image `paths` as JSON (made absolute, so
    the file names its images from any working folder), then `metadata`
    (what made the features: `feature`, `flip`, and `metric` / `model_digest` of a run, or `model` / `format` of
    an exported file)."""
    from safetensors.torch import save_file

    tensors = {"features": features.contiguous(),
               "pids": torch.tensor([s[1] for s in samples], dtype=torch.int64),
               "camids": torch.tensor([s[2] for s in samples], dtype=torch.int64)}
    header = {"paths": json.dumps([os.path.abspath(s[0]) for s in samples]), **metadata}
    return write_file(path, lambda temporary: save_file(tensors, str(temporary), metadata=header))


def load_feature_file(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Read `(features [N,D], pids [N], camids [N], paths)` written by `save_feature_file`.

    Raises:
        ReidkitError: the file is missing, not a feature file, inconsistent, or holds NaN/inf features.
    """
    from safetensors import safe_open

    path = Path(path)
    problem = input_problem(path)
    if problem:
        raise ReidkitError(f"feature file {path} {problem}; write one with `reidkit extract --run RUN --split "
                           f"query|gallery --out FILE`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            paths = json.loads(handle.metadata()["paths"])
            features, pids, camids = (handle.get_tensor(key) for key in ("features", "pids", "camids"))
    except Exception as error:  # safetensors, JSON and key errors alike: the file is not what we wrote
        raise ReidkitError(f"{path} is not a feature file written by `reidkit extract` "
                           f"({type(error).__name__}: {error})") from error
    if not (features.ndim == 2 and features.is_floating_point()
            and len(features) == len(pids) == len(camids) == len(paths)):
        raise ReidkitError(f"{path} is not a feature file written by `reidkit extract`: features "
                           f"{tuple(features.shape)} {features.dtype}, {len(pids)} pids, {len(camids)} camids, "
                           f"{len(paths)} paths (expected float [N, D] and N of each)")
    bad_rows = int((~torch.isfinite(features)).any(dim=1).sum())
    if bad_rows:
        raise ReidkitError(f"{path} holds NaN or infinite features in {bad_rows} of {len(features)} rows; "
                           f"extract them again with weights that have not diverged")
    return features, pids, camids, paths


def feature_file_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a feature file (`paths`, `feature`, `flip`, `metric`, `model_digest`; older files lack the
    last two)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})
