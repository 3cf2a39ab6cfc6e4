"""A run folder from a Torchreid or fast-reid checkpoint (`reidkit import`): the commands that open a run
(eval, extract, index, serve, export, verify) then work on the peer's network unchanged.

The folder holds `config.yaml` (the given config with the model, `eval.feature` and `data.interpolation` values
the checkpoint needs, `reidkit.models.peers.peer_architecture`, then the user's overrides) and `model.safetensors` (the
checkpoint mapped to reidkit's keys, with the header `reidkit train` writes). No training happens.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reidkit.config import Config, load_config
from reidkit.engine.run_writer import write_model_run
from reidkit.errors import ReidkitError
from reidkit.models.peers import check_architecture, load_peer_state, peer_architecture, peer_num_classes, peer_weights
from reidkit.models.reid import ReidModel, build_model, model_kwargs


def import_peer_run(weights: str, run_dir: str | Path, config_path: str | Path | None = None,
                    overrides: list[str] | None = None) -> tuple[Config, ReidModel]:
    """Write the run folder `run_dir` of the checkpoint `weights` ("torchreid:PATH", "fastreid:PATH" or a
    PATH recognised from its keys); returns its config and model.

    Raises:
        ReidkitError: not a peer checkpoint, keys that do not map, overrides that contradict the checkpoint,
            or a folder that already holds a run.
    """
    peer = peer_weights(weights)
    if peer is None:
        raise ReidkitError(f"{weights} is not a Torchreid or fast-reid checkpoint (not a file, or keys of neither); "
                           "pass torchreid:PATH or fastreid:PATH of a model's state dict")
    name, state, source = peer
    needed = [f"{key}={value}" for key, value in peer_architecture(name, state, source).items()]
    config = load_config(config_path, [*needed, f"model.weights={name}:{source}", *(overrides or [])])
    run_dir = Path(run_dir)
    if (run_dir / "config.yaml").exists():
        raise ReidkitError(f"{run_dir} already holds a run (config.yaml); choose a new --out")
    check_architecture(name, state, source, config.model.backbone, config.model.embedding_dim,
                       config.model.stem_pool)
    torch.manual_seed(config.train.seed)  # the heads the checkpoint does not fill (Torchreid's BNNeck)
    model = build_model(num_classes=peer_num_classes(name, state),
                        **model_kwargs(config.model, config.data) | {"weights": None})
    load_peer_state(model, name, state, source, with_classifier=True)
    write_model_run(run_dir, config, model)
    return config, model.eval()
