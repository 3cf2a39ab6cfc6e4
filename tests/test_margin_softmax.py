"""Tests for reidkit.losses.margin_softmax: cosine-logit ID losses and circle losses.

Hand cases use 2-class, 2-D examples with the class weights set manually; circle losses are compared with
direct formula computations (a loop over classes, and over every pair of the batch).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from reidkit.losses import (
    ArcFaceLoss,
    CircleClassLoss,
    CirclePairLoss,
    CosFaceLoss,
    CosineMarginLoss,
    NormSoftmaxLoss,
    circle_pair_loss,
)

TOLERANCES = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-10}}
LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
CLASS_LOSSES = [
    lambda: NormSoftmaxLoss(4, 5),
    lambda: CosFaceLoss(4, 5),
    lambda: ArcFaceLoss(4, 5),
    lambda: CircleClassLoss(4, 5),
]
CLASS_IDS = ["normsoftmax", "cosface", "arcface", "circle"]


def embeddings_for(dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    return (centres[LABELS] + 0.7 * torch.randn(8, 5, generator=generator, dtype=torch.float64)).to(dtype)


def two_class(loss: CosineMarginLoss) -> CosineMarginLoss:
    """Class weights e_x (any length) and e_y: the cosines of f = (3, 4) are 0.6 and 0.8."""
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.5]]))
    return loss.double()


F_34 = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
LABEL_0 = torch.tensor([0])


def test_norm_softmax_is_cross_entropy_on_cosine_over_temperature() -> None:
    loss = two_class(NormSoftmaxLoss(2, 2, temperature=0.1))
    torch.testing.assert_close(loss.logits(F_34, LABEL_0), torch.tensor([[6.0, 8.0]], dtype=torch.float64))
    expected = -math.log(math.exp(6) / (math.exp(6) + math.exp(8)))
    torch.testing.assert_close(loss(F_34, LABEL_0), torch.tensor(expected, dtype=torch.float64))


def test_cosface_target_logit_by_hand() -> None:
    loss = two_class(CosFaceLoss(2, 2, scale=10.0, margin=0.35))
    logits = loss.logits(F_34, LABEL_0)
    torch.testing.assert_close(logits, torch.tensor([[10 * (0.6 - 0.35), 8.0]], dtype=torch.float64))
    expected = math.log(math.exp(2.5) + math.exp(8.0)) - 2.5
    torch.testing.assert_close(loss(F_34, LABEL_0), torch.tensor(expected, dtype=torch.float64))
    # Label 1: only the second logit moves.
    torch.testing.assert_close(loss.logits(F_34, torch.tensor([1])), t2(6.0, 10 * (0.8 - 0.35)))


def t2(a: float, b: float) -> torch.Tensor:
    return torch.tensor([[a, b]], dtype=torch.float64)


def test_arcface_target_logit_by_hand() -> None:
    loss = two_class(ArcFaceLoss(2, 2, scale=10.0, margin_rad=0.5))
    theta = math.acos(0.6)
    torch.testing.assert_close(loss.logits(F_34, LABEL_0), t2(10 * math.cos(theta + 0.5), 8.0))
    # θ = π − 0.01 > π − m: cos(θ + m) would rise again; the continuation is cos θ − (1 − cos m).
    theta = math.pi - 0.01
    features = torch.tensor([[math.cos(theta), math.sin(theta)]], dtype=torch.float64)
    expected = 10 * (math.cos(theta) - (1 - math.cos(0.5)))
    target = loss.logits(features, LABEL_0)[0, 0]
    torch.testing.assert_close(target, torch.tensor(expected, dtype=torch.float64))


def test_arcface_target_logit_is_continuous_and_decreasing_in_the_angle() -> None:
    loss = two_class(ArcFaceLoss(2, 2, scale=1.0, margin_rad=0.5))
    angles = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    features = torch.stack([angles.cos(), angles.sin()], dim=1)
    target = loss.logits(features, torch.zeros(2001, dtype=torch.long))[:, 0]
    steps = target.diff()
    assert (steps < 0).all() and steps.abs().max() < 5e-3  # strictly decreasing, no jump at π − m
    assert (target <= angles.cos() + 1e-12).all()  # never above the plain cosine


@pytest.mark.parametrize("loss_cls", [CosFaceLoss, ArcFaceLoss])
def test_zero_margin_equals_norm_softmax(loss_cls) -> None:
    embeddings = embeddings_for()
    reference = NormSoftmaxLoss(4, 5, temperature=0.05).double()
    margin_name = "margin_rad" if loss_cls is ArcFaceLoss else "margin"
    loss = loss_cls(4, 5, scale=20.0, **{margin_name: 0.0}).double()
    loss.load_state_dict(reference.state_dict())
    torch.testing.assert_close(loss(embeddings, LABELS), reference(embeddings, LABELS))
    with_margin = loss_cls(4, 5, scale=20.0, **{margin_name: 0.3}).double()
    with_margin.load_state_dict(reference.state_dict())
    assert with_margin(embeddings, LABELS) > reference(embeddings, LABELS)


def reference_circle_class(cosine: torch.Tensor, labels: list[int], gamma: float, m: float) -> torch.Tensor:
    """Sun et al.'s formula with one positive per sample, looping over samples and classes."""
    terms = []
    for i, y in enumerate(labels):
        s_p = cosine[i, y]
        alpha_p = torch.clamp(1 + m - s_p, min=0).detach()
        negatives = [cosine[i, c] for c in range(cosine.shape[1]) if c != y]
        total = sum(torch.exp(gamma * torch.clamp(s + m, min=0).detach() * (s - m)) for s in negatives)
        terms.append(torch.log(1 + total * torch.exp(-gamma * alpha_p * (s_p - (1 - m)))))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_circle_class_loss_matches_formula(dtype: torch.dtype) -> None:
    loss = CircleClassLoss(4, 5, scale=16.0, margin=0.25).to(dtype)
    embeddings = embeddings_for(dtype).requires_grad_()
    value = loss(embeddings, LABELS)
    grads = torch.autograd.grad(value, [embeddings, loss.weight])
    cosine = F.normalize(embeddings, dim=1) @ F.normalize(loss.weight, dim=1).T
    expected = reference_circle_class(cosine, LABELS.tolist(), 16.0, 0.25)
    expected_grads = torch.autograd.grad(expected, [embeddings, loss.weight])
    torch.testing.assert_close(value, expected, **TOLERANCES[dtype])
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, **TOLERANCES[dtype])


def reference_circle_pairs(embeddings: torch.Tensor, labels: list[int], gamma: float, m: float):
    """log(1 + Σ_n exp(γ α_n (s_n − m)) · Σ_p exp(−γ α_p (s_p − 1 + m))) over every pair i < j, in float64."""
    e = embeddings.double()
    positive_sum, negative_sum = 0, 0
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            s = (e[i] * e[j]).sum() / (e[i].norm() * e[j].norm())
            if labels[i] == labels[j]:
                alpha_p = torch.clamp(1 + m - s, min=0).detach()
                positive_sum = positive_sum + torch.exp(-gamma * alpha_p * (s - 1 + m))
            else:
                alpha_n = torch.clamp(s + m, min=0).detach()
                negative_sum = negative_sum + torch.exp(gamma * alpha_n * (s - m))
    return torch.log(1 + negative_sum * positive_sum)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [4.0, 64.0])
def test_circle_pair_loss_matches_brute_force(dtype: torch.dtype, gamma: float) -> None:
    embeddings = embeddings_for(dtype, seed=1).requires_grad_()
    value = circle_pair_loss(embeddings, LABELS, margin=0.25, gamma=gamma)
    (grad,) = torch.autograd.grad(value, embeddings)
    expected = reference_circle_pairs(embeddings, LABELS.tolist(), gamma, 0.25)
    (expected_grad,) = torch.autograd.grad(expected, embeddings)
    assert value.dtype == dtype and expected.item() > 0.1
    torch.testing.assert_close(value, expected.to(dtype), **TOLERANCES[dtype])
    torch.testing.assert_close(grad, expected_grad.to(dtype), rtol=1e-4 if dtype == torch.float32 else 1e-9,
                               atol=1e-5 if dtype == torch.float32 else 1e-10)
    assert torch.equal(CirclePairLoss(margin=0.25, gamma=gamma)(embeddings, LABELS), value)


def test_circle_pair_loss_stays_finite_at_the_default_scale() -> None:
    # γ = 128 overflows a plain exp-sum in float32; the logsumexp form does not.
    embeddings = torch.randn(8, 5, generator=torch.Generator().manual_seed(2)).requires_grad_()
    value = circle_pair_loss(embeddings, LABELS)
    value.backward()
    assert torch.isfinite(value) and value > 10 and torch.isfinite(embeddings.grad).all()


@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3]], ids=["one-identity", "singletons"])
def test_circle_pair_loss_degenerate_batches(labels: list[int]) -> None:
    embeddings = torch.randn(4, 3, generator=torch.Generator().manual_seed(3), requires_grad=True)
    value = circle_pair_loss(embeddings, torch.tensor(labels))
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert torch.equal(embeddings.grad, torch.zeros(4, 3))


def test_circle_pair_loss_permutation_invariance() -> None:
    embeddings = embeddings_for(seed=4)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(4))
    shuffled = circle_pair_loss(embeddings[order], LABELS[order])
    torch.testing.assert_close(shuffled, circle_pair_loss(embeddings, LABELS))


# Shared contracts of the class-level losses.


@pytest.mark.parametrize("make", CLASS_LOSSES, ids=CLASS_IDS)
def test_scale_invariance_gradients_and_parameters(make) -> None:
    torch.manual_seed(0)
    loss = make().double()
    embeddings = embeddings_for().requires_grad_()
    scales = torch.rand(8, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 5 + 0.2
    torch.testing.assert_close(loss(embeddings * scales, LABELS), loss(embeddings, LABELS))
    value = loss(embeddings, LABELS)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(embeddings.grad).all()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())
    assert [name for name, _ in loss.named_parameters()] == ["weight"] and loss.weight.shape == (4, 5)


@pytest.mark.parametrize("make", CLASS_LOSSES[:3], ids=CLASS_IDS[:3])  # circle: detached weights by design
def test_gradcheck(make) -> None:
    torch.manual_seed(1)
    loss = make().double()
    embeddings = embeddings_for()[:6].requires_grad_()
    labels = LABELS[:6]
    assert torch.autograd.gradcheck(lambda e, w: loss_with_weight(loss, e, w, labels),
                                    (embeddings, loss.weight.detach().clone().requires_grad_()))


def loss_with_weight(loss: CosineMarginLoss, embeddings, weight, labels):
    return torch.func.functional_call(loss, {"weight": weight}, (embeddings, labels))


def test_arcface_gradient_is_finite_at_zero_and_pi() -> None:
    loss = two_class(ArcFaceLoss(2, 2))
    features = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    value = loss(features, torch.tensor([0, 0, 1]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(features.grad).all()
    assert torch.isfinite(loss.weight.grad).all()


@pytest.mark.parametrize("make", CLASS_LOSSES, ids=CLASS_IDS)
def test_half_precision_embeddings_are_computed_in_float32(make) -> None:
    loss = make()
    embeddings = embeddings_for(torch.float16).requires_grad_()
    value = loss(embeddings, LABELS)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(embeddings.grad.float()).all()
    torch.testing.assert_close(value, loss(embeddings.detach().float(), LABELS))


def test_defaults_and_repr() -> None:
    assert NormSoftmaxLoss(3, 2).scale == pytest.approx(20.0) and NormSoftmaxLoss(3, 2).temperature == 0.05
    assert (CosFaceLoss(3, 2).scale, CosFaceLoss(3, 2).margin) == (30.0, 0.35)
    assert (ArcFaceLoss(3, 2).scale, ArcFaceLoss(3, 2).margin_rad) == (30.0, 0.5)
    assert (CircleClassLoss(3, 2).scale, CircleClassLoss(3, 2).margin) == (64.0, 0.25)
    assert (CirclePairLoss().gamma, CirclePairLoss().margin) == (128.0, 0.25)
    assert "margin_rad=0.5" in repr(ArcFaceLoss(3, 2)) and "num_classes=3" in repr(CosFaceLoss(3, 2))


@pytest.mark.parametrize(("build", "match"), [
    (lambda: NormSoftmaxLoss(1, 4), "num_classes"),
    (lambda: NormSoftmaxLoss(4, 0), "embedding_dim"),
    (lambda: NormSoftmaxLoss(4, 4, temperature=0.0), "temperature"),
    (lambda: CosFaceLoss(4, 4, scale=-1.0), "scale"),
    (lambda: CosFaceLoss(4, 4, margin=-0.1), "margin"),
    (lambda: ArcFaceLoss(4, 4, margin_rad=2.0), "margin_rad.*radians"),
    (lambda: ArcFaceLoss(4, 4, margin_rad=float("nan")), "margin_rad"),
    (lambda: CircleClassLoss(4, 4, margin=1.0), r"margin must be a number in \[0, 1\)"),
    (lambda: CirclePairLoss(gamma=0.0), "gamma"),
    (lambda: CirclePairLoss(margin=True), "margin"),
])
def test_bad_hyperparameters_raise(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()
