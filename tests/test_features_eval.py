"""Tests of reidkit.metrics.features_eval: block-wise evaluation equals evaluate_rank on the full matrix."""

import numpy as np
import pytest
import torch

from reidkit.distances import pairwise_distance
from reidkit.metrics import features_eval
from reidkit.metrics.features_eval import evaluate_features
from reidkit.metrics.rank import evaluate_rank

pytestmark = pytest.mark.numerics  # distance blocks vs the full matrix


def exact_problem(seed, num_query=37, num_gallery=53, dim=16):
    """Features whose distances are exact in float32 whatever the block shape (so results must be
    bit-identical): small integers (Euclidean) or ±1 entries, unit-normalised to ±0.25 (cosine).
    Both give many tied distances."""
    rng = np.random.default_rng(seed)
    features = rng.choice([-1.0, 1.0], (num_query + num_gallery, dim)) * rng.integers(1, 3, (1, dim))
    features = torch.tensor(features, dtype=torch.float32)
    labels = (rng.integers(-1, 8, num_query), rng.integers(-1, 8, num_gallery),
              rng.integers(0, 3, num_query), rng.integers(0, 3, num_gallery))
    return features[:num_query], features[num_query:], labels


def assert_identical(result, expected):
    np.testing.assert_array_equal(result["cmc"], expected["cmc"])
    assert (result["mAP"], result["mINP"], result["num_valid_queries"]) == (
        expected["mAP"], expected["mINP"], expected["num_valid_queries"])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("junk", ["market", "none"])
@pytest.mark.parametrize("query_chunk, gallery_chunk, num_threads", [(1, 7, 1), (5, 53, 2), (16, 10, 3),
                                                                     (1000, 16384, None)])
def test_equals_evaluate_rank_on_full_matrix(metric, junk, query_chunk, gallery_chunk, num_threads):
    query, gallery, labels = exact_problem(seed=query_chunk)
    if metric == "cosine":
        query, gallery = query.sign(), gallery.sign()  # ±1 entries: normalised to exactly ±0.25
    expected = evaluate_rank(pairwise_distance(query, gallery, metric), *labels, max_rank=20, junk=junk)
    result = evaluate_features(query, gallery, *labels, metric=metric, max_rank=20, junk=junk,
                               query_chunk=query_chunk, gallery_chunk=gallery_chunk, num_threads=num_threads)
    assert_identical(result, expected)


def test_numpy_float64_and_random_features_agree_with_evaluate_rank():
    rng = np.random.default_rng(0)
    query, gallery = rng.standard_normal((40, 32)), rng.standard_normal((70, 32))
    labels = (rng.integers(0, 10, 40), rng.integers(0, 10, 70), rng.integers(0, 2, 40), rng.integers(0, 2, 70))
    full = pairwise_distance(torch.from_numpy(query), torch.from_numpy(gallery)).numpy()
    assert full.dtype == np.float64
    expected = evaluate_rank(full, *labels, max_rank=10)
    result = evaluate_features(query, gallery, *labels, max_rank=10, query_chunk=9)
    np.testing.assert_allclose(result["cmc"], expected["cmc"], atol=1e-12)
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
    assert result["num_valid_queries"] == expected["num_valid_queries"]


def test_distance_blocks_never_exceed_query_and_gallery_chunks(monkeypatch):
    query, gallery, labels = exact_problem(seed=1, num_query=50)
    shapes = []

    def recording_distance(x, y, metric="euclidean"):
        shapes.append((len(x), len(y)))
        return pairwise_distance(x, y, metric)

    monkeypatch.setattr(features_eval, "pairwise_distance", recording_distance)
    evaluate_features(query, gallery, *labels, query_chunk=12, gallery_chunk=20)
    assert len(gallery) == 53
    assert shapes == [(rows, columns) for rows in (12, 12, 12, 12, 2) for columns in (20, 20, 13)]


def test_no_valid_query_explains_single_camera_data():
    features = torch.eye(3)
    with pytest.raises(ValueError, match="junk='none'"):
        evaluate_features(features, features, [0, 1, 2], [0, 1, 2], [0, 0, 0], [0, 0, 0], query_chunk=2)
    result = evaluate_features(features, features, [0, 1, 2], [0, 1, 2], [0, 0, 0], [0, 0, 0], junk="none",
                               max_rank=3)
    np.testing.assert_array_equal(result["cmc"], [1.0, 1.0, 1.0])


def test_nan_features_raise():
    query = torch.ones(2, 4)
    query[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        evaluate_features(query, torch.zeros(3, 4), [1, 2], [1, 2, 3], [0, 0], [1, 1, 1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metric": "manhattan"}, "metric"),
        ({"junk": "cuhk03"}, "junk"),
        ({"max_rank": 0}, "max_rank"),
        ({"query_chunk": 0}, "query_chunk"),
        ({"gallery_chunk": 0}, "gallery_chunk"),
        ({"q_pids": [1]}, "q_pids"),
        ({"g_camids": [0, 0]}, "g_camids"),
        ({"gallery_features": torch.zeros(3, 5)}, r"\[G, D\]"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    arguments = {"query_features": torch.zeros(2, 4), "gallery_features": torch.ones(3, 4), "q_pids": [1, 2],
                 "g_pids": [1, 2, 3], "q_camids": [0, 0], "g_camids": [1, 1, 1]} | kwargs
    with pytest.raises(ValueError, match=message):
        evaluate_features(**arguments)
