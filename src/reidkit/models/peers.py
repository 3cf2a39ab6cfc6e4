"""Checkpoints of the field's other toolkits in reidkit's model: Torchreid 0.2.5 (`resnet18/34/50`,
`resnet50_fc512`, `osnet_x1_0` … `osnet_x0_25`) and fast-reid 1.4 (BoT: `build_resnet_backbone`, ResNet-18/34/50
or ResNet50-IBN-a, with the `EmbeddingHead` of a BNNeck and a linear classifier).

`model.weights: torchreid:PATH` or `fastreid:PATH` (or a PATH whose keys are recognised as one of them)
names such a checkpoint: a torch file of the model's state dict, alone or under "state_dict" (Torchreid's
checkpoints) or "model" (fast-reid's), with or without DataParallel's "module." prefix.

Each toolkit's module names are mapped to reidkit's by an explicit table of module prefixes (`TABLES`); a
key that no entry covers is one error listing it. What each toolkit uses as the test-time feature, and what
reidkit must be to compute the same number (`peer_architecture`):

- Torchreid: bilinear resizing, ImageNet mean/std normalisation, the torchvision stem (max pool padded by 1);
  its feature is the pooled map, after the "fc" embedding (Linear → BatchNorm1d → ReLU, 512-d for OSNet and
  resnet50_fc512) when the model has one: reidkit's `features` with `model.embedding_dim`. Its ID classifier
  (a Linear with bias, on that feature, no BNNeck) has no counterpart: it is dropped, reidkit's BNNeck and
  classifier keep their initialisation (not used by `eval.feature=features`).
- fast-reid: bicubic resizing (`data.interpolation`), the same normalisation (PIXEL_MEAN/STD = ImageNet's
  × 255 on 0–255 pixels), a stem max pool with no padding and ceil mode (`model.stem_pool: ceil`); its feature is the BNNeck output
  ("heads.bottleneck.0", a BatchNorm with frozen zero bias): reidkit's `bn_features` (with
  MODEL.HEADS.WITH_BNNECK off, the pooled map: `features`); its classifier ("heads.weight", bias-free) is
  reidkit's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from reidkit.errors import ConfigError
from reidkit.models.weights import read_state_dict, state_mismatch

PEERS = ("torchreid", "fastreid")
OSNET_STEM_WIDTHS = {64: "osnet_x1_0", 48: "osnet_x0_75", 32: "osnet_x0_5", 16: "osnet_x0_25"}
# The resize of each toolkit's test transform: Torchreid's Resize((h, w)) is bilinear, fast-reid's
# T.Resize(size, interpolation=3) bicubic; both on PIL images.
PEER_INTERPOLATION = {"torchreid": "bilinear", "fastreid": "bicubic"}
IMAGENET_MEAN_255 = torch.tensor([0.485, 0.456, 0.406]) * 255
IMAGENET_STD_255 = torch.tensor([0.229, 0.224, 0.225]) * 255


def _osnet_block() -> dict[str, str]:
    """Torchreid's OSBlock modules → reidkit's OmniScaleBlock modules."""
    table = {"conv1.conv": "reduce.0", "conv1.bn": "reduce.1", "gate.fc1": "gate.fc1", "gate.fc2": "gate.fc2",
             "conv3.conv": "expand.0", "conv3.bn": "expand.1", "downsample.conv": "shortcut.0",
             "downsample.bn": "shortcut.1", "conv2a.conv1": "streams.0.0.pointwise",
             "conv2a.conv2": "streams.0.0.depthwise", "conv2a.bn": "streams.0.0.bn"}
    for stream, letter in enumerate("bcd", start=1):  # stream s has s + 1 Lite 3×3 layers
        for layer in range(stream + 1):
            for theirs, ours in (("conv1", "pointwise"), ("conv2", "depthwise"), ("bn", "bn")):
                table[f"conv2{letter}.{layer}.{theirs}"] = f"streams.{stream}.{layer}.{ours}"
    return table


# Their module (or key) prefix → reidkit's; None: dropped (see the module docstring).
TORCHREID_OSNET: dict[str, str | None] = {
    "conv1.conv": "backbone.stem.0.0", "conv1.bn": "backbone.stem.0.1",
    **{f"conv{stage}.{block}.{theirs}": f"backbone.stage{stage}.{block}.{ours}"
       for stage in (2, 3, 4) for block in (0, 1) for theirs, ours in _osnet_block().items()},
    **{f"conv{stage}.2.0.conv": f"backbone.stage{stage}.2.0" for stage in (2, 3)},  # transition 1×1 + avg pool
    **{f"conv{stage}.2.0.bn": f"backbone.stage{stage}.2.1" for stage in (2, 3)},
    "conv5.conv": "backbone.conv5.0", "conv5.bn": "backbone.conv5.1",
    "fc.0": "embedding.0", "fc.1": "embedding.1",
    "classifier": None,
}
TORCHREID_RESNET: dict[str, str | None] = {
    "conv1": "backbone.stem.0", "bn1": "backbone.stem.1",
    **{f"layer{stage}": f"backbone.layer{stage}" for stage in (1, 2, 3, 4)},  # torchvision's block layout
    "fc.0": "embedding.0", "fc.1": "embedding.1",
    "classifier": None,
}
FASTREID_RESNET: dict[str, str | None] = {
    "backbone.conv1": "backbone.stem.0", "backbone.bn1": "backbone.stem.1",
    **{f"backbone.layer{stage}": f"backbone.layer{stage}" for stage in (1, 2, 3, 4)},  # IBN: bn1.IN / bn1.BN
    "heads.bottleneck.0": "head.bn", "heads.weight": "head.classifier.weight",
    "pixel_mean": None, "pixel_std": None,  # checked to be ImageNet's (`_check_normalisation`)
}
TABLES = {("torchreid", "osnet"): TORCHREID_OSNET, ("torchreid", "resnet"): TORCHREID_RESNET,
          ("fastreid", "resnet"): FASTREID_RESNET}


def read_peer_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a Torchreid or fast-reid checkpoint file (unwrapped, "module." removed)."""
    state = read_state_dict(path)
    if isinstance(state.get("model"), dict):  # fast-reid's Checkpointer: {"model", "optimizer", ...}
        state = state["model"]
    state = {key.removeprefix("module."): value for key, value in state.items()}
    not_tensors = sorted(key for key, value in state.items() if not isinstance(value, torch.Tensor))
    if not_tensors:
        raise ConfigError(f"{path} is not a state dict of tensors (non-tensor entries {not_tensors[:5]})")
    return state


def detect_peer(state: dict[str, torch.Tensor]) -> str | None:
    """"fastreid", "torchreid" or None, from the key names of a state dict."""
    if "backbone.conv1.weight" in state and any(key.startswith("heads.") for key in state):
        return "fastreid"
    if "classifier.weight" in state and ("conv1.conv.weight" in state or "layer1.0.conv1.weight" in state):
        return "torchreid"
    return None


def peer_weights(weights: str | Path) -> tuple[str, dict[str, torch.Tensor], str] | None:
    """(peer, state dict, path) when `model.weights` names a peer checkpoint, else None.

    Raises:
        ConfigError: "torchreid:"/"fastreid:" before a file that is unreadable or is not that toolkit's.
    """
    text = str(weights)
    for peer in PEERS:
        if text.startswith(f"{peer}:"):
            path = text.removeprefix(f"{peer}:")
            state = read_peer_checkpoint(path)
            found = detect_peer(state)
            if found != peer:
                raise ConfigError(f"{path} is not a {peer} checkpoint (its keys look like "
                                  f"{found or 'neither Torchreid nor fast-reid'}: {sorted(state)[:3]} ...); "
                                  f"use {found + ':' if found else 'a plain path for a backbone file, or '}{path}")
            return peer, state, path
    if text == "imagenet" or not Path(text).is_file():
        return None
    state = read_peer_checkpoint(text)
    peer = detect_peer(state)
    return (peer, state, text) if peer else None


def _kind(state: dict[str, torch.Tensor]) -> str:
    return "osnet" if "conv1.conv.weight" in state else "resnet"


def _resnet_name(state: dict[str, torch.Tensor], prefix: str, source: str) -> str:
    """resnet18/34/50 or resnet50_ibn_a from the blocks a ResNet state dict holds."""
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state
    blocks = len({key.removeprefix(prefix).split(".")[1] for key in state if key.startswith(f"{prefix}layer3.")})
    ibn = f"{prefix}layer1.0.bn1.IN.weight" in state
    names = {(False, 2, False): "resnet18", (False, 6, False): "resnet34", (True, 6, False): "resnet50",
             (True, 6, True): "resnet50_ibn_a"}
    if (bottleneck, blocks, ibn) not in names:
        raise ConfigError(f"{source}: a ResNet with {blocks} blocks in stage 3{' and IBN' if ibn else ''}; reidkit "
                          "builds ResNet-18/34/50 and ResNet50-IBN-a only")
    return names[bottleneck, blocks, ibn]


def peer_architecture(peer: str, state: dict[str, torch.Tensor], source: str) -> dict[str, object]:
    """The reidkit config values ("section.key": value) that compute the checkpoint's feature: backbone,
    embedding_dim, stem_pool, last_stride, eval.feature and the resize interpolation of the peer's test
    transform (see the module docstring)."""
    if peer == "torchreid" and _kind(state) == "osnet":
        stem = state["conv1.conv.weight"].shape[0]
        if stem not in OSNET_STEM_WIDTHS:
            raise ConfigError(f"{source}: an OSNet with a {stem}-channel stem; reidkit builds "
                              f"{', '.join(OSNET_STEM_WIDTHS.values())}")
        backbone, last_stride = OSNET_STEM_WIDTHS[stem], 1  # OSNet has no strided last stage
    elif peer == "torchreid":  # resnet18/34/50: last stride 2; resnet50_fc512: 1
        backbone, last_stride = _resnet_name(state, "", source), 1 if "fc.0.weight" in state else 2
    else:
        backbone, last_stride = _resnet_name(state, "backbone.", source), 1  # fast-reid's BoT: LAST_STRIDE 1
    embedding = state["fc.0.weight"].shape[0] if peer == "torchreid" and "fc.0.weight" in state else 0
    return {"model.backbone": backbone, "model.embedding_dim": int(embedding),
            "model.stem_pool": "ceil" if peer == "fastreid" else "pad", "model.last_stride": last_stride,
            "model.pooling": "avg", "model.non_local": False,
            "eval.feature": "bn_features" if "heads.bottleneck.0.weight" in state else "features",
            "data.interpolation": PEER_INTERPOLATION[peer]}


def peer_num_classes(peer: str, state: dict[str, torch.Tensor]) -> int:
    """Rows of the checkpoint's ID classifier."""
    return state["heads.weight" if peer == "fastreid" else "classifier.weight"].shape[0]


def check_architecture(peer: str, state: dict[str, torch.Tensor], source: str, backbone: str,
                       embedding_dim: int, stem_pool: str) -> None:
    """Refuse a model that cannot hold the checkpoint, naming the config values that can."""
    needed = peer_architecture(peer, state, source)
    have = {"model.backbone": backbone, "model.embedding_dim": embedding_dim, "model.stem_pool": stem_pool}
    wrong = [f"{key}={needed[key]}" for key, value in have.items() if needed[key] != value]
    if wrong:
        raise ConfigError(f"{source} is a {peer} {needed['model.backbone']} checkpoint: set {' '.join(wrong)} "
                          "(`reidkit import` writes a run folder with every value the checkpoint needs)")


def map_peer_keys(state: dict[str, torch.Tensor], table: dict[str, str | None]) -> tuple[dict, list[str]]:
    """(reidkit state dict, keys no table entry covers): each key takes the entry of its longest module
    prefix (the key itself included); entries of None drop their keys."""
    mapped, unmapped = {}, []
    for key, value in state.items():
        parts = key.split(".")
        prefix = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in table), None)
        if prefix is None:
            unmapped.append(key)
        elif table[prefix] is not None:
            mapped[table[prefix] + key[len(prefix):]] = value
    return mapped, sorted(unmapped)


def _check_normalisation(state: dict[str, torch.Tensor], source: str) -> None:
    for key, expected in (("pixel_mean", IMAGENET_MEAN_255), ("pixel_std", IMAGENET_STD_255)):
        if key in state and not torch.allclose(state[key].flatten().float(), expected, atol=1e-3):
            raise ConfigError(f"{source}: its {key} {state[key].flatten().tolist()} is not ImageNet's × 255, the "
                              "normalisation reidkit applies; its features would not be reproduced")


def load_peer_state(model: nn.Module, peer: str, state: dict[str, torch.Tensor], source: str,
                    with_classifier: bool) -> None:
    """Load a peer checkpoint into a ReidModel built as `peer_architecture` says (`check_architecture`).

    Args:
        with_classifier: also load fast-reid's ID classifier (same identities: `reidkit import`); False keeps
            the model's (training on another data set).

    Raises:
        ConfigError: keys the table does not cover (all listed), or a model whose keys/shapes do not fit.
    """
    table = TABLES[peer, _kind(state)]
    mapped, unmapped = map_peer_keys(state, table)
    if unmapped:
        raise ConfigError(f"{source}: {len(unmapped)} keys of this {peer} checkpoint have no counterpart in "
                          f"reidkit's model: {unmapped}; reidkit maps Torchreid's resnet/osnet and "
                          "fast-reid's BoT ResNet(-IBN) with EmbeddingHead (no extra neck layers, non-local or SE)")
    if peer == "fastreid":
        _check_normalisation(state, source)
    if not with_classifier:
        mapped.pop("head.classifier.weight", None)
    loaded_prefixes = ("backbone.", "embedding.") + (("head.bn.",) if "heads.bottleneck.0.weight" in state else ()) \
        + (("head.classifier.",) if with_classifier and peer == "fastreid" else ())
    expected = {key: value for key, value in model.state_dict().items() if key.startswith(loaded_prefixes)}
    mismatch = state_mismatch(expected, mapped)
    if mismatch:
        raise ConfigError(f"{source} does not fit this reidkit model: {mismatch}")
    model.load_state_dict(mapped, strict=False)
