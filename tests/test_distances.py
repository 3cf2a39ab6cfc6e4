"""Tests for reidkit.distances.pairwise_distance against brute force and torch.cdist."""

import pytest
import torch

from reidkit.losses import pairwise_distance

pytestmark = pytest.mark.numerics  # distance formulas vs float64 references

# Tolerances per dtype: the Euclidean expansion loses a few ulps of ‖x‖² to cancellation.
TOLERANCES = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-10}}


def brute_force(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    out = torch.empty(x.shape[0], y.shape[0], dtype=x.dtype)
    for i in range(x.shape[0]):
        for j in range(y.shape[0]):
            if metric == "euclidean":
                out[i, j] = (x[i] - y[j]).pow(2).sum().sqrt()
            else:
                out[i, j] = 1 - (x[i] * y[j]).sum() / (x[i].norm() * y[j].norm())
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_matches_brute_force(dtype: torch.dtype, metric: str) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=generator, dtype=dtype)
    y = torch.randn(4, 5, generator=generator, dtype=dtype)
    dist = pairwise_distance(x, y, metric)
    assert dist.shape == (7, 4) and dist.dtype == dtype
    torch.testing.assert_close(dist, brute_force(x, y, metric), **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_euclidean_matches_cdist(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(30, 16, generator=generator, dtype=dtype) * 3
    y = torch.randn(20, 16, generator=generator, dtype=dtype) * 3
    expected = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
    torch.testing.assert_close(pairwise_distance(x, y), expected, **TOLERANCES[dtype])


def test_euclidean_is_not_squared() -> None:
    x = torch.tensor([[0.0, 0.0]])
    y = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    torch.testing.assert_close(pairwise_distance(x, y), torch.tensor([[5.0, 2.0]]))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_gradient_finite_at_zero_distance(metric: str) -> None:
    # Integer-valued rows make the Euclidean expansion exact: the duplicate pairs sit at exactly 0.
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, -1.0], [1.0, 2.0, 3.0]], requires_grad=True)
    dist = pairwise_distance(x, x, metric)
    zeros = torch.stack([dist[0, 0], dist[0, 2], dist[1, 1]])
    torch.testing.assert_close(zeros, torch.zeros(3), rtol=0, atol=0 if metric == "euclidean" else 1e-6)
    dist.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_near_zero_euclidean_distance_is_exactly_zero_with_zero_gradient() -> None:
    # Squared distance 1e-16 is below the 1e-12 floor: the result is 0 and the gradient 0, not 1/(2·1e-8).
    x = torch.tensor([[0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1e-8, 0.0]], dtype=torch.float64)
    dist = pairwise_distance(x, y)
    dist.sum().backward()
    assert dist.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def test_gradient_finite_for_random_duplicates() -> None:
    base = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    x = torch.cat([base, base]).requires_grad_()
    pairwise_distance(x, x).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_gradcheck(metric: str) -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: pairwise_distance(a, b, metric), (x, y))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_half_inputs_computed_in_float32(dtype: torch.dtype, metric: str) -> None:
    # Norms of ~600 overflow float16 when squared (max 65504); the float32 computation does not.
    x = (torch.randn(6, 4, generator=torch.Generator().manual_seed(4)) * 300).to(dtype)
    dist = pairwise_distance(x, x, metric)
    assert dist.dtype == torch.float32 and torch.isfinite(dist).all()
    torch.testing.assert_close(dist, pairwise_distance(x.float(), x.float(), metric))


def test_autocast_does_not_lower_precision() -> None:
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(6, 32, generator=generator) + 10
    y = torch.randn(5, 32, generator=generator) + 10
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        dist = pairwise_distance(x, y)
    assert dist.dtype == torch.float32
    torch.testing.assert_close(dist, pairwise_distance(x, y))


def test_cosine_ignores_scale() -> None:
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    scales = torch.rand(5, 1, generator=generator, dtype=torch.float64) * 10 + 0.1
    torch.testing.assert_close(pairwise_distance(x * scales, x, "cosine"), pairwise_distance(x, x, "cosine"))


def test_unknown_metric_lists_allowed_values() -> None:
    with pytest.raises(ValueError, match="euclidean.*cosine"):
        pairwise_distance(torch.zeros(2, 3), torch.zeros(2, 3), "manhattan")


@pytest.mark.parametrize("shapes", [((2, 3), (2, 4)), ((3,), (2, 3)), ((2, 3, 1), (2, 3))])
def test_shape_mismatch_raises(shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        pairwise_distance(torch.zeros(shapes[0]), torch.zeros(shapes[1]))



def test_the_contract_name_is_the_shared_implementation():
    """`reidkit.losses.distances` (the design's contract) and `reidkit.distances` (what evaluation and retrieval
    import) are one function, so training and evaluation cannot measure different distances."""
    import reidkit.distances
    import reidkit.losses.distances

    assert reidkit.losses.distances.pairwise_distance is reidkit.distances.pairwise_distance
    assert reidkit.losses.pairwise_distance is reidkit.distances.pairwise_distance
