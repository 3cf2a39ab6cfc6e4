"""Representation (identity classification) losses.

Cross-entropy with label smoothing: Szegedy et al., "Rethinking the Inception Architecture for Computer
Vision", CVPR 2016; used for the ID loss of the BoT recipe (Luo et al., "Bag of Tricks and a Strong
Baseline for Deep Person Re-Identification", CVPRW 2019).
"""

import torch.nn.functional as F
from torch import Tensor, nn


def _check_epsilon(epsilon: float) -> None:
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must satisfy 0 <= epsilon < 1, got {epsilon!r}")


def cross_entropy_label_smooth(logits: Tensor, labels: Tensor, epsilon: float = 0.1) -> Tensor:
    """Cross-entropy against smoothed one-hot targets (Szegedy et al. 2016).

    L = mean_i −Σ_c q_ic·log p_ic with p_i = softmax(logits_i) and q_i = (1 − ε)·onehot(labels_i) + ε/C.
    This is exactly `F.cross_entropy(..., label_smoothing=ε)`, which spreads ε/C over all C classes
    (the true class included); the function is a thin documented wrapper with a range check.

    Args:
        logits: Class scores `[N, C]`.
        labels: Class indices `[N]` in `[0, C)`.
        epsilon: Smoothing mass ε; 0 gives plain cross-entropy.

    Returns:
        Scalar mean over the N samples.

    Raises:
        ValueError: If `epsilon` is outside `[0, 1)`.
    """
    _check_epsilon(epsilon)
    return F.cross_entropy(logits, labels, label_smoothing=epsilon)


class CrossEntropyLabelSmooth(nn.Module):
    """Module form of `cross_entropy_label_smooth`; `forward(logits [N, C], labels [N])`."""

    def __init__(self, epsilon: float = 0.1) -> None:
        """Store ε; raise ValueError if it is outside `[0, 1)`."""
        super().__init__()
        _check_epsilon(epsilon)
        self.epsilon = epsilon

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return cross_entropy_label_smooth(logits, labels, self.epsilon)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}"
