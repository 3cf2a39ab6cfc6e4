"""Where backbone weights come from: a local file the user names, or ImageNet weights by name.

`model.weights: imagenet` uses torchvision's own download and cache (`torch.hub`: $TORCH_HOME/hub/checkpoints,
by default ~/.cache/torch/hub/checkpoints). A file already in that cache is used without any network; when
the download cannot happen (offline), the error names the file to place and where. Any other value is a
local `.safetensors` or torch file, read without executing pickled code.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision

from reidkit.errors import ConfigError
from reidkit.outputs import input_problem

# The ImageNet weights BoT and fast-reid start from (torchvision's original release of each ResNet).
IMAGENET_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
}


def state_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """"" when `state` has exactly the keys and shapes of `expected`, else "missing [...], unexpected [...],
    wrong shape ['KEY [file's shape] where the model has [shape]', ...] (first 5 of each)" for an error message."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [f"{key} {list(state[key].shape)} where the model has {list(expected[key].shape)}"
                   for key in sorted(set(state) & set(expected)) if state[key].shape != expected[key].shape]
    if not (missing or unexpected or wrong_shape):
        return ""
    return (f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong_shape[:5]} "
            "(first 5 of each)")


def load_torch_file(path: Path, what: str, fix: str) -> object:
    """The contents of the torch file `path` read with `weights_only=True` (tensors, containers, numbers: no
    pickled code runs), torch's warnings silenced for this load.

    Raises:
        ConfigError: one line naming `path`: the Python objects pickled in it (the globals torch refused) and
            `fix`, or why it is not a readable `what`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own advice (weights_only=False) must not reach the user
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if refused:
            raise ConfigError(f"{path} is not a readable {what}: it holds pickled Python objects "
                              f"({', '.join(refused)}), which reidkit does not load since unpickling can run any "
                              f"code; {fix}") from None
        problem = re.search(r"WeightsUnpickler error:\s*(\S.*)", str(error))  # past torch's advice
        reason = problem.group(1) if problem else "not a pickle of tensors"
    except Exception as error:  # zipfile, storage and end-of-file errors: a truncated or foreign file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else \
            "cut short or empty" if isinstance(error, EOFError) else type(error).__name__
    raise ConfigError(f"{path} is not a readable {what} ({reason})")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights from `.safetensors` or a torch file, never executing pickled code.

    Raises:
        ConfigError: the file is missing or cannot be read as weights.
    """
    path = Path(path)
    problem = input_problem(path)
    if problem:
        raise ConfigError(f"weights file {path} {problem}; give a local .safetensors or .pth path, or "
                          "model.weights=imagenet")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises several error types for a damaged header or body
            raise ConfigError(f"{path} is not a readable weights file ({error})") from error
    state = load_torch_file(path, "weights file", (
        "only if you trust the file, re-save its state dict with `python -c \"import torch; torch.save(torch.load("
        f"{str(path)!r}, weights_only=False)['state_dict'], 'state_dict.pth')\"` (fast-reid: ['model']) and pass "
        "state_dict.pth"))
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def imagenet_cache_file(name: str) -> Path:
    """Where torchvision's cache keeps the ImageNet weights of backbone `name`."""
    url = IMAGENET_WEIGHTS[name].url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The ImageNet state dict of backbone `name` from torchvision's cache, downloading it when absent.

    Raises:
        ConfigError: no ImageNet weights are known for `name`, or they are not cached and cannot be
            downloaded (the message names the file and the folder to place it in).
    """
    if name not in IMAGENET_WEIGHTS:
        raise ConfigError(f"model.weights=imagenet: torchvision has no ImageNet weights for {name} (it has them "
                          f"for {', '.join(IMAGENET_WEIGHTS)}); set model.weights to a local .pth/.safetensors "
                          f"file of {name}, or to \"\" for random init")
    cached = imagenet_cache_file(name)
    if cached.is_file():
        return read_state_dict(cached)
    try:
        return IMAGENET_WEIGHTS[name].get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # URLError, HTTPError, socket errors, a bad hash: the file is not to be had
        raise ConfigError(f"model.weights=imagenet: could not download the ImageNet weights of {name} "
                          f"({type(error).__name__}: {error}). Offline, fetch {IMAGENET_WEIGHTS[name].url} "
                          f"elsewhere and place it at {cached} (TORCH_HOME moves that folder), or set "
                          "model.weights to a local file") from error


def backbone_state_dict(name: str, weights: str | Path) -> dict[str, torch.Tensor]:
    """The state dict that `model.weights` names for backbone `name`: "imagenet" or a local file."""
    return imagenet_state_dict(name) if str(weights) == "imagenet" else read_state_dict(weights)
