"""Adaptive hard sample mining for the ID loss, after Chen, Chen, Han, Sang & Gao, "Improving Person
Re-Identification by Adaptive Hard Sample Mining", ICIP 2018.

The paper measures each sample's *hard level* by comparing the classifier's prediction with the true
label, and trains on the samples whose hard level passes an *adaptive threshold* that follows the training
(how many samples the model still needs changes over time), against both under- and over-fitting. The
mined samples feed the classification (ID) loss: no pairs or triplets are picked by hand.

reidkit's reading (the paper's exact formulas could not be confirmed from its text here):

    hard level    h_i = 1 − softmax(logits_i)[y_i]                     (detached; 0 easy, → 1 hard)
    threshold     τ_t = μ·τ_{t−1} + (1 − μ)·mean_i h_i,  τ_0 = 0       (running mean of the hard level)
    loss          L = Σ_i [h_i ≥ τ_t]·CE_ε(logits_i, y_i) / max(Σ_i [h_i ≥ τ_t], 1)

Early on τ is near 0 and nearly every sample counts (the under-fitting model needs them all); as the
classifier improves the mean hard level falls, τ follows it, and the loss keeps the samples harder than
the model's recent typical one (fewer as it fits, so the easy ones stop pulling it towards over-fitting).
The threshold is a buffer: saved in checkpoints, updated in training mode only, per process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit.losses.metric import _check_real
from reidkit.losses.representation import _check_epsilon


def hard_levels(logits: Tensor, labels: Tensor) -> Tensor:
    """h_i = 1 − softmax(logits_i)[labels_i], float32 `[N]`, detached.

    Args:
        logits: Class scores `[N, C]`.
        labels: Class indices `[N]`.

    Raises:
        ValueError: If the shapes do not match.
    """
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    probabilities = logits.detach().float().softmax(dim=1)
    return 1.0 - probabilities.gather(1, labels[:, None]).squeeze(1)


def hard_sample_cross_entropy(logits: Tensor, labels: Tensor, threshold: Tensor | float,
                              epsilon: float = 0.1) -> Tensor:
    """Label-smoothed cross-entropy averaged over the samples with h_i ≥ `threshold` (0 with a gradient if
    none). `logits [N, C]`, `labels [N]`; returns a scalar."""
    _check_epsilon(epsilon)
    selected = (hard_levels(logits, labels) >= threshold).to(logits.dtype)
    per_sample = F.cross_entropy(logits, labels, label_smoothing=epsilon, reduction="none")
    return (per_sample * selected).sum() / selected.sum().clamp_min(1.0)


class HardSampleCrossEntropy(nn.Module):
    """ID loss with adaptive hard sample mining; `forward(logits [N, C], labels [N])`.

    Each training call first moves the threshold, τ ← μ·τ + (1 − μ)·mean_i h_i, then averages the
    label-smoothed cross-entropy over the samples with h_i ≥ τ (see the module docstring).
    """

    def __init__(self, epsilon: float = 0.1, momentum: float = 0.9) -> None:
        super().__init__()
        _check_epsilon(epsilon)
        _check_real("momentum", momentum, "in [0, 1)", lambda v: 0 <= v < 1)
        self.epsilon, self.momentum = epsilon, momentum
        self.register_buffer("threshold", torch.zeros(()))

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.training:
            mean_level = hard_levels(logits, labels).mean()
            self.threshold.mul_(self.momentum).add_((1.0 - self.momentum) * mean_level)
        return hard_sample_cross_entropy(logits, labels, self.threshold, self.epsilon)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, momentum={self.momentum}"
