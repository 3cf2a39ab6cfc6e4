"""Any model of timm (PyTorch Image Models, the optional extra `reidkit[timm]`) as a trunk:
`model.backbone: timm/<name>`, e.g. `timm/resnet50d`, `timm/convnext_tiny`, `timm/efficientnet_b0`,
`timm/vit_small_patch16_224`.

A convolutional model returns its last feature map [N, C, h, w]; with `model.last_stride: 1` it is built
with timm's `output_stride=16` (the last stage keeps the resolution of the one before, by dilation), for
the models that offer it. A vision transformer returns its tokens [N, 1 + T, C], class token first (the
ReID head takes the class token), built for the training size: the position embeddings are those of a
grid of (H/patch) × (W/patch) patches, resized from the pretrained grid by timm when weights are loaded.
timm is imported only when such a backbone is built.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from reidkit.errors import ConfigError
from reidkit.models.weights import state_mismatch

PREFIX = "timm/"


def _timm():
    try:
        import timm
    except ImportError as error:
        raise ConfigError("model.backbone=timm/...: timm is not installed; pip install 'reidkit[timm]' "
                          "(or pip install timm)") from error
    return timm


def is_vision_transformer(model: nn.Module) -> bool:
    """Whether a timm model is a ViT-style token model (it has a class token and patch embedding)."""
    return hasattr(model, "patch_embed") and getattr(model, "cls_token", None) is not None


class TimmTrunk(nn.Module):
    """A timm model without its classifier: images → feature map [N, C, h, w] or tokens [N, 1 + T, C]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.out_channels = model.num_features
        self.returns_tokens = is_vision_transformer(model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)


def build_timm_trunk(name: str, last_stride: int, input_size: tuple[int, int], pretrained: bool) -> TimmTrunk:
    """`timm/<name>` as a trunk (see the module docstring).

    Raises:
        ConfigError: timm missing, an unknown name (with close matches), a CNN without `output_stride`
            asked for last stride 1, or pretrained weights that cannot be fetched.
    """
    timm = _timm()
    model_name = name.removeprefix(PREFIX)
    known = timm.list_models()
    if model_name not in known and model_name.split(".")[0] not in known:
        close = difflib.get_close_matches(model_name, known, n=5, cutoff=0.6)
        raise ConfigError(f"timm has no model {model_name!r}" + (f"; did you mean {', '.join(close)}?" if close
                          else "; see timm.list_models()"))
    options = {"pretrained": pretrained, "num_classes": 0, "global_pool": ""}
    with torch.device("meta"):  # the architecture only: no memory, no initialisation
        probe = timm.create_model(model_name, pretrained=False, num_classes=0)
    if is_vision_transformer(probe):
        options["img_size"] = input_size
    elif last_stride == 1:
        options["output_stride"] = 16
    try:
        model = timm.create_model(model_name, **options)
    except TypeError as error:
        raise ConfigError(f"timm/{model_name} cannot keep its last stage at the resolution of the one before "
                          f"(no output_stride option: {error}); set model.last_stride=2") from error
    except Exception as error:  # hub downloads: network, missing files
        if not pretrained:
            raise
        raise ConfigError(f"model.weights=imagenet: timm could not load the pretrained weights of {model_name} "
                          f"({type(error).__name__}: {error}); offline, put them in the Hugging Face cache "
                          "(HF_HOME) or set model.weights to a local file") from error
    return TimmTrunk(model)


def load_timm_weights(trunk: TimmTrunk, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a timm model's own state dict from a local file into `trunk`: its classifier keys are dropped,
    a ViT's position embeddings resized to the trunk's grid; any other mismatch is one error listing keys."""
    expected = trunk.model.state_dict()
    state = {key: value for key, value in state.items() if key in expected or not key.startswith(("head", "fc.",
                                                                                                  "classifier"))}
    if "pos_embed" in state and "pos_embed" in expected and state["pos_embed"].shape != expected["pos_embed"].shape:
        from timm.layers import resample_abs_pos_embed

        prefix = 0 if getattr(trunk.model, "no_embed_class", False) else getattr(trunk.model, "num_prefix_tokens", 1)
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], list(trunk.model.patch_embed.grid_size),
                                                    num_prefix_tokens=prefix)
    mismatch = state_mismatch(expected, state)
    if mismatch:
        raise ConfigError(f"{source} does not fit this timm model: {mismatch}")
    trunk.model.load_state_dict(state)
