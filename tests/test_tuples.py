"""Tests for the tuple builders (reidkit.losses.tuples) and the batch losses composing them.

Deterministic strategies are checked against Python loops over every pair, triplet and quadruplet of an
8-sample batch (values and autograd gradients) and against cases solved on paper with 1-D embeddings.
Random strategies are checked for validity (every tuple decodes to legal indices), determinism under a
seeded generator and rough uniformity.
"""

import itertools
import math

import pytest
import torch

from reidkit.losses import (
    PAIR_STRATEGIES,
    QUADRUPLET_STRATEGIES,
    TRIPLET_STRATEGIES,
    BatchContrastiveLoss,
    BatchImprovedTripletLoss,
    BatchQuadrupletLoss,
    BatchTripletLoss,
    batch_contrastive_loss,
    batch_improved_triplet_loss,
    batch_quadruplet_loss,
    batch_triplet_loss,
    build_pairs,
    build_quadruplets,
    build_triplets,
    hardest_pairs,
    pairwise_distance,
    trihard_loss,
)

TOLERANCES = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-10}}
LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])  # identity 3 is a singleton: never an anchor
MARGIN = 0.3


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def clustered_embeddings(dtype: torch.dtype = torch.float64, seed: int = 2) -> torch.Tensor:
    """`[8, 5]` points around one centre per identity of LABELS (hinges active for some tuples only)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    return (centres[LABELS] + 0.6 * torch.randn(8, 5, generator=generator, dtype=torch.float64)).to(dtype)


def ref_distance(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "euclidean":
        return (a - b).pow(2).sum().sqrt()
    return 1 - (a * b).sum() / (a.norm() * b.norm())


def hinge(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, min=0)


# Brute-force references: loops over indices, one distance at a time.


def ref_contrastive(embeddings, labels, metric, strategy):
    n, d = len(labels), lambda i, j: ref_distance(embeddings[i], embeddings[j], metric)
    terms = []
    if strategy == "all":
        for i, j in itertools.combinations(range(n), 2):
            dij = d(i, j)
            terms.append(dij**2 if labels[i] == labels[j] else hinge(1.0 - dij) ** 2)
    else:  # hard
        for a in range(n):
            d_pos = [d(a, p) for p in range(n) if p != a and labels[p] == labels[a]]
            d_neg = [d(a, k) for k in range(n) if labels[k] != labels[a]]
            if d_pos and d_neg:
                terms += [max(d_pos) ** 2, hinge(1.0 - min(d_neg)) ** 2]
    return sum(terms) / len(terms)


def ref_triplets(embeddings, labels, metric, strategy):
    """All (d_ap, d_an) pairs selected by `strategy` in ("all", "hard", "nn_adaptive"), by loops."""
    n, d = len(labels), lambda i, j: ref_distance(embeddings[i], embeddings[j], metric)
    positives = {a: [p for p in range(n) if p != a and labels[p] == labels[a]] for a in range(n)}
    negatives = {a: [k for k in range(n) if labels[k] != labels[a]] for a in range(n)}
    anchors = [a for a in range(n) if positives[a] and negatives[a]]
    if strategy == "all":
        return [(d(a, p), d(a, k)) for a in anchors for p in positives[a] for k in negatives[a]]
    if strategy == "hard":
        return [(max(d(a, p) for p in positives[a]), min(d(a, k) for k in negatives[a])) for a in anchors]
    errors = sum(min(d(a, k) for k in negatives[a]) <= min(d(a, p) for p in positives[a]) for a in anchors)
    triplets = []
    for a in anchors:
        count = max(1, math.ceil(int(errors) * len(negatives[a]) / len(anchors)))
        nearest = sorted(negatives[a], key=lambda k: d(a, k).item())[:count]
        triplets += [(max(d(a, p) for p in positives[a]), d(a, k)) for k in nearest]
    return triplets


def ref_quadruplets(embeddings, labels, metric, strategy, alpha=0.3, beta=0.15):
    n, d = len(labels), lambda i, j: ref_distance(embeddings[i], embeddings[j], metric)
    terms = []
    for a in range(n):
        pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [k for k in range(n) if labels[k] != labels[a]]
        pairs = [(i, j) for i in neg for j in neg if labels[i] != labels[j]]
        if not pos or not pairs:
            continue
        if strategy == "all":
            for p, (n1, n2) in itertools.product(pos, pairs):
                terms.append(hinge(d(a, p) - d(a, n1) + alpha) + hinge(d(a, p) - d(n1, n2) + beta))
        else:  # hard: the closest negative pair is chosen independently of the hardest negative
            d_ap, d_an = max(d(a, p) for p in pos), min(d(a, k) for k in neg)
            d_pair = min(d(i, j) for i, j in pairs)
            terms.append(hinge(d_ap - d_an + alpha) + hinge(d_ap - d_pair + beta))
    return sum(terms) / len(terms)


def triplet_reference(formula):
    def reference(embeddings, labels, metric, strategy):
        triplets = ref_triplets(embeddings, labels, metric, strategy)
        return sum(formula(d_ap, d_an) for d_ap, d_an in triplets) / len(triplets)

    return reference


CASES = [
    (batch_contrastive_loss, "all", ref_contrastive),
    (batch_contrastive_loss, "hard", ref_contrastive),
    *[(batch_triplet_loss, s, triplet_reference(lambda p, n: hinge(p - n + MARGIN))) for s in
      ("all", "hard", "nn_adaptive")],
    *[(batch_improved_triplet_loss, s, triplet_reference(lambda p, n: p + hinge(p - n + MARGIN))) for s in
      ("all", "hard", "nn_adaptive")],
    (batch_quadruplet_loss, "all", ref_quadruplets),
    (batch_quadruplet_loss, "hard", ref_quadruplets),
]
CASE_IDS = [f"{fn.__name__}-{strategy}" for fn, strategy, _ in CASES]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize(("loss_fn", "strategy", "reference"), CASES, ids=CASE_IDS)
def test_batch_loss_matches_brute_force(loss_fn, strategy, reference, metric, dtype) -> None:
    embeddings = clustered_embeddings(dtype).requires_grad_()
    kwargs = {"margin": 1.0} if loss_fn is batch_contrastive_loss else {}
    if loss_fn in (batch_triplet_loss, batch_improved_triplet_loss):
        kwargs = {"margin": MARGIN}
    loss = loss_fn(embeddings, LABELS, metric=metric, strategy=strategy, **kwargs)
    (grad,) = torch.autograd.grad(loss, embeddings)
    expected = reference(embeddings, LABELS.tolist(), metric, strategy)
    (expected_grad,) = torch.autograd.grad(expected, embeddings)
    assert loss.dtype == dtype and 0 < expected.item()
    torch.testing.assert_close(loss, expected, **TOLERANCES[dtype])
    torch.testing.assert_close(grad, expected_grad, **TOLERANCES[dtype])


def test_adaptive_strategy_is_between_hard_and_all_on_this_batch() -> None:
    # The brute-force test above only helps if the adaptive selection is neither batch hard nor "all".
    embeddings = clustered_embeddings()
    for metric in ("euclidean", "cosine"):
        dist = pairwise_distance(embeddings, embeddings, metric)
        sizes = {s: build_triplets(dist, LABELS, s)[0].numel() for s in ("hard", "nn_adaptive", "all")}
        assert sizes["hard"] < sizes["nn_adaptive"] < sizes["all"]


# Hand-solved cases on a line.


def line_distances(*positions: float) -> torch.Tensor:
    points = t(*positions)[:, None]
    return (points - points.T).abs()


def test_build_pairs_all_and_hard_on_a_line() -> None:
    dist, labels = line_distances(0, 1, 2, 3), torch.tensor([0, 0, 1, 1])
    d, same = build_pairs(dist, labels, "all")
    torch.testing.assert_close(d, t(1, 2, 3, 1, 2, 1))  # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    assert same.tolist() == [True, False, False, False, False, True]
    d, same = build_pairs(dist, labels, "hard")
    torch.testing.assert_close(d, t(1, 1, 1, 1, 2, 1, 1, 2))  # positives first, then nearest negatives
    assert same.tolist() == [True] * 4 + [False] * 4


def test_build_quadruplets_hard_on_a_line() -> None:
    dist, labels = line_distances(0, 1, 2, 3, 4, 5), torch.tensor([0, 0, 1, 1, 2, 2])
    d_ap, d_an1, d_n1n2 = build_quadruplets(dist, labels, "hard")
    torch.testing.assert_close(d_ap, t(1, 1, 1, 1, 1, 1))
    torch.testing.assert_close(d_an1, t(2, 1, 1, 1, 1, 2))
    # Closest pair of two other identities: id 0 → (3, 4); id 1 → (1, 4); id 2 → (1, 2).
    torch.testing.assert_close(d_n1n2, t(1, 1, 3, 3, 1, 1))


def test_build_triplets_adaptive_on_a_line() -> None:
    # Anchors 1 and 2 have a nearer negative than positive: ρ = 2/6, so k = ceil(4/3) = 2 negatives each.
    dist, labels = line_distances(0, 1, 1.5, 3, 10, 11), torch.tensor([0, 0, 1, 1, 2, 2])
    d_ap, d_an = build_triplets(dist, labels, "nn_adaptive")
    torch.testing.assert_close(d_ap, t(1, 1, 1, 1, 1.5, 1.5, 1.5, 1.5, 1, 1, 1, 1))
    torch.testing.assert_close(d_an, t(1.5, 3, 0.5, 2, 1.5, 0.5, 3, 2, 8.5, 7, 9.5, 8))
    torch.testing.assert_close(batch_triplet_loss(t(0, 1, 1.5, 3, 10, 11)[:, None], labels, 0.3,
                                                  strategy="nn_adaptive"), t(2.4 / 12)[0])


def test_adaptive_narrows_to_batch_hard_when_the_batch_is_solved_and_widens_when_not() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    solved = line_distances(0, 1, 10, 11, 20, 21)  # ρ = 0: one negative per anchor, the nearest
    for got, expected in zip(build_triplets(solved, labels, "nn_adaptive"), hardest_pairs(solved, labels)):
        torch.testing.assert_close(got, expected)
    collapsed = torch.zeros(6, 6, dtype=torch.float64)  # ties count as errors: ρ = 1, every negative
    assert build_triplets(collapsed, labels, "nn_adaptive")[0].numel() == 6 * 4


# Random strategies: validity, determinism, uniformity.


def encoded_distances(n: int) -> torch.Tensor:
    """dist[i, j] = n·i + j: every selected distance decodes to the (row, column) it came from."""
    return torch.arange(n * n, dtype=torch.float64).reshape(n, n)


def decode(values: torch.Tensor, n: int) -> list[tuple[int, int]]:
    return [divmod(int(v), n) for v in values.tolist()]


@pytest.mark.parametrize("strategy", ["random", "hard", "all"])
def test_pairs_and_triplets_are_valid(strategy: str) -> None:
    n, labels = 8, LABELS.tolist()
    generator = torch.Generator().manual_seed(0)
    d, same = build_pairs(encoded_distances(n), LABELS, strategy, generator)
    for (i, j), is_same in zip(decode(d, n), same.tolist()):
        assert i != j and (labels[i] == labels[j]) == is_same
    if strategy != "all":
        assert same.sum().item() == (~same).sum().item() == 7  # balanced, one of each per valid anchor
    d_ap, d_an = build_triplets(encoded_distances(n), LABELS, strategy, generator)
    for (a, p), (a2, k) in zip(decode(d_ap, n), decode(d_an, n)):
        assert a == a2 and p != a and labels[p] == labels[a] and labels[k] != labels[a]


@pytest.mark.parametrize("strategy", ["random", "all"])
def test_quadruplets_are_valid(strategy: str) -> None:
    n, labels = 8, LABELS.tolist()
    tuples = build_quadruplets(encoded_distances(n), LABELS, strategy, torch.Generator().manual_seed(1))
    assert tuples[0].numel() > 0
    for (a, p), (a2, n1), (n1b, n2) in zip(*(decode(x, n) for x in tuples)):
        assert a == a2 and n1 == n1b and p != a and labels[p] == labels[a]
        assert len({labels[a], labels[n1], labels[n2]}) == 3


def test_random_strategies_are_deterministic_with_a_generator() -> None:
    dist = encoded_distances(8)
    for build in (build_pairs, build_triplets, build_quadruplets):
        first = build(dist, LABELS, "random", torch.Generator().manual_seed(5))
        again = build(dist, LABELS, "random", torch.Generator().manual_seed(5))
        other = build(dist, LABELS, "random", torch.Generator().manual_seed(6))
        assert all(torch.equal(x, y) for x, y in zip(first, again))
        assert not all(torch.equal(x, y) for x, y in zip(first, other))
    module = BatchTripletLoss(strategy="random", generator=torch.Generator().manual_seed(5))
    embeddings = clustered_embeddings()
    generator = torch.Generator().manual_seed(5)
    expected = batch_triplet_loss(embeddings, LABELS, strategy="random", generator=generator)
    assert torch.equal(module(embeddings, LABELS), expected)


def test_random_choice_is_roughly_uniform() -> None:
    # Anchor 2 (identity 1) has positives 3, 4 and negatives 0, 1, 5, 6, 7: each drawn ~1/2 and ~1/5.
    generator = torch.Generator().manual_seed(7)
    dist, draws = encoded_distances(8), 2000
    positives, negatives = torch.zeros(8), torch.zeros(8)
    for _ in range(draws):
        d_ap, d_an = build_triplets(dist, LABELS, "random", generator)
        positives[int(d_ap[2]) % 8] += 1
        negatives[int(d_an[2]) % 8] += 1
    torch.testing.assert_close(positives[[3, 4]] / draws, torch.full((2,), 0.5), atol=0.05, rtol=0)
    torch.testing.assert_close(negatives[[0, 1, 5, 6, 7]] / draws, torch.full((5,), 0.2), atol=0.04, rtol=0)
    assert positives.sum() == negatives.sum() == draws


# Degenerate batches, invariances, gradcheck.

ALL_LOSSES = [
    (loss_fn, strategy) for loss_fn, strategies in [
        (batch_contrastive_loss, PAIR_STRATEGIES),
        (batch_triplet_loss, TRIPLET_STRATEGIES),
        (batch_improved_triplet_loss, TRIPLET_STRATEGIES),
        (batch_quadruplet_loss, QUADRUPLET_STRATEGIES),
    ] for strategy in strategies
]
ALL_IDS = [f"{fn.__name__}-{strategy}" for fn, strategy in ALL_LOSSES]


@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3]], ids=["one-identity", "singletons"])
@pytest.mark.parametrize(("loss_fn", "strategy"), ALL_LOSSES, ids=ALL_IDS)
def test_no_valid_tuple_returns_zero_with_gradient(loss_fn, strategy, labels) -> None:
    embeddings = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    if loss_fn is batch_contrastive_loss and strategy == "all":
        embeddings = embeddings[:1].detach().requires_grad_()  # "all" pairs exist as soon as N ≥ 2
        labels = labels[:1]
    loss = loss_fn(embeddings, torch.tensor(labels), strategy=strategy)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(embeddings.grad, torch.zeros_like(embeddings))


@pytest.mark.parametrize("strategy", QUADRUPLET_STRATEGIES)
def test_quadruplets_need_three_identities(strategy: str) -> None:
    dist, labels = line_distances(0, 1, 2, 3), torch.tensor([0, 0, 1, 1])
    assert all(x.numel() == 0 for x in build_quadruplets(dist, labels, strategy))
    # Identity 2 is a singleton: it serves as n1/n2 for the others but is never an anchor. "all": each of
    # the 4 anchors has 1 positive and 4 ordered negative pairs, e.g. (2, 4), (3, 4), (4, 2), (4, 3).
    dist, labels = line_distances(0, 1, 2, 3, 9), torch.tensor([0, 0, 1, 1, 2])
    expected = {"hard": 4, "random": 4, "all": 16}[strategy]
    assert [x.numel() for x in build_quadruplets(dist, labels, strategy)] == [expected] * 3


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize(("loss_fn", "strategy"), [c for c in ALL_LOSSES if c[1] != "random"],
                         ids=[i for i in ALL_IDS if not i.endswith("random")])
def test_permutation_invariance(loss_fn, strategy, metric) -> None:
    embeddings = clustered_embeddings(seed=3)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(loss_fn(embeddings[order], LABELS[order], metric=metric, strategy=strategy),
                               loss_fn(embeddings, LABELS, metric=metric, strategy=strategy))


def test_hard_triplet_strategy_is_trihard() -> None:
    embeddings = clustered_embeddings()
    for margin in (0.3, None):
        torch.testing.assert_close(batch_triplet_loss(embeddings, LABELS, margin, strategy="hard"),
                                   trihard_loss(embeddings, LABELS, margin))


@pytest.mark.parametrize(("loss_fn", "strategy"), [
    (batch_contrastive_loss, "all"), (batch_triplet_loss, "all"), (batch_triplet_loss, "nn_adaptive"),
    (batch_quadruplet_loss, "hard"), (batch_improved_triplet_loss, "hard"),
])
def test_gradcheck(loss_fn, strategy) -> None:
    embeddings = torch.randn(6, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, labels, strategy=strategy),
                                    (embeddings.requires_grad_(),))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_duplicate_embeddings_give_finite_gradients(metric: str) -> None:
    base = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    embeddings = torch.cat([base, base, base[:1]]).requires_grad_()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1])
    for loss_fn, strategy in ALL_LOSSES:
        loss = loss_fn(embeddings, labels, metric=metric, strategy=strategy,
                       generator=torch.Generator().manual_seed(0))
        (grad,) = torch.autograd.grad(loss, embeddings)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


# Strategy validation and modules.


BUILDERS = [
    (build_pairs, PAIR_STRATEGIES),
    (build_triplets, TRIPLET_STRATEGIES),
    (build_quadruplets, QUADRUPLET_STRATEGIES),
]


@pytest.mark.parametrize(("build", "allowed"), BUILDERS)
def test_builders_reject_unknown_strategy(build, allowed) -> None:
    listed = ", ".join(f"'{s}'" for s in allowed)
    with pytest.raises(ValueError, match=r"strategy must be one of \(" + listed + r"\)"):
        build(encoded_distances(4), torch.tensor([0, 0, 1, 1]), "semi-hard")
    with pytest.raises(ValueError, match=r"\[N, N\]"):
        build(torch.zeros(4, 3), torch.tensor([0, 0, 1, 1]), "hard")


MODULES = [
    (BatchContrastiveLoss, batch_contrastive_loss, {"margin": 0.8}),
    (BatchTripletLoss, batch_triplet_loss, {"margin": None}),
    (BatchImprovedTripletLoss, batch_improved_triplet_loss, {"margin": 0.2}),
    (BatchQuadrupletLoss, batch_quadruplet_loss, {"alpha": 0.5, "beta": 0.25}),
]


@pytest.mark.parametrize(("module_cls", "loss_fn", "params"), MODULES)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_modules_equal_functions(module_cls, loss_fn, params, metric) -> None:
    embeddings = clustered_embeddings(torch.float32, seed=8)
    module = module_cls(metric=metric, strategy="all", **params)
    expected = loss_fn(embeddings, LABELS, metric=metric, strategy="all", **params)
    assert torch.equal(module(embeddings, LABELS), expected)
    assert metric in repr(module) and "'all'" in repr(module)


@pytest.mark.parametrize(("module_cls", "loss_fn", "params"), MODULES)
def test_modules_reject_bad_hyperparameters(module_cls, loss_fn, params) -> None:
    with pytest.raises(ValueError, match="euclidean.*cosine"):
        module_cls(metric="l1")
    with pytest.raises(ValueError, match="strategy must be one of"):
        module_cls(strategy="semi-hard")
    for name in params:
        for bad in (-0.1, float("nan"), "0.3", True):
            with pytest.raises(ValueError, match=name):
                module_cls(**{name: bad})
    assert module_cls().strategy == "hard" and module_cls().metric == "euclidean"


def test_adaptive_is_rejected_for_pairs_and_quadruplets() -> None:
    with pytest.raises(ValueError, match="strategy"):
        BatchContrastiveLoss(strategy="nn_adaptive")
    with pytest.raises(ValueError, match="strategy"):
        BatchQuadrupletLoss(strategy="nn_adaptive")
    assert BatchImprovedTripletLoss(strategy="nn_adaptive").strategy == "nn_adaptive"
