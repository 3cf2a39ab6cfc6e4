"""Knowledge distillation: a student trained to reproduce what a frozen teacher computes.

- Logit distillation: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015.
- Similarity-preserving distillation: Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019.
- Relational distillation, distance and angle: Park, Kim, Lu & Cho, "Relational Knowledge Distillation",
  CVPR 2019.

Every loss takes the student's tensor first and the teacher's second; the teacher's tensor is detached (it
is a target). The feature-level losses compare relations inside the batch, so the student's and the teacher's
feature dimensions may differ. Computation is in at least float32 (half-precision inputs are promoted).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit.losses.distances import pairwise_distance


def _promoted(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Both tensors in their promoted dtype (at least float32), the teacher's detached."""
    dtype = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    return student.to(dtype), teacher.detach().to(dtype)


def _full_precision(tensor: Tensor) -> torch.autocast:
    """A block where autocast is off, so products of promoted tensors stay in their dtype."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def _check_batches(student: Tensor, teacher: Tensor) -> None:
    if student.dim() != 2 or teacher.dim() != 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(f"expected student [N, D_s] and teacher [N, D_t] features of the same N samples, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")


def logit_distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """KL divergence between the teacher's and the student's class distributions at temperature T.

    L = T² · mean_i Σ_c p_ic · (log p_ic − log q_ic), with p_i = softmax(teacher_logits_i / T) and
    q_i = softmax(student_logits_i / T) (Hinton et al. 2015). The T² factor keeps the gradient's scale
    independent of T. Reduction: mean over the N samples. L = 0 when the logits agree up to a constant per
    sample.

    Args:
        student_logits: `[N, C]`.
        teacher_logits: `[N, C]`, the same C classes in the same order (a target: detached).
        temperature: T > 0.

    Returns:
        Scalar.

    Raises:
        ValueError: shapes differ, or T <= 0.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f"expected student and teacher logits of the same shape [N, C], got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    _check_temperature(temperature)
    student, teacher = _promoted(student_logits, teacher_logits)
    with _full_precision(student):
        log_q = F.log_softmax(student / temperature, dim=1)
        log_p = F.log_softmax(teacher / temperature, dim=1)
        return temperature ** 2 * F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


def similarity_preserving_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """Difference of the batch's row-normalised similarity matrices (Tung & Mori 2019).

    G = F·Fᵀ ([N, N]) for the student's and the teacher's features, each row divided by its L2 norm
    (Ĝ_i = G_i / ‖G_i‖₂); L = (1/N²) · ‖Ĝ_teacher − Ĝ_student‖_F². Reduction: sum over the N² entries over N².
    A zero feature gives a zero row (no division by zero).

    Args:
        student_features: `[N, D_s]`.
        teacher_features: `[N, D_t]` (a target: detached).

    Returns:
        Scalar.
    """
    _check_batches(student_features, teacher_features)
    student, teacher = _promoted(student_features, teacher_features)
    with _full_precision(student):
        student_similarity = F.normalize(student @ student.T, dim=1)
        teacher_similarity = F.normalize(teacher @ teacher.T, dim=1)
        return (teacher_similarity - student_similarity).pow(2).sum() / student.shape[0] ** 2


def _normalised_distances(features: Tensor) -> Tensor:
    """ψ_D: Euclidean distances [N, N] divided by their mean over the pairs i ≠ j (1 where all are 0)."""
    distances = pairwise_distance(features, features)
    off_diagonal = ~torch.eye(len(features), dtype=torch.bool, device=features.device)
    mean = distances[off_diagonal].mean()
    return distances / torch.where(mean > 0, mean, torch.ones_like(mean))


def rkd_distance_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """Relational distillation of the batch's distances (RKD-D, Park et al. 2019).

    ψ(x_i, x_j) = ‖x_i − x_j‖₂ / μ, μ the mean distance over the pairs i ≠ j of the batch;
    L = mean over ordered pairs i ≠ j of huber(ψ(s_i, s_j) − ψ(t_i, t_j)), huber(x) = x²/2 if |x| < 1 else
    |x| − 1/2. Reduction: mean over the N(N − 1) pairs. Fewer than 2 samples: 0 with a gradient. A batch whose
    features all coincide has μ = 0 and ψ = 0.

    Args:
        student_features: `[N, D_s]`.
        teacher_features: `[N, D_t]` (a target: detached).

    Returns:
        Scalar.
    """
    _check_batches(student_features, teacher_features)
    student, teacher = _promoted(student_features, teacher_features)
    if len(student) < 2:
        return student.sum() * 0
    off_diagonal = ~torch.eye(len(student), dtype=torch.bool, device=student.device)
    with _full_precision(student):
        return F.smooth_l1_loss(_normalised_distances(student)[off_diagonal],
                                _normalised_distances(teacher)[off_diagonal])


def _angles(features: Tensor) -> Tensor:
    """cos∠(x_j − x_i, x_k − x_i) for every (i, j, k): [N, N, N]; 0 where a difference is the zero vector."""
    directions = F.normalize(features[None, :, :] - features[:, None, :], dim=2)  # [i, j] = unit(x_j − x_i)
    return directions @ directions.transpose(1, 2)


def rkd_angle_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """Relational distillation of the angles the batch's triplets form (RKD-A, Park et al. 2019).

    ψ(x_i, x_j, x_k) = cos∠(x_j − x_i, x_k − x_i), the angle at x_i; L = mean over ordered triplets of
    distinct indices of huber(ψ(s_i, s_j, s_k) − ψ(t_i, t_j, t_k)), huber as in `rkd_distance_loss`. Reduction:
    mean over the N(N − 1)(N − 2) triplets. Fewer than 3 samples: 0 with a gradient. A coincident pair gives
    the zero direction (cosine 0) with a finite gradient. Memory: an [N, N, D] tensor per side.

    Args:
        student_features: `[N, D_s]`.
        teacher_features: `[N, D_t]` (a target: detached).

    Returns:
        Scalar.
    """
    _check_batches(student_features, teacher_features)
    student, teacher = _promoted(student_features, teacher_features)
    n = len(student)
    if n < 3:
        return student.sum() * 0
    index = torch.arange(n, device=student.device)
    distinct = ((index[:, None, None] != index[None, :, None]) & (index[:, None, None] != index[None, None, :])
                & (index[None, :, None] != index[None, None, :]))
    with _full_precision(student):
        return F.smooth_l1_loss(_angles(student)[distinct], _angles(teacher)[distinct])


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


class LogitDistillationLoss(nn.Module):
    """Module form of `logit_distillation_loss`; `forward(student_logits [N, C], teacher_logits [N, C])`."""

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return logit_distillation_loss(student_logits, teacher_logits, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class SimilarityPreservingLoss(nn.Module):
    """Module form of `similarity_preserving_loss`; `forward(student [N, D_s], teacher [N, D_t])`."""

    def forward(self, student_features: Tensor, teacher_features: Tensor) -> Tensor:
        return similarity_preserving_loss(student_features, teacher_features)


class RKDDistanceLoss(nn.Module):
    """Module form of `rkd_distance_loss`; `forward(student [N, D_s], teacher [N, D_t])`."""

    def forward(self, student_features: Tensor, teacher_features: Tensor) -> Tensor:
        return rkd_distance_loss(student_features, teacher_features)


class RKDAngleLoss(nn.Module):
    """Module form of `rkd_angle_loss`; `forward(student [N, D_s], teacher [N, D_t])`."""

    def forward(self, student_features: Tensor, teacher_features: Tensor) -> Tensor:
        return rkd_angle_loss(student_features, teacher_features)
