"""Reopen a finished run folder: its config (plus overrides) and its trained model."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from reidkit.config import Config, apply_overrides, config_from_dict
from reidkit.engine.checkpoint import load_into, load_weights
from reidkit.errors import ReidkitError
from reidkit.models.reid import ReidModel, build_model, model_kwargs


def load_run_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """The `config.yaml` of `run_dir` with ``key=value`` overrides applied (e.g. eval.flip=true)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ReidkitError(f"{run_dir} is not a run folder (no config.yaml); pass the --out of `reidkit train`")
    return config_from_dict(apply_overrides(yaml.safe_load(path.read_text()), overrides or []))


def model_metadata(model: ReidModel, config: Config) -> dict[str, str]:
    """The string header saved with the weights: what `load_run_model` needs to rebuild the model."""
    classes = {name: head.out_features for name, head in model.attribute_heads.classifiers.items()} \
        if model.attribute_heads is not None else None
    return {"num_classes": str(model.num_classes), "backbone": config.model.backbone,
            "attributes": json.dumps(classes), "pair_head": json.dumps(model.pair_head is not None)}


def load_run_model(run_dir: str | Path, config: Config, weights: str | Path | None = None) -> ReidModel:
    """Rebuild the model of a run and load `weights` (default: the run's final `model.safetensors`)."""
    path = Path(weights) if weights else Path(run_dir) / "model.safetensors"
    state, metadata = load_weights(path)
    if "num_classes" not in metadata:
        raise ReidkitError(f"{path} has no num_classes metadata; it was not written by reidkit")
    kwargs = model_kwargs(config.model) | {"weights": None}  # trained weights replace any ImageNet init
    model = build_model(num_classes=int(metadata["num_classes"]),
                        attributes=json.loads(metadata.get("attributes", "null")),
                        pair_head=metadata.get("pair_head") == "true", **kwargs)
    load_into(model, state, path)
    return model.eval()
