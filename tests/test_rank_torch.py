"""The torch ranking core (GPU evaluation) against the CPU evaluator: the same scores, exactly, on
distances with ties, junk, distractors and queries without a true match; run here on CPU tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidkit.metrics import evaluate_features
from reidkit.metrics.rank import query_scores
from reidkit.metrics.rank_torch import torch_query_scores

pytestmark = pytest.mark.numerics  # the torch ranking core vs the numpy one


def _problem(seed: int, num_q: int = 60, num_g: int = 400, levels: int | None = 12):
    rng = np.random.default_rng(seed)
    dist = rng.random((num_q, num_g)).astype(np.float32)
    if levels:  # many exact ties: the order among them must be the gallery index
        dist = np.round(dist * levels) / levels
    g_pids = rng.integers(-1, 30, num_g)  # -1 junk, 0 distractors
    q_pids = rng.integers(1, 34, num_q)  # some identities absent from the gallery: invalid queries
    q_pids[:3] = -1
    return dist, q_pids, g_pids, rng.integers(1, 4, num_q), rng.integers(1, 4, num_g)


@pytest.mark.parametrize("junk", ["market", "none"])
@pytest.mark.parametrize("seed, levels", [(0, 12), (1, None), (2, 3)])
def test_torch_scores_equal_the_cpu_scores_exactly(seed: int, levels, junk: str) -> None:
    dist, q_pids, g_pids, q_camids, g_camids = _problem(seed, levels=levels)
    expected = query_scores(dist, q_pids, g_pids, q_camids, g_camids, junk=junk)
    found = torch_query_scores(torch.from_numpy(dist), q_pids, g_pids, q_camids, g_camids, junk=junk)
    assert 0 < len(found.first_rank) < len(dist)  # some queries are skipped
    for name in ("first_rank", "ap", "inp"):
        np.testing.assert_array_equal(getattr(found, name), getattr(expected, name), err_msg=name)


def test_a_hand_made_ranking() -> None:
    """Query pid 1, camera 1; gallery by distance: junk (pid 1, cam 1), match, tie pair where the
    non-match has the lower index, match, pid -1: ranks 1 (match), 3 (match after the tie winner)."""
    dist = torch.tensor([[0.1, 0.2, 0.3, 0.3, 0.5]])
    g_pids, g_camids = [1, 1, 2, 1, -1], [1, 2, 2, 3, 2]
    scores = torch_query_scores(dist, [1], g_pids, [1], g_camids)
    assert scores.first_rank.tolist() == [1]
    assert scores.ap.tolist() == [pytest.approx((1 / 1 + 2 / 3) / 2)] and scores.inp.tolist() == [2 / 3]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        torch_query_scores(torch.tensor([[float("nan"), 1.0]]), [1], [1, 2], [1], [2, 2])
    with pytest.raises(ValueError, match="labels must have lengths"):
        torch_query_scores(torch.zeros(1, 2), [1], [1], [1], [2])
    with pytest.raises(ValueError, match="junk"):
        torch_query_scores(torch.zeros(1, 2), [1], [1, 2], [1], [2, 2], junk="duke")


def test_evaluate_features_on_a_device_gives_the_cpu_metrics(monkeypatch) -> None:
    """The device branch of evaluate_features (taken for GPU tensors) on CPU tensors: same metrics."""
    import reidkit.metrics.features_eval as features_eval

    rng = np.random.default_rng(5)
    query, gallery = torch.from_numpy(rng.normal(size=(70, 16))), torch.from_numpy(rng.normal(size=(300, 16)))
    q_pids, g_pids = rng.integers(0, 20, 70), rng.integers(0, 20, 300)
    q_camids, g_camids = rng.integers(1, 4, 70), rng.integers(1, 4, 300)
    cpu = evaluate_features(query, gallery, q_pids, g_pids, q_camids, g_camids, metric="cosine", query_chunk=32)
    calls = []

    def recording(*args, **kwargs):
        calls.append(1)
        return torch_query_scores(*args, **kwargs)
    monkeypatch.setattr(features_eval, "torch_query_scores", recording)
    monkeypatch.setattr(features_eval, "ranks_on_device", lambda features: True)  # as for CUDA features
    device = evaluate_features(query, gallery, q_pids, g_pids, q_camids, g_camids, metric="cosine", query_chunk=32)
    assert len(calls) == 3
    assert device["mAP"] == cpu["mAP"] and device["mINP"] == cpu["mINP"]
    np.testing.assert_array_equal(device["cmc"], cpu["cmc"])
