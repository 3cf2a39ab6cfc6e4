"""Identity losses that learn the metric: cosine logits with margins, and circle loss.

The lecture's open question 1 ("can the ID loss learn the similarity directly?"): normalise both the
features and the class weights, so each logit is a cosine similarity, then make the target class win by
a margin. One base class computes the cosine logits; subclasses override one hook, `margin_logits`,
which edits the target logit (and, for circle loss, reweights the others) before the scale s.

References:
    Zhai, Guo, Lu & Li, "In Defense of the Classification Loss for Person Re-Identification", 2018
        (normalised softmax).
    Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018.
    Deng, Guo, Xue & Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
        CVPR 2019.
    Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity Optimization", CVPR 2020.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit.distances import pairwise_distance
from reidkit.losses.metric import _anchor_masks, _check_count, _check_real


def _check_positive(name: str, value: float) -> None:
    _check_real(name, value, "a finite number > 0", lambda v: 0 < v < math.inf)


def _replace_target(cosine: Tensor, labels: Tensor, target: Tensor) -> Tensor:
    """`cosine` `[N, C]` with entry (i, labels[i]) replaced by `target[i]` (out of place)."""
    return cosine.scatter(1, labels[:, None], target[:, None])


class CosineMarginLoss(nn.Module):
    """Cross-entropy on scaled cosine logits: L = mean_i CE(s · margin_logits(cos(f_i, W)), y_i).

    The class weights W `[C, D]` are an `nn.Parameter` owned by the loss. cos_ic = f_i·W_c / (‖f_i‖·‖W_c‖),
    computed in at least float32 with autocast disabled. The base hook leaves the cosines unchanged.
    Reduction: mean over the N samples; defined for any N ≥ 1 (every sample has its class; N = 0 gives
    NaN like `F.cross_entropy`).
    """

    def __init__(self, num_classes: int, embedding_dim: int, scale: float) -> None:
        """Create W `[num_classes, embedding_dim]` ~ N(0, 0.01²); raise ValueError for bad sizes or scale."""
        super().__init__()
        _check_count("num_classes", num_classes, 2)
        _check_count("embedding_dim", embedding_dim, 1)
        _check_positive("scale", scale)
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embeddings: Tensor) -> Tensor:
        """Cosine between each embedding `[N, D]` and each class weight: `[N, C]` in [−1, 1]."""
        dtype = torch.promote_types(torch.promote_types(embeddings.dtype, self.weight.dtype), torch.float32)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            features = F.normalize(embeddings.to(dtype), dim=1)
            weight = F.normalize(self.weight.to(dtype), dim=1)
            return (features @ weight.T).clamp(-1.0, 1.0)

    def margin_logits(self, cosine: Tensor, labels: Tensor) -> Tensor:
        """The one hook: edit the cosines `[N, C]` given labels `[N]`, before the scale. Identity here."""
        return cosine

    def logits(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Scaled, margin-edited logits `[N, C]` for embeddings `[N, D]` and labels `[N]`."""
        return self.scale * self.margin_logits(self.cosine(embeddings), labels)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)

    def extra_repr(self) -> str:
        num_classes, embedding_dim = self.weight.shape
        return f"num_classes={num_classes}, embedding_dim={embedding_dim}, scale={self.scale}"


class NormSoftmaxLoss(CosineMarginLoss):
    """Normalised softmax (Zhai et al. 2018): L = mean_i CE(cos(f_i, W) / temperature, y_i).

    No margin; the reduction is the mean over the batch (as for every loss of this module).
    """

    def __init__(self, num_classes: int, embedding_dim: int, temperature: float = 0.05) -> None:
        """Raise ValueError for bad sizes or a temperature not > 0."""
        _check_positive("temperature", temperature)
        super().__init__(num_classes, embedding_dim, scale=1.0 / temperature)
        self.temperature = temperature


class CosFaceLoss(CosineMarginLoss):
    """CosFace / large-margin cosine loss (Wang et al. 2018): target logit s·(cos θ_y − m), others s·cos θ.

    L = mean_i CE(logits_i, y_i); `margin` m ≥ 0 is in cosine units.
    """

    def __init__(
        self, num_classes: int, embedding_dim: int, scale: float = 30.0, margin: float = 0.35
    ) -> None:
        """Raise ValueError for bad sizes, scale, or a margin outside [0, 2]."""
        _check_real("margin", margin, "a number in [0, 2]", lambda v: 0 <= v <= 2)
        super().__init__(num_classes, embedding_dim, scale)
        self.margin = margin

    def margin_logits(self, cosine: Tensor, labels: Tensor) -> Tensor:
        target = cosine.gather(1, labels[:, None]).squeeze(1)
        return _replace_target(cosine, labels, target - self.margin)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}"


class ArcFaceLoss(CosineMarginLoss):
    """ArcFace / additive angular margin (Deng et al. 2019): target logit s·cos(θ_y + m), others s·cos θ.

    L = mean_i CE(logits_i, y_i); `margin_rad` m is in radians. Numerical care: cos(θ + m) is computed as
    cos θ·cos m − sin θ·sin m with sin θ = sqrt(max(1 − cos²θ, eps)) (no acos, finite gradient at
    θ = 0 or π; eps = machine epsilon of the dtype). For θ > π − m, cos(θ + m) would increase again with θ
    (a larger angle earning a larger logit), so the target logit continues as cos θ − (1 − cos m): equal
    to −1 at θ = π − m (continuous) and decreasing in θ, still below cos θ (a margin remains).
    """

    def __init__(
        self, num_classes: int, embedding_dim: int, scale: float = 30.0, margin_rad: float = 0.5
    ) -> None:
        """Raise ValueError for bad sizes, scale, or a margin outside [0, π/2] radians."""
        allowed = "a number of radians in [0, pi/2]"
        _check_real("margin_rad", margin_rad, allowed, lambda v: 0 <= v <= math.pi / 2)
        super().__init__(num_classes, embedding_dim, scale)
        self.margin_rad = margin_rad

    def margin_logits(self, cosine: Tensor, labels: Tensor) -> Tensor:
        target = cosine.gather(1, labels[:, None]).squeeze(1)
        cos_m, sin_m = math.cos(self.margin_rad), math.sin(self.margin_rad)
        sine = (1.0 - target.pow(2)).clamp_min(torch.finfo(target.dtype).eps).sqrt()
        shifted = target * cos_m - sine * sin_m  # cos(θ + m)
        edited = torch.where(target >= -cos_m, shifted, target - (1.0 - cos_m))  # θ ≤ π − m ⇔ cos θ ≥ −cos m
        return _replace_target(cosine, labels, edited)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin_rad={self.margin_rad}"


def _circle_logits(similarity: Tensor, positive: Tensor, margin: float) -> Tensor:
    """Circle-loss logits before γ (Sun et al. 2020): α_p·(s − Δ_p) where `positive`, α_n·(s − Δ_n) elsewhere.

    α_p = [1 + m − s]_+ and α_n = [s + m]_+ are detached; Δ_p = 1 − m, Δ_n = m.
    """
    alpha_p = (1.0 + margin - similarity).clamp_min(0.0).detach()
    alpha_n = (similarity + margin).clamp_min(0.0).detach()
    return torch.where(positive, alpha_p * (similarity - (1.0 - margin)), alpha_n * (similarity - margin))


class CircleClassLoss(CosineMarginLoss):
    """Class-level circle loss (Sun et al. 2020), class weights as proxies.

    With s_p = cos θ_y and s_n = cos θ_c (c ≠ y): L = mean_i log(1 + Σ_{c≠y} exp(γ·α_n·(s_n − Δ_n))·
    exp(−γ·α_p·(s_p − Δ_p))), α_p = [1 + m − s_p]_+, α_n = [s_n + m]_+ (both detached), Δ_p = 1 − m,
    Δ_n = m; i.e. cross-entropy on logits γ·α_p·(s_p − Δ_p) (target) and γ·α_n·(s_n − Δ_n) (others).
    `scale` is γ, `margin` is m (the relaxation factor).
    """

    def __init__(
        self, num_classes: int, embedding_dim: int, scale: float = 64.0, margin: float = 0.25
    ) -> None:
        """Raise ValueError for bad sizes, scale, or a margin outside [0, 1)."""
        _check_real("margin", margin, "a number in [0, 1)", lambda v: 0 <= v < 1)
        super().__init__(num_classes, embedding_dim, scale)
        self.margin = margin

    def margin_logits(self, cosine: Tensor, labels: Tensor) -> Tensor:
        return _circle_logits(cosine, F.one_hot(labels, cosine.shape[1]).bool(), self.margin)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}"


def circle_pair_loss(
    embeddings: Tensor, labels: Tensor, margin: float = 0.25, gamma: float = 128.0
) -> Tensor:
    """Pair-level circle loss over the whole batch (Sun et al. 2020).

    With s = cosine similarity over the unordered pairs i < j of the batch, P the positive (same identity)
    and N the negative pairs: L = log(1 + Σ_{n∈N} exp(γ·α_n·(s_n − Δ_n)) · Σ_{p∈P} exp(−γ·α_p·(s_p − Δ_p)))
    = softplus(logsumexp_N(·) + logsumexp_P(·)), α_p = [1 + m − s_p]_+, α_n = [s_n + m]_+ (detached),
    Δ_p = 1 − m, Δ_n = m. One term for the batch (not a mean over anchors). With no positive or no negative
    pair returns 0 with a (zero) gradient connected to `embeddings`.

    Args:
        embeddings: Embeddings `[N, D]` (their scale does not matter).
        labels: Identity labels `[N]`.
        margin: Relaxation factor m.
        gamma: Scale γ.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If the shapes do not match.
    """
    similarity = 1.0 - pairwise_distance(embeddings, embeddings, "cosine")
    positive, negative, _ = _anchor_masks(similarity, labels)
    upper = torch.ones_like(positive).triu(diagonal=1)
    positive, negative = positive & upper, negative & upper
    logits = gamma * _circle_logits(similarity, positive, margin)
    # masked sums instead of selecting pairs (no wait for the device); an empty side's logsumexp is about
    # the dtype's minimum, so the softplus is 0 with a zero gradient, as the loss of no pair should be
    lowest = torch.finfo(logits.dtype).min
    negatives = logits.masked_fill(~negative, lowest).flatten().logsumexp(dim=0)
    positives = (-logits).masked_fill(~positive, lowest).flatten().logsumexp(dim=0)
    return F.softplus(negatives + positives)


class CirclePairLoss(nn.Module):
    """Module form of `circle_pair_loss`; `forward(embeddings [N, D], labels [N])`."""

    def __init__(self, margin: float = 0.25, gamma: float = 128.0) -> None:
        """Raise ValueError for a margin outside [0, 1) or a gamma not > 0."""
        super().__init__()
        _check_real("margin", margin, "a number in [0, 1)", lambda v: 0 <= v < 1)
        _check_positive("gamma", gamma)
        self.margin = margin
        self.gamma = gamma

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return circle_pair_loss(embeddings, labels, self.margin, self.gamma)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, gamma={self.gamma}"
