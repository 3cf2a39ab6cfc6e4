"""Any model of timm (PyTorch Image Models, the optional extra `reidkit[timm]`) as a trunk:
`model.backbone: timm/<name>`, e.g. `timm/resnet50d`, `timm/convnext_tiny`, `timm/efficientnet_b0`,
`timm/vit_small_patch16_224`.

A convolutional model returns its last feature map [N, C, h, w]; with `model.last_stride: 1` it is built
with timm's `output_stride=16` (the last stage keeps the resolution of the one before, by dilation), for
the models that offer it. A vision transformer returns its tokens [N, 1 + T, C], class token first (the
ReID head takes the class token), built for the training size: the position embeddings are those of a
grid of (H/patch) × (W/patch) patches, resized from the pretrained grid by timm when weights are loaded.
timm is imported only when such a backbone is built.

TransReID (He et al., "TransReID: Transformer-based Object Re-Identification", ICCV 2021) on a timm ViT:
`patch_stride` < patch size makes the patch embedding overlap (16×16 patches at stride 12: a 21×10 grid at
256×128; the position embeddings are resized to it), and `cameras` > 0 adds its side information embedding
(SIE): a learnable vector per camera, times `camera_scale` (λ = 3 in the paper), added to every token
after the position embedding. The camera ids come with the images (`forward(images, camids)`); images
without one (None, or an id < 0: an uploaded or unlabelled image, the ONNX export) get no camera vector.
TransReID's jigsaw patch module (`reidkit.models.jigsaw`) takes the tokens entering the last layer from
`forward_jigsaw`.
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


def freeze_head_only_parameters(model: nn.Module) -> list[str]:
    """Freeze the parameters of a timm CNN that `forward_features` never uses (MobileNetV3's `conv_head`: timm runs
    it in `forward_head`, after the pooling reidkit replaces), found by one backward of a 64×64 probe in
    evaluation mode; returns their names. Otherwise DDP stops at the second step (a parameter without gradient),
    as `ReidModel.freeze_unused` avoids for the heads."""
    was_training = model.training
    model.eval()
    model.forward_features(torch.zeros(1, 3, 64, 64)).float().sum().backward()
    model.train(was_training)
    unused = [name for name, parameter in model.named_parameters() if parameter.requires_grad and parameter.grad is None]
    for name, parameter in model.named_parameters():
        parameter.grad = None
        if name in unused:
            parameter.requires_grad_(False)
    return unused


class TimmTrunk(nn.Module):
    """A timm model without its classifier: images → feature map [N, C, h, w] or tokens [N, 1 + T, C];
    a ViT optionally with a camera embedding (`cameras` > 0; see the module docstring)."""

    def __init__(self, model: nn.Module, cameras: int = 0, camera_scale: float = 3.0) -> None:
        super().__init__()
        self.model = model
        self.out_channels = model.num_features
        self.returns_tokens = is_vision_transformer(model)
        self.camera_scale = camera_scale
        self.camera_embedding = None
        if not self.returns_tokens:
            freeze_head_only_parameters(model)
        if cameras > 0:
            self.camera_embedding = nn.Parameter(torch.zeros(cameras, 1, model.num_features))
            nn.init.trunc_normal_(self.camera_embedding, std=0.02)

    @property
    def grid_size(self) -> tuple[int, int] | None:
        """(rows, columns) of a ViT's patch grid (its patch tokens in row-major order); None for a CNN."""
        return tuple(self.model.patch_embed.grid_size) if self.returns_tokens else None

    def embed_tokens(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        """A ViT's tokens entering its first transformer layer, [N, 1 + T, C]: patches, position embeddings and,
        with a camera embedding, the camera vectors of `camids`."""
        model = self.model
        tokens = model._pos_embed(model.patch_embed(images))
        if self.camera_embedding is not None and camids is not None:
            cameras = self.camera_embedding.shape[0]
            if torch.is_tensor(camids) and not torch.compiler.is_compiling() and int(camids.max()) >= cameras:
                raise ConfigError(f"camera id {int(camids.max())} has no camera embedding: the model was built for "
                                  f"{cameras} cameras (those of its training set)")
            known = (camids >= 0).to(tokens.dtype)[:, None, None]
            tokens = tokens + self.camera_scale * known * self.camera_embedding[camids.clamp(min=0)]
        return model.norm_pre(model.patch_drop(tokens))

    def forward(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        if self.camera_embedding is None:
            return self.model.forward_features(images)
        return self.model.norm(self.model.blocks(self.embed_tokens(images, camids)))

    def forward_jigsaw(self, images: torch.Tensor,
                       camids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the ViT's output tokens, the tokens entering its last layer), both [N, 1 + T, C], for TransReID's jigsaw
        patch module (`reidkit.models.jigsaw`)."""
        hidden = self.model.blocks[:-1](self.embed_tokens(images, camids))
        return self.model.norm(self.model.blocks[-1](hidden)), hidden


def overlap_patches(model: nn.Module, stride: int, input_size: tuple[int, int]) -> None:
    """Make a timm ViT's patch embedding run at `stride` (TransReID's overlapping patches): the grid becomes
    ((H − P) // stride + 1) × ((W − P) // stride + 1) and the position embeddings are resized to it."""
    from timm.layers import resample_abs_pos_embed

    embed = model.patch_embed
    patch = embed.patch_size
    old_grid = list(embed.grid_size)
    grid = ((input_size[0] - patch[0]) // stride + 1, (input_size[1] - patch[1]) // stride + 1)
    embed.proj.stride = (stride, stride)
    embed.grid_size, embed.num_patches = grid, grid[0] * grid[1]
    prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
    with torch.no_grad():
        model.pos_embed = nn.Parameter(resample_abs_pos_embed(model.pos_embed.data, list(grid), old_size=old_grid,
                                                              num_prefix_tokens=prefix))


def build_timm_trunk(name: str, last_stride: int, input_size: tuple[int, int], pretrained: bool,
                     patch_stride: int = 0, cameras: int = 0, camera_scale: float = 3.0) -> TimmTrunk:
    """`timm/<name>` as a trunk (see the module docstring); `patch_stride` (0: the patch size) and
    `cameras` (0: no camera embedding) apply to vision transformers only.

    Raises:
        ConfigError: timm missing, an unknown name (with close matches), a CNN without `output_stride`
            asked for last stride 1, ViT options for a CNN, or pretrained weights that cannot be fetched.
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
    vit = is_vision_transformer(probe)
    if not vit and (patch_stride or cameras):
        raise ConfigError(f"model.patch_stride and model.camera_embedding apply to vision transformers; timm/"
                          f"{model_name} is not one: set model.patch_stride=0 model.camera_embedding=false")
    if vit:
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
    if patch_stride:
        patch = model.patch_embed.patch_size[0]
        if not 1 <= patch_stride <= patch:
            raise ConfigError(f"model.patch_stride: {patch_stride} is not allowed for timm/{model_name}; use 1 to "
                              f"{patch} (its patch size; 12 for TransReID's overlapping 16×16 patches), or 0")
        overlap_patches(model, patch_stride, input_size)
    return TimmTrunk(model, cameras, camera_scale)


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
