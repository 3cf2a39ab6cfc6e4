"""The loss of TransReID's jigsaw branch (He et al., ICCV 2021): every local feature is trained like the global
one, with an ID loss on its own classifier and a triplet loss on its feature."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reidkit.losses.metric import trihard_loss
from reidkit.losses.representation import cross_entropy_label_smooth


def jigsaw_loss(local: dict[str, Tensor], labels: Tensor, label_smoothing: float = 0.1, margin: float | None = 0.3,
                metric: str = "euclidean") -> Tensor:
    """L = (1/k) Σ_i [CE_ε(logits_i, y) + TriHard(features_i, y)] over the k local features.

    Args:
        local: the model's "jigsaw" output: "logits" [N, k, C] and "features" [N, k, D].
        labels: identities [N].
    """
    logits, features = local["logits"], local["features"]
    terms = [cross_entropy_label_smooth(logits[:, i], labels, label_smoothing)
             + trihard_loss(features[:, i], labels, margin, metric) for i in range(features.shape[1])]
    return torch.stack(terms).mean()


class JigsawLoss(nn.Module):
    """Module form of `jigsaw_loss`; `forward(local {"logits", "features"}, labels [N])` returns a scalar."""

    def __init__(self, label_smoothing: float = 0.1, margin: float | None = 0.3, metric: str = "euclidean") -> None:
        super().__init__()
        self.label_smoothing, self.margin, self.metric = label_smoothing, margin, metric

    def forward(self, local: dict[str, Tensor], labels: Tensor) -> Tensor:
        return jigsaw_loss(local, labels, self.label_smoothing, self.margin, self.metric)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, margin={self.margin}, metric={self.metric!r}"
