"""Tests for the further-reading losses (lifted structured, HAP2S), the selector temperature, center loss.

Each loss is compared with a Python loop over every pair / anchor of an 8-sample batch (values and autograd
gradients), plus small cases solved on paper.
"""

import math

import pytest
import torch

from reidkit.losses import (
    CenterLoss,
    HAP2SLoss,
    LiftedStructuredLoss,
    adaptive_weighted_triplet_loss,
    center_loss,
    hap2s_loss,
    lifted_structured_loss,
    softmax_weighted_pairs,
    trihard_loss,
)

TOLERANCES = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-10}}
LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
SET_LOSSES = [lifted_structured_loss, hap2s_loss]


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def clustered_embeddings(dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    return (centres[LABELS] + 0.6 * torch.randn(8, 5, generator=generator, dtype=torch.float64)).to(dtype)


def ref_distance(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "euclidean":
        return (a - b).pow(2).sum().sqrt()
    return 1 - (a * b).sum() / (a.norm() * b.norm())


def reference_lifted(embeddings, labels, margin, metric):
    n, d = len(labels), lambda i, j: ref_distance(embeddings[i], embeddings[j], metric)
    terms = []
    for i in range(n):
        for j in range(i + 1, n):
            if labels[i] != labels[j]:
                continue
            total = sum(torch.exp(margin - d(i, k)) for k in range(n) if labels[k] != labels[i])
            total = total + sum(torch.exp(margin - d(j, k)) for k in range(n) if labels[k] != labels[j])
            terms.append(torch.clamp(torch.log(total) + d(i, j), min=0) ** 2)
    return sum(terms) / (2 * len(terms))


def reference_hap2s(embeddings, labels, margin, sigma, metric):
    n, d = len(labels), lambda i, j: ref_distance(embeddings[i], embeddings[j], metric)
    terms = []
    for a in range(n):
        d_pos = [d(a, p) for p in range(n) if p != a and labels[p] == labels[a]]
        d_neg = [d(a, k) for k in range(n) if labels[k] != labels[a]]
        if not d_pos or not d_neg:
            continue
        w_pos, w_neg = [torch.exp(x / sigma) for x in d_pos], [torch.exp(-x / sigma) for x in d_neg]
        to_positives = sum(w * x for w, x in zip(w_pos, d_pos)) / sum(w_pos)
        to_negatives = sum(w * x for w, x in zip(w_neg, d_neg)) / sum(w_neg)
        terms.append(torch.clamp(to_positives - to_negatives + margin, min=0))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("loss_fn", SET_LOSSES)
def test_set_loss_matches_brute_force(loss_fn, metric: str, dtype: torch.dtype) -> None:
    embeddings = clustered_embeddings(dtype).requires_grad_()
    if loss_fn is lifted_structured_loss:
        margin = 1.0 if metric == "euclidean" else 0.3
        loss = loss_fn(embeddings, LABELS, margin=margin, metric=metric)
        expected = reference_lifted(embeddings, LABELS.tolist(), margin, metric)
    else:
        loss = loss_fn(embeddings, LABELS, margin=0.5, sigma=0.4, metric=metric)
        expected = reference_hap2s(embeddings, LABELS.tolist(), 0.5, 0.4, metric)
    (grad,) = torch.autograd.grad(loss, embeddings)
    (expected_grad,) = torch.autograd.grad(expected, embeddings)
    assert loss.dtype == dtype and expected.item() > 0
    torch.testing.assert_close(loss, expected, **TOLERANCES[dtype])
    torch.testing.assert_close(grad, expected_grad, **TOLERANCES[dtype])


def test_lifted_structured_on_a_line() -> None:
    # Points 0, 1 (identity 0) and 3 (identity 1), margin 1: one positive pair (0, 1), |P| = 1.
    # J = log(e^(1−3) + e^(1−2)) + 1 = log(e^-2 + e^-1) + 1; L = max(J, 0)² / 2.
    j_value = math.log(math.exp(-2) + math.exp(-1)) + 1
    loss = lifted_structured_loss(t(0, 1, 3)[:, None], torch.tensor([0, 0, 1]), margin=1.0)
    torch.testing.assert_close(loss, t(j_value**2 / 2)[0])


def test_lifted_structured_is_finite_for_far_negatives_and_large_margins() -> None:
    embeddings = t(0, 1, 500, 501)[:, None].requires_grad_()
    loss = lifted_structured_loss(embeddings, torch.tensor([0, 0, 1, 1]), margin=800.0)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and torch.isfinite(embeddings.grad).all()


def test_hap2s_temperature_interpolates_between_lecture_weights_and_trihard() -> None:
    embeddings = clustered_embeddings()
    lecture = adaptive_weighted_triplet_loss(embeddings, LABELS, margin=0.5)
    torch.testing.assert_close(hap2s_loss(embeddings, LABELS, margin=0.5, sigma=1.0), lecture)
    hard = trihard_loss(embeddings, LABELS, margin=0.5)
    nearly_hard = hap2s_loss(embeddings, LABELS, margin=0.5, sigma=1e-4)
    torch.testing.assert_close(nearly_hard, hard, rtol=0, atol=1e-6)
    assert not torch.allclose(lecture, hard)


def test_selector_temperature_default_is_unchanged_and_validated() -> None:
    dist = torch.cdist(clustered_embeddings(), clustered_embeddings())
    default = softmax_weighted_pairs(dist, LABELS)
    for got, expected in zip(softmax_weighted_pairs(dist, LABELS, temperature=1.0), default):
        assert torch.equal(got, expected)
    # On a line: anchor 0 has negatives at 2 and 3, weighted ∝ e^(−2/T), e^(−3/T).
    points = t(0, 1, 2, 3)[:, None]
    _, d_an = softmax_weighted_pairs((points - points.T).abs(), torch.tensor([0, 0, 1, 1]), temperature=0.5)
    expected = (2 * math.exp(-4) + 3 * math.exp(-6)) / (math.exp(-4) + math.exp(-6))
    torch.testing.assert_close(d_an[0], t(expected)[0])
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            softmax_weighted_pairs(dist, LABELS, temperature=bad)


@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3]], ids=["one-identity", "singletons"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("loss_fn", SET_LOSSES)
def test_no_valid_pair_returns_zero_with_gradient(loss_fn, metric: str, labels: list[int]) -> None:
    embeddings = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss = loss_fn(embeddings, torch.tensor(labels), metric=metric)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(embeddings.grad, torch.zeros(4, 3))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("loss_fn", SET_LOSSES)
def test_permutation_invariance_and_gradcheck(loss_fn, metric: str) -> None:
    embeddings = clustered_embeddings(seed=3)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(loss_fn(embeddings[order], LABELS[order], metric=metric),
                               loss_fn(embeddings, LABELS, metric=metric))
    small = embeddings[:6].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, LABELS[:6], metric=metric), (small,))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("loss_fn", SET_LOSSES)
def test_duplicate_embeddings_give_finite_gradients(loss_fn, metric: str) -> None:
    base = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    embeddings = torch.cat([base, base, base[:1]]).requires_grad_()
    loss = loss_fn(embeddings, torch.tensor([0, 1, 2, 0, 1, 2, 1]), metric=metric)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(embeddings.grad).all()


def test_set_loss_modules_equal_functions_and_validate() -> None:
    embeddings = clustered_embeddings(torch.float32, seed=4)
    module = LiftedStructuredLoss(margin=0.7, metric="cosine")
    assert torch.equal(module(embeddings, LABELS), lifted_structured_loss(embeddings, LABELS, 0.7, "cosine"))
    module = HAP2SLoss(margin=0.2, sigma=0.3, metric="cosine")
    assert torch.equal(module(embeddings, LABELS), hap2s_loss(embeddings, LABELS, 0.2, 0.3, "cosine"))
    assert "sigma=0.3" in repr(module) and "'cosine'" in repr(module)
    assert (HAP2SLoss().margin, HAP2SLoss().sigma, LiftedStructuredLoss().margin) == (0.5, 0.5, 1.0)
    for build, match in [
        (lambda: LiftedStructuredLoss(margin=-1.0), "margin"),
        (lambda: LiftedStructuredLoss(metric="l1"), "euclidean.*cosine"),
        (lambda: HAP2SLoss(sigma=0.0), "sigma must be a finite number > 0"),
        (lambda: HAP2SLoss(margin=float("nan")), "margin"),
    ]:
        with pytest.raises(ValueError, match=match):
            build()


# Center loss.


def test_center_loss_by_hand() -> None:
    # f = (1, 2), (3, 0) with centres c0 = (0, 0), c1 = (3, 1): ½·mean(5, 1) = 1.5.
    embeddings = t(1, 2, 3, 0).reshape(2, 2).requires_grad_()
    loss = CenterLoss(num_classes=2, embedding_dim=2).double()
    with torch.no_grad():
        loss.centers.copy_(t(0, 0, 3, 1).reshape(2, 2))
    value = loss(embeddings, torch.tensor([0, 1]))
    torch.testing.assert_close(value, t(1.5)[0])
    value.backward()
    # ∂L/∂f_i = (f_i − c_yi)/N; ∂L/∂c_j = −Σ_{i: yi=j} (f_i − c_j)/N.
    torch.testing.assert_close(embeddings.grad, t(0.5, 1, 0, -0.5).reshape(2, 2))
    torch.testing.assert_close(loss.centers.grad, t(-0.5, -1, 0, 0.5).reshape(2, 2))


def test_center_loss_shared_centre_and_optimiser_step_moves_it_towards_the_features() -> None:
    embeddings = t(1, 1, 3, 3).reshape(2, 2)
    loss = CenterLoss(1, 2).double()
    with torch.no_grad():
        loss.centers.zero_()
    value = loss(embeddings, torch.tensor([0, 0]))
    torch.testing.assert_close(value, t(0.5 * (2 + 18) / 2)[0])
    optimiser = torch.optim.SGD(loss.parameters(), lr=0.5)
    for _ in range(50):
        optimiser.zero_grad()
        loss(embeddings, torch.tensor([0, 0])).backward()
        optimiser.step()
    torch.testing.assert_close(loss.centers.detach(), t(2, 2)[None], rtol=0, atol=1e-8)  # the class mean


def test_center_loss_functional_shapes_dtypes_and_validation() -> None:
    module = CenterLoss(4, 5)
    assert module.centers.shape == (4, 5) and "num_classes=4" in repr(module)
    embeddings = clustered_embeddings(torch.float16)
    value = module(embeddings, LABELS.clamp(max=3))
    assert value.dtype == torch.float32  # float32 centres promote half-precision features
    torch.testing.assert_close(value, center_loss(embeddings.float(), LABELS, module.centers))
    with pytest.raises(ValueError, match=r"centers \[C, D\]"):
        center_loss(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long), torch.zeros(4, 6))
    with pytest.raises(ValueError, match=r"labels \[N\]"):
        center_loss(torch.zeros(3, 5), torch.zeros(2, dtype=torch.long), torch.zeros(4, 5))
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
            CenterLoss(bad, 5)
