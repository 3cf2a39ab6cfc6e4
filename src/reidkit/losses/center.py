"""Center loss: pull each feature towards a learned centre of its identity.

Wen, Zhang, Li & Qiao, "A Discriminative Feature Learning Approach for Deep Face Recognition", ECCV 2016;
used with weight 0.0005 in the BoT recipe (Luo et al., "Bag of Tricks and a Strong Baseline for Deep
Person Re-Identification", CVPRW 2019).
"""

import torch
from torch import Tensor, nn

from reidkit.losses.metric import _check_count


def center_loss(embeddings: Tensor, labels: Tensor, centers: Tensor) -> Tensor:
    """Center loss (Wen et al. 2016) with the batch mean as the reduction.

    L = ½ · (1/N) · Σ_i ‖f_i − c_{y_i}‖²₂: the squared L2 distance summed over the feature dimensions,
    averaged over the N samples, with Wen et al.'s ½. (BoT's implementation has no ½: its weight 0.0005
    corresponds to 0.001 here.) Always defined for N ≥ 1; an empty batch gives NaN, like `Tensor.mean`.

    Args:
        embeddings: Features `[N, D]`.
        labels: Class indices `[N]` in `[0, C)`.
        centers: Class centres `[C, D]`.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If the shapes do not match.
    """
    if embeddings.dim() != 2 or centers.dim() != 2 or embeddings.shape[1] != centers.shape[1] or (
        labels.shape != embeddings.shape[:1]
    ):
        shapes = f"{tuple(embeddings.shape)}, {tuple(labels.shape)}, {tuple(centers.shape)}"
        raise ValueError(f"expected embeddings [N, D], labels [N] and centers [C, D], got {shapes}")
    return 0.5 * (embeddings - centers[labels]).pow(2).sum(dim=1).mean()


class CenterLoss(nn.Module):
    """Module form of `center_loss` owning the centres `[num_classes, embedding_dim]` as an `nn.Parameter`.

    The centres are trained by the optimiser through this loss's gradient (∂L/∂c_j = −(1/N)·Σ_{i: y_i=j}
    (f_i − c_j)), rather than by Wen et al.'s separate update rule with rate α; BoT gives them their own
    SGD optimiser (lr 0.5). Initialised from N(0, 1). `forward(embeddings [N, D], labels [N])`.
    """

    def __init__(self, num_classes: int, embedding_dim: int) -> None:
        """Create the centres; raise ValueError unless both sizes are ints >= 1."""
        super().__init__()
        _check_count("num_classes", num_classes, 1)
        _check_count("embedding_dim", embedding_dim, 1)
        self.centers = nn.Parameter(torch.randn(num_classes, embedding_dim))

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return center_loss(embeddings, labels, self.centers)

    def extra_repr(self) -> str:
        num_classes, embedding_dim = self.centers.shape
        return f"num_classes={num_classes}, embedding_dim={embedding_dim}"
