"""The ReID network: backbone trunk → pooling → BNNeck → classifier.

The model does not know which losses train it: `forward` returns the same dict of tensors in training
and evaluation, and each loss term picks the key it needs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from reidkit.errors import ConfigError
from reidkit.models.attention import AttentionBranch
from reidkit.models.backbones import build_backbone
from reidkit.models.heads import HEADS, POOLINGS, AttributeHeads, BNNeckHead, PairHead
from reidkit.models.jigsaw import JigsawPatchModule
from reidkit.models.peers import check_architecture, load_peer_state, peer_weights
from reidkit.models.temporal import build_aggregation


def embedding_layer(in_dim: int, out_dim: int) -> nn.Sequential:
    """Torchreid's embedding after pooling (OSNet's 512-d "fc"): Linear → BatchNorm1d → ReLU."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True))


class ReidModel(nn.Module):
    """images [N,3,H,W] -> {"features" [N,D], "bn_features" [N,D], "logits" [N,C],
    "attr_logits" {name: [N, classes]}} (attr_logits empty without attribute heads), plus "att_features"
    [N,D] with Mancs's attention-aware branch (`attention_branch=True`): the last feature map re-weighted by
    a fully attentional block and pooled, beside the ID branch's "features" (equal to them at insertion).

    `embedding_dim` > 0 adds Torchreid's embedding layer (`embedding_layer`) after pooling: the head then
    works on its D = embedding_dim outputs. `head` picks the ID head: "bnneck" (BoT's `BNNeckHead`) or "linear"
    (Torchreid's `LinearHead`: a biased classifier on the feature; "bn_features" are then the features).

    `jigsaw_groups` = k > 0 (a vision transformer trunk) adds TransReID's jigsaw patch module
    (`reidkit.models.jigsaw`) and one BNNeck head per local feature: outputs "jigsaw" {"features" [N,k,D],
    "bn_features" [N,k,D], "logits" [N,k,C]}, and TransReID's retrieval features "jigsaw_features" and
    "jigsaw_bn_features" [N,(1+k)D]: the global feature then the k local ones divided by k.

    Tracklets `[B, T, 3, H, W]` (with an optional `frame_mask` [B, T], True for real frames) run the trunk on
    the B·T frames and aggregate their pooled features over time (`temporal`, `reidkit.models.temporal`)
    before the head: every output is then one per tracklet. Images `[N, 3, H, W]` skip the aggregation.
    """

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, pooling: str = "avg",
                 attributes: dict[str, int] | None = None, pair_head: bool = False,
                 attention_branch: bool = False, embedding_dim: int = 0, jigsaw_groups: int = 0,
                 jigsaw_shift: int = 5, jigsaw_shuffle_groups: int = 2, temporal: str = "avg",
                 head: str = "bnneck") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling '{pooling}'; choose one of {', '.join(POOLINGS)}")
        if head not in HEADS:
            raise ValueError(f"unknown head '{head}'; choose one of {', '.join(HEADS)}")
        self.backbone = backbone
        self.pool = POOLINGS[pooling]()
        self.embedding = embedding_layer(feat_dim, embedding_dim) if embedding_dim > 0 else None
        if embedding_dim > 0 and attention_branch:
            raise ConfigError("model.attention_branch works on the trunk's feature map and model.embedding_dim on "
                              "its pooled feature: set one of them off")
        if embedding_dim > 0:
            nn.init.normal_(self.embedding[0].weight, std=0.01)
            nn.init.zeros_(self.embedding[0].bias)
            feat_dim = embedding_dim
        self.head = HEADS[head](feat_dim, num_classes)
        self.attribute_heads = AttributeHeads(feat_dim, attributes) if attributes else None
        self.pair_head = PairHead(feat_dim) if pair_head else None
        self.attention_branch = AttentionBranch(feat_dim, self.pool) if attention_branch else None
        self.feat_dim = feat_dim
        self.num_classes = num_classes
        self.jigsaw, self.jigsaw_heads = None, None
        if jigsaw_groups > 0:
            if not hasattr(backbone, "forward_jigsaw") or not backbone.returns_tokens or embedding_dim > 0 \
                    or attention_branch:
                raise ConfigError("model.jigsaw_groups needs a vision transformer trunk (model.backbone=timm/vit_...) "
                                  "without model.embedding_dim or model.attention_branch; set model.jigsaw_groups=0")
            rows, columns = backbone.grid_size
            try:
                self.jigsaw = JigsawPatchModule(backbone.model.blocks[-1], backbone.model.norm, rows * columns,
                                                jigsaw_groups, jigsaw_shift, jigsaw_shuffle_groups)
            except ValueError as error:
                raise ConfigError(str(error)) from error
            self.jigsaw_heads = nn.ModuleList(BNNeckHead(feat_dim, num_classes) for _ in range(jigsaw_groups))
        self.uses_camids = getattr(backbone, "camera_embedding", None) is not None
        self.temporal = build_aggregation(temporal, feat_dim)

    def forward_features(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled embedding before the BNNeck, [N, D]: the pooled feature map of a CNN, the class token of
        a transformer's tokens [N, 1 + T, D]; then the embedding layer when there is one. `camids` [N] reach
        a trunk with a camera embedding (TransReID) and are ignored by the others."""
        maps = self.backbone(images, camids) if self.uses_camids else self.backbone(images)
        pooled = maps[:, 0] if maps.dim() == 3 else self.pool(maps)
        return self.embedding(pooled) if self.embedding is not None else pooled

    def forward_head(self, features: torch.Tensor) -> dict[str, torch.Tensor | dict]:
        bn_features, logits = self.head(features)
        attr_logits = self.attribute_heads(bn_features) if self.attribute_heads is not None else {}
        return {"features": features, "bn_features": bn_features, "logits": logits, "attr_logits": attr_logits}

    def forward_tracklets(self, tracklets: torch.Tensor, camids: torch.Tensor | None = None,
                          frame_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor | dict]:
        """Outputs of tracklets [B, T, 3, H, W]: frame features of the B·T frames aggregated over the frames
        where `frame_mask` [B, T] is True (default: all), then the head; `camids` [B] per tracklet."""
        if self.jigsaw is not None or self.attention_branch is not None:
            raise ConfigError("tracklets are aggregated from the pooled frame features; model.jigsaw_groups and "
                              "model.attention_branch have none: set them off for video data")
        batch, length = tracklets.shape[:2]
        frame_camids = camids.repeat_interleave(length) if camids is not None and self.uses_camids else None
        frames = self.forward_features(tracklets.flatten(0, 1), frame_camids).unflatten(0, (batch, length))
        mask = None if frame_mask is None else frame_mask.to(frames.device)
        return self.forward_head(self.temporal(frames, mask))

    def forward(self, images: torch.Tensor, camids: torch.Tensor | None = None,
                frame_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor | dict]:
        if images.dim() == 5:
            return self.forward_tracklets(images, camids, frame_mask)
        if self.jigsaw is not None:
            return self._forward_jigsaw(images, camids)
        if self.attention_branch is None:
            return self.forward_head(self.forward_features(images, camids))
        maps = self.backbone(images)
        if maps.dim() != 4:
            raise ConfigError("model.attention_branch re-weights a CNN feature map; this backbone returns tokens: "
                              "set model.attention_branch=false or use a CNN backbone")
        return {**self.forward_head(self.pool(maps)), "att_features": self.attention_branch(maps)}

    def _forward_jigsaw(self, images: torch.Tensor, camids: torch.Tensor | None) -> dict[str, torch.Tensor | dict]:
        tokens, hidden = self.backbone.forward_jigsaw(images, camids if self.uses_camids else None)
        outputs = self.forward_head(tokens[:, 0])
        local = self.jigsaw(hidden)
        heads = [head(local[:, i]) for i, head in enumerate(self.jigsaw_heads)]
        bn_local = torch.stack([bn for bn, _ in heads], dim=1)
        k = len(heads)
        outputs["jigsaw"] = {"features": local, "bn_features": bn_local,
                             "logits": torch.stack([logits for _, logits in heads], dim=1)}
        outputs["jigsaw_features"] = torch.cat([outputs["features"], local.flatten(1) / k], dim=1)
        outputs["jigsaw_bn_features"] = torch.cat([outputs["bn_features"], bn_local.flatten(1) / k], dim=1)
        return outputs

    def freeze_unused(self, used_outputs: Iterable[str]) -> list[str]:
        """Stop training the head layers that none of `used_outputs` depends on; returns their names.

        "logits" needs the BNNeck and the classifier, "bn_features" the BNNeck, "attr_logits" the BNNeck and
        the attribute heads, "att_features" the attention-aware branch, "jigsaw" the jigsaw patch module and its
        heads; "features" and the pair head (trained
        by its own loss) are never frozen. A frozen layer still runs (its BatchNorm statistics are updated); it
        only gets no gradient, so DistributedDataParallel does not wait for one.
        """
        used = set(used_outputs)
        needs = {"head.bn": (getattr(self.head, "bn", None), {"bn_features", "logits", "attr_logits"}),
                 "head.classifier": (self.head.classifier, {"logits"}),
                 "attribute_heads": (self.attribute_heads, {"attr_logits"}),
                 "attention_branch": (self.attention_branch, {"att_features"}),
                 "jigsaw": (nn.ModuleList([self.jigsaw, self.jigsaw_heads]) if self.jigsaw is not None else None,
                            {"jigsaw"})}
        frozen = []
        for name, (layer, outputs) in needs.items():
            trainable = [p for p in (layer.parameters() if layer is not None else []) if p.requires_grad]
            if trainable and not used & outputs:
                for parameter in trainable:
                    parameter.requires_grad_(False)
                frozen.append(name)
        return frozen

    def verify(self, features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
        """Probability [M] that each pair of features [M, D] shows the same person (needs the pair head)."""
        if self.pair_head is None:
            raise ValueError("this model has no pair head: train it with loss.verification.weight > 0")
        return self.pair_head(features_a, features_b).softmax(dim=1)[:, 1]


# The most classes one classifier head may have (identities; the classes of an attribute), and the most cameras
# of a camera embedding: 8 GB of float32 weights for a 2048-d feature. The largest public ReID training sets have
# about 30,000 identities; a count over this comes from a damaged or edited file, and is refused before any memory
# is allocated for it.
MAX_CLASSES = 1_000_000


def build_model(backbone: str, num_classes: int, last_stride: int = 1, pooling: str = "avg",
                weights: str | None = None, attributes: dict[str, int] | None = None,
                pair_head: bool = False, non_local: bool = False,
                input_size: tuple[int, int] = (256, 128), attention_blocks: bool = False,
                attention_branch: bool = False, embedding_dim: int = 0, stem_pool: str = "pad",
                patch_stride: int = 0, cameras: int = 0, camera_scale: float = 3.0, jigsaw_groups: int = 0,
                jigsaw_shift: int = 5, jigsaw_shuffle_groups: int = 2, temporal: str = "avg",
                head: str = "bnneck") -> ReidModel:
    """Build a ReidModel from plain arguments (see `model_kwargs` for the config mapping).

    `weights` naming a Torchreid or fast-reid checkpoint ("torchreid:PATH", "fastreid:PATH", or a file whose
    keys are recognised as one) initialises the whole network but the ID classifier from it
    (`reidkit.models.peers`); other values initialise the trunk (`build_backbone`).

    Raises:
        ConfigError: more than `MAX_CLASSES` classes in a head or cameras; an inconsistent architecture.
    """
    counts = {"num_classes": num_classes, "cameras": cameras,
              **{f"attribute {name!r}": count for name, count in (attributes or {}).items()}}
    too_many = [f"{what} {count}" for what, count in counts.items() if count > MAX_CLASSES]
    if too_many:
        raise ConfigError(f"{', '.join(too_many)} is over the ceiling of {MAX_CLASSES:,} classes (or cameras) per "
                          "head; a count this large comes from a damaged file or a wrong data set")
    peer = peer_weights(weights) if weights else None
    if peer:
        check_architecture(peer[0], peer[1], peer[2], backbone, embedding_dim, stem_pool)
    trunk = build_backbone(backbone, last_stride=last_stride, weights=None if peer else weights,
                           non_local=non_local, input_size=input_size, attention_blocks=attention_blocks,
                           stem_pool=stem_pool, patch_stride=patch_stride, cameras=cameras,
                           camera_scale=camera_scale)
    model = ReidModel(trunk, trunk.out_channels, num_classes, pooling=pooling, attributes=attributes,
                      pair_head=pair_head, attention_branch=attention_branch, embedding_dim=embedding_dim,
                      jigsaw_groups=jigsaw_groups, jigsaw_shift=jigsaw_shift,
                      jigsaw_shuffle_groups=jigsaw_shuffle_groups, temporal=temporal,
                      head=head)
    if peer:
        load_peer_state(model, *peer, with_classifier=False)
    return model


def model_kwargs(model_config, data_config=None) -> dict:
    """Map a `reidkit.config.ModelConfig` (and the training size of a `DataConfig`, which a vision
    transformer's patch grid needs) to `build_model` keyword arguments; `cameras` (with
    `model.camera_embedding`) comes from the data set and is the caller's."""
    size = {"input_size": (data_config.height, data_config.width)} if data_config is not None else {}
    return {"backbone": model_config.backbone, "last_stride": model_config.last_stride,
            "pooling": model_config.pooling, "weights": model_config.weights or None,
            "non_local": model_config.non_local, "attention_blocks": model_config.attention_blocks,
            "attention_branch": model_config.attention_branch, "embedding_dim": model_config.embedding_dim,
            "stem_pool": model_config.stem_pool, "patch_stride": model_config.patch_stride,
            "camera_scale": model_config.camera_scale, "jigsaw_groups": model_config.jigsaw_groups,
            "jigsaw_shift": model_config.jigsaw_shift, "jigsaw_shuffle_groups": model_config.jigsaw_shuffle_groups,
            "temporal": model_config.temporal, "head": model_config.head, **size}
