"""Tests for the metric losses and the label-smoothed ID loss of reidkit.losses.

Batch losses are checked against a Python loop over every anchor, positive and negative (values and
gradients), and against small cases solved on paper with 1-D embeddings `arange(n)`.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from reidkit.losses import (
    AdaptiveWeightedTripletLoss,
    CrossEntropyLabelSmooth,
    TriHardLoss,
    adaptive_weighted_triplet_loss,
    contrastive_loss,
    cross_entropy_label_smooth,
    hardest_pairs,
    improved_triplet_loss,
    quadruplet_loss,
    softmax_weighted_pairs,
    trihard_loss,
    triplet_loss,
)

pytestmark = pytest.mark.numerics  # losses and gradients vs hand-worked and float64 references

TOLERANCES = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-10}}
BATCH_LOSSES = [trihard_loss, adaptive_weighted_triplet_loss]
LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])  # identity 3 is a singleton: its anchor is left out


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def clustered_embeddings(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """`[8, 5]` points around one centre per identity of LABELS: the margin-0.3 hinge is active for some
    anchors and inactive for others, in both metrics and both selectors."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    return (centres[LABELS] + 0.6 * torch.randn(8, 5, generator=generator, dtype=torch.float64)).to(dtype)


# Element-wise formulas.


def test_triplet_and_improved_worked_numbers() -> None:
    d_ap, d_an = t(0.5, 1.5), t(0.7, 1.7)
    for i, (improved, triplet) in enumerate([(0.6, 0.1), (1.6, 0.1)]):
        one_ap, one_an = d_ap[i : i + 1], d_an[i : i + 1]
        torch.testing.assert_close(triplet_loss(one_ap, one_an, 0.3), t(triplet)[0])
        torch.testing.assert_close(improved_triplet_loss(one_ap, one_an, 0.3), t(improved)[0])
    torch.testing.assert_close(triplet_loss(d_ap, d_an), t(0.1)[0])  # mean reduction, default margin
    torch.testing.assert_close(improved_triplet_loss(d_ap, d_an), t(1.1)[0])


def test_triplet_hinge_is_zero_when_satisfied_and_soft_margin_is_softplus() -> None:
    torch.testing.assert_close(triplet_loss(t(0.2), t(1.0), 0.3), t(0.0)[0])
    soft = (math.log1p(math.exp(-0.2)) + math.log1p(math.exp(0.5))) / 2
    torch.testing.assert_close(triplet_loss(t(0.5, 1.0), t(0.7, 0.5), None), t(soft)[0])


def test_contrastive_hand_values() -> None:
    torch.testing.assert_close(contrastive_loss(t(0.5), torch.tensor([True]), 0.3), t(0.25)[0])
    torch.testing.assert_close(contrastive_loss(t(0.1), torch.tensor([False]), 0.3), t(0.04)[0])
    torch.testing.assert_close(contrastive_loss(t(0.5), torch.tensor([False]), 0.3), t(0.0)[0])
    both = contrastive_loss(t(0.5, 0.1, 0.5), t(1.0, 0.0, 0.0), 0.3)  # float labels, mean over elements
    torch.testing.assert_close(both, t(0.29 / 3)[0])


def test_quadruplet_hand_values() -> None:
    # (max(0.5 − 0.7 + 0.3, 0) + max(0.5 − 0.6 + 0.15, 0)) = 0.15; (0 + max(0.2 − 0.3 + 0.15, 0)) = 0.05
    loss = quadruplet_loss(t(0.5, 0.2), t(0.7, 1.0), t(0.6, 0.3))
    torch.testing.assert_close(loss, t(0.1)[0])
    torch.testing.assert_close(quadruplet_loss(t(0.5), t(0.7), t(0.6), alpha=0.0, beta=0.0), t(0.0)[0])


def test_element_wise_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="equal shape"):
        triplet_loss(t(0.1, 0.2), t(0.3))
    with pytest.raises(ValueError, match="equal shape"):
        contrastive_loss(t(0.1, 0.2), t(1.0), 0.3)
    with pytest.raises(ValueError, match="equal shape"):
        quadruplet_loss(t(0.1), t(0.2), t(0.3, 0.4))


# Selectors and batch losses: brute-force references.


def reference_distance(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "euclidean":
        return (a - b).pow(2).sum().sqrt()
    return 1 - (a * b).sum() / (a.norm() * b.norm())


def reference_loss(
    embeddings: torch.Tensor, labels: list[int], margin: float | None, metric: str, hard: bool
) -> torch.Tensor:
    """Loop over anchors; per anchor, list every positive and negative distance and combine them."""
    terms = []
    for a in range(len(labels)):
        d_pos = [reference_distance(embeddings[a], embeddings[p], metric) for p in range(len(labels))
                 if p != a and labels[p] == labels[a]]
        d_neg = [reference_distance(embeddings[a], embeddings[n], metric) for n in range(len(labels))
                 if labels[n] != labels[a]]
        if not d_pos or not d_neg:
            continue
        if hard:
            d_ap, d_an = max(d_pos), min(d_neg)
        else:
            w_pos = [d.exp() for d in d_pos]
            w_neg = [(-d).exp() for d in d_neg]
            d_ap = sum(w * d for w, d in zip(w_pos, d_pos)) / sum(w_pos)
            d_an = sum(w * d for w, d in zip(w_neg, d_neg)) / sum(w_neg)
        gap = d_ap - d_an
        terms.append(torch.log1p(gap.exp()) if margin is None else torch.clamp(gap + margin, min=0))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("margin", [0.3, None])
@pytest.mark.parametrize("loss_fn", BATCH_LOSSES)
def test_batch_loss_matches_brute_force(
    loss_fn, margin: float | None, metric: str, dtype: torch.dtype
) -> None:
    embeddings = clustered_embeddings(dtype).requires_grad_()
    loss = loss_fn(embeddings, LABELS, margin=margin, metric=metric)
    (grad,) = torch.autograd.grad(loss, embeddings)
    expected = reference_loss(embeddings, LABELS.tolist(), margin, metric, hard=loss_fn is trihard_loss)
    (expected_grad,) = torch.autograd.grad(expected, embeddings)
    assert loss.dtype == dtype
    torch.testing.assert_close(loss, expected, **TOLERANCES[dtype])
    torch.testing.assert_close(grad, expected_grad, **TOLERANCES[dtype])


def test_hardest_pairs_on_a_line() -> None:
    # Points 0..5 on a line, identities {0,1,2} and {3,4,5}: d(i, j) = |i − j|.
    embeddings = torch.arange(6, dtype=torch.float64)[:, None]
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    d_ap, d_an = hardest_pairs((embeddings - embeddings.T).abs(), labels)
    torch.testing.assert_close(d_ap, t(2, 1, 2, 2, 1, 2))
    torch.testing.assert_close(d_an, t(3, 2, 1, 1, 2, 3))
    # Hinges max(d_ap − d_an + 0.3, 0) = [0, 0, 1.3, 1.3, 0, 0].
    torch.testing.assert_close(trihard_loss(embeddings, labels, margin=0.3), t(2.6 / 6)[0])


def test_softmax_weighted_pairs_on_a_line() -> None:
    embeddings = torch.arange(4, dtype=torch.float64)[:, None]
    labels = torch.tensor([0, 0, 1, 1])
    d_ap, d_an = softmax_weighted_pairs((embeddings - embeddings.T).abs(), labels)
    torch.testing.assert_close(d_ap, t(1, 1, 1, 1))  # one positive each, at distance 1
    # Anchor 0: negatives at 2 and 3, weights ∝ e^-2, e^-3. Anchor 1: negatives at 1 and 2.
    far = (2 * math.exp(-2) + 3 * math.exp(-3)) / (math.exp(-2) + math.exp(-3))
    near = (math.exp(-1) + 2 * math.exp(-2)) / (math.exp(-1) + math.exp(-2))
    torch.testing.assert_close(d_an, t(far, near, near, far))


@pytest.mark.parametrize("loss_fn", BATCH_LOSSES)
def test_anchors_without_positive_are_excluded(loss_fn) -> None:
    # Points 0..4, identities {0,1}, {2,3}, {4}: anchor 4 has no positive and is left out.
    embeddings = torch.arange(5, dtype=torch.float64)[:, None]
    labels = torch.tensor([0, 0, 1, 1, 2])
    d_ap, _ = hardest_pairs((embeddings - embeddings.T).abs(), labels)
    assert d_ap.shape == (4,)
    # Anchors 0..3: max(1 − 2 + 0.3, 0) = 0, then three times max(1 − 1 + 0.3, 0) = 0.3.
    torch.testing.assert_close(trihard_loss(embeddings, labels, margin=0.3), t(0.9 / 4)[0])
    expected = reference_loss(embeddings, labels.tolist(), None, "euclidean", hard=loss_fn is trihard_loss)
    torch.testing.assert_close(loss_fn(embeddings, labels, margin=None), expected)


@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3]], ids=["one-identity", "singletons"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("loss_fn", BATCH_LOSSES)
def test_no_valid_anchor_returns_zero_with_gradient(loss_fn, metric: str, labels: list[int]) -> None:
    embeddings = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss = loss_fn(embeddings, torch.tensor(labels), metric=metric)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(embeddings.grad, torch.zeros(4, 3))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("loss_fn", BATCH_LOSSES)
def test_duplicate_embeddings_give_finite_gradients(loss_fn, metric: str) -> None:
    base = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    embeddings = torch.cat([base, base, base[:1]]).requires_grad_()  # duplicates across and within ids
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1])
    loss = loss_fn(embeddings, labels, metric=metric)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(embeddings.grad).all()


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("loss_fn", BATCH_LOSSES)
def test_permutation_invariance(loss_fn, metric: str) -> None:
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(8, 5, generator=generator, dtype=torch.float64)
    order = torch.randperm(8, generator=generator)
    torch.testing.assert_close(
        loss_fn(embeddings[order], LABELS[order], metric=metric), loss_fn(embeddings, LABELS, metric=metric)
    )


@pytest.mark.parametrize("loss_fn", BATCH_LOSSES)
def test_cosine_loss_ignores_embedding_scale(loss_fn) -> None:
    generator = torch.Generator().manual_seed(4)
    embeddings = torch.randn(8, 5, generator=generator, dtype=torch.float64)
    scales = torch.rand(8, 1, generator=generator, dtype=torch.float64) * 5 + 0.2
    torch.testing.assert_close(
        loss_fn(embeddings * scales, LABELS, metric="cosine"), loss_fn(embeddings, LABELS, metric="cosine")
    )


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("margin", [0.3, None])
@pytest.mark.parametrize("loss_fn", BATCH_LOSSES)
def test_gradcheck(loss_fn, margin: float | None, metric: str) -> None:
    embeddings = torch.randn(6, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    embeddings.requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, labels, margin=margin, metric=metric), (embeddings,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("loss_fn", BATCH_LOSSES)
def test_half_precision_embeddings(loss_fn, dtype: torch.dtype) -> None:
    embeddings = torch.randn(8, 16, generator=torch.Generator().manual_seed(6)).to(dtype).requires_grad_()
    loss = loss_fn(embeddings, LABELS)
    loss.backward()
    assert torch.isfinite(embeddings.grad.float()).all()
    torch.testing.assert_close(loss, loss_fn(embeddings.detach().float(), LABELS))


@pytest.mark.parametrize("selector", [hardest_pairs, softmax_weighted_pairs])
def test_selectors_finite_on_float16_distances(selector) -> None:
    dist = torch.rand(8, 8, generator=torch.Generator().manual_seed(7)).to(torch.float16)
    d_ap, d_an = selector(dist, LABELS)
    assert d_ap.shape == d_an.shape == (7,)
    assert torch.isfinite(d_ap).all() and torch.isfinite(d_an).all()


@pytest.mark.parametrize("selector", [hardest_pairs, softmax_weighted_pairs])
def test_selectors_reject_bad_shapes(selector) -> None:
    with pytest.raises(ValueError, match=r"\[N, N\]"):
        selector(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"\[N, N\]"):
        selector(torch.zeros(4, 4), torch.zeros(3))


# Modules.


MODULES = [(TriHardLoss, trihard_loss), (AdaptiveWeightedTripletLoss, adaptive_weighted_triplet_loss)]


@pytest.mark.parametrize(("module_cls", "loss_fn"), MODULES)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("margin", [0.5, None])
def test_modules_equal_functions(module_cls, loss_fn, metric: str, margin: float | None) -> None:
    embeddings = torch.randn(8, 5, generator=torch.Generator().manual_seed(8))
    module = module_cls(margin=margin, metric=metric)
    assert torch.equal(module(embeddings, LABELS), loss_fn(embeddings, LABELS, margin=margin, metric=metric))
    assert metric in repr(module)


def test_module_defaults_follow_the_contract() -> None:
    assert (TriHardLoss().margin, TriHardLoss().metric) == (0.3, "euclidean")
    assert (AdaptiveWeightedTripletLoss().margin, AdaptiveWeightedTripletLoss().metric) == (None, "euclidean")


@pytest.mark.parametrize("module_cls", [TriHardLoss, AdaptiveWeightedTripletLoss])
def test_modules_reject_bad_hyperparameters(module_cls) -> None:
    with pytest.raises(ValueError, match="euclidean.*cosine"):
        module_cls(metric="l1")
    for margin in (-0.1, float("nan"), "0.3", True):
        with pytest.raises(ValueError, match="None"):
            module_cls(margin=margin)


# Label-smoothed cross-entropy.


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5])
def test_label_smoothing_matches_hand_formula(epsilon: float) -> None:
    generator = torch.Generator().manual_seed(9)
    logits = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    targets = (1 - epsilon) * F.one_hot(labels, 5).double() + epsilon / 5
    expected = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(cross_entropy_label_smooth(logits, labels, epsilon), expected)
    torch.testing.assert_close(CrossEntropyLabelSmooth(epsilon)(logits, labels), expected)


def test_label_smoothing_zero_is_plain_cross_entropy() -> None:
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(10))
    labels = torch.tensor([2, 0, 1, 1])
    expected = F.cross_entropy(logits, labels)
    torch.testing.assert_close(cross_entropy_label_smooth(logits, labels, 0.0), expected)
    assert CrossEntropyLabelSmooth().epsilon == 0.1


@pytest.mark.parametrize("epsilon", [-0.1, 1.0, float("nan")])
def test_label_smoothing_rejects_bad_epsilon(epsilon: float) -> None:
    with pytest.raises(ValueError, match="0 <= epsilon < 1"):
        cross_entropy_label_smooth(torch.zeros(2, 3), torch.tensor([0, 1]), epsilon)
    with pytest.raises(ValueError, match="0 <= epsilon < 1"):
        CrossEntropyLabelSmooth(epsilon)
