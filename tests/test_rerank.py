"""Tests of reidkit.metrics.rerank: a slow dense reference of k-reciprocal re-ranking, step by step on
(Q+G)² arrays, and hand-worked cases of query expansion."""

import math

import numpy as np
import pytest
import torch

from reidkit.distances import pairwise_distance
from reidkit.metrics import rerank as rerank_module
from reidkit.metrics.query_expansion import alpha_query_expansion, average_query_expansion
from reidkit.metrics.rerank import re_ranking, re_ranking_features

pytestmark = pytest.mark.numerics  # sparse re-ranking vs the dense reference


def dense_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """Zhong et al.'s re-ranking as the reference implementations define it, with stable sorts.

    Dense and slow (several (Q+G)² arrays, Python loops over items): the ground truth of the tests.
    """
    q_g_dist, q_q_dist, g_g_dist = (np.asarray(x) for x in (q_g_dist, q_q_dist, g_g_dist))
    num_q = q_g_dist.shape[0]
    full = np.concatenate([np.concatenate([q_q_dist, q_g_dist], axis=1),
                           np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0)
    squared = np.power(full, 2).astype(np.float32)
    dist = np.transpose(squared / np.max(squared, axis=0))
    num = len(dist)
    rank = np.argsort(dist, axis=1, kind="stable")
    half = int(np.around(k1 / 2.0))

    def reciprocal(i, k):
        forward = rank[i, :k + 1]
        return np.array([j for j in forward if i in rank[j, :k + 1]], dtype=np.int64)

    weights = np.zeros_like(dist)
    for i in range(num):
        neighbourhood = reciprocal(i, k1)
        expansion = [neighbourhood]
        for j in neighbourhood:
            candidate = reciprocal(j, half)
            if len(np.intersect1d(candidate, neighbourhood)) > 2.0 / 3 * len(candidate):
                expansion.append(candidate)
        members = np.unique(np.concatenate(expansion))
        weight = np.exp(-dist[i, members])
        weights[i, members] = weight / np.sum(weight)
    if k2 != 1:
        weights = np.stack([weights[rank[i, :k2]].mean(axis=0) for i in range(num)])
    jaccard = np.zeros((num_q, num), np.float32)
    for i in range(num_q):
        support = np.flatnonzero(weights[i])
        shared = np.minimum(weights[i, support], weights[:, support]).sum(axis=1)
        jaccard[i] = 1 - shared / (2.0 - shared)
    final = jaccard * (1 - lambda_value) + dist[:num_q] * lambda_value
    return final[:, num_q:]


def euclidean(x, y):
    squared = (x ** 2).sum(1)[:, None] + (y ** 2).sum(1)[None, :] - 2.0 * x @ y.T
    return np.sqrt(np.maximum(squared, 0.0))


def clustered_distances(num_q, num_g, dim, seed, dtype=np.float64):
    """``(q_g, q_q, g_g)`` Euclidean distances of features drawn around a few shared centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, (num_q + num_g) // 8), dim))
    query = centres[rng.integers(len(centres), size=num_q)] + 0.6 * rng.normal(size=(num_q, dim))
    gallery = centres[rng.integers(len(centres), size=num_g)] + 0.6 * rng.normal(size=(num_g, dim))
    q_q, g_g = euclidean(query, query), euclidean(gallery, gallery)
    np.fill_diagonal(q_q, 0.0)
    np.fill_diagonal(g_g, 0.0)
    return euclidean(query, gallery).astype(dtype), q_q.astype(dtype), g_g.astype(dtype)


SIZES = [(5, 20, 8, 0), (12, 47, 16, 1), (25, 90, 32, 2), (40, 150, 16, 3)]


@pytest.mark.parametrize("num_q,num_g,dim,seed", SIZES)
def test_matches_dense_reference_default_parameters(num_q, num_g, dim, seed):
    dists = clustered_distances(num_q, num_g, dim, seed)
    expected = dense_re_ranking(*dists)
    result = re_ranking(*dists, chunk_size=7)
    assert result.shape == (num_q, num_g) and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-4)
    assert (expected < 1 - 1e-3).sum() > num_q  # the k-reciprocal sets overlap: not a trivial all-ones Jaccard


@pytest.mark.parametrize("k1,k2,lambda_value", [(20, 1, 0.3), (10, 3, 0.0), (5, 6, 1.0), (3, 2, 0.5),
                                                (1, 1, 0.3), (7, 25, 0.2)])
@pytest.mark.parametrize("num_q,num_g,dim,seed", SIZES[1:3])
def test_matches_dense_reference_other_parameters(num_q, num_g, dim, seed, k1, k2, lambda_value):
    dists = clustered_distances(num_q, num_g, dim, seed)
    expected = dense_re_ranking(*dists, k1=k1, k2=k2, lambda_value=lambda_value)
    result = re_ranking(*dists, k1=k1, k2=k2, lambda_value=lambda_value, chunk_size=16)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("num_q,num_g,dim,seed", SIZES[:2])
def test_k1_beyond_the_number_of_items_is_clamped(num_q, num_g, dim, seed):
    dists = clustered_distances(num_q, num_g, dim, seed)
    for k1 in (num_q + num_g - 1, 300):
        np.testing.assert_allclose(re_ranking(*dists, k1=k1), dense_re_ranking(*dists, k1=k1), rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_and_numpy_inputs_agree_with_reference(dtype):
    dists = clustered_distances(20, 60, 12, 4, dtype)
    expected = dense_re_ranking(*dists)
    np.testing.assert_allclose(re_ranking(*dists), expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(re_ranking(*(torch.from_numpy(d) for d in dists)), expected, rtol=0, atol=1e-4)


def test_mixed_dtypes_are_squared_in_the_wider_one():
    q_g, q_q, g_g = clustered_distances(10, 40, 8, 15)
    q_g = q_g.astype(np.float32)
    np.testing.assert_allclose(re_ranking(q_g, q_q, g_g), dense_re_ranking(q_g, q_q, g_g), rtol=0, atol=1e-4)


def test_lambda_one_is_the_row_normalised_squared_distance():
    q_g, q_q, g_g = clustered_distances(10, 30, 8, 5)
    row_max = np.maximum((q_q ** 2).max(axis=0), (q_g ** 2).max(axis=1))
    expected = (q_g ** 2).astype(np.float32) / row_max[:, None].astype(np.float32)
    np.testing.assert_allclose(re_ranking(q_g, q_q, g_g, lambda_value=1.0), expected, rtol=1e-6, atol=0)


def test_blocks_are_used_transposed_as_in_the_reference():
    q_g, q_q, g_g = clustered_distances(8, 30, 8, 6)
    rng = np.random.default_rng(0)
    q_q, g_g = q_q * rng.uniform(0.8, 1.2, q_q.shape), g_g * rng.uniform(0.8, 1.2, g_g.shape)  # asymmetric
    np.testing.assert_allclose(re_ranking(q_g, q_q, g_g, k1=6, k2=3), dense_re_ranking(q_g, q_q, g_g, k1=6, k2=3),
                               rtol=0, atol=1e-4)


def test_duplicate_features_tie_like_a_stable_sort():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(12, 4))
    features = np.concatenate([features, features[:6], features[:3]])  # exact duplicates: tied distances
    dist = euclidean(features, features)
    np.fill_diagonal(dist, 0.0)
    q_g, q_q, g_g = dist[:5, 5:], dist[:5, :5], dist[5:, 5:]
    for k1, k2 in [(4, 3), (2, 2), (1, 1)]:
        np.testing.assert_allclose(re_ranking(q_g, q_q, g_g, k1=k1, k2=k2), dense_re_ranking(q_g, q_q, g_g, k1, k2),
                                   rtol=0, atol=1e-4)


def test_scaling_all_distances_leaves_the_result_unchanged():
    dists = clustered_distances(15, 50, 8, 8)
    np.testing.assert_allclose(re_ranking(*(37.5 * d for d in dists)), re_ranking(*dists), rtol=0, atol=1e-5)


def test_permuting_the_gallery_permutes_the_columns():
    q_g, q_q, g_g = clustered_distances(15, 50, 8, 9)
    perm = np.random.default_rng(1).permutation(50)
    permuted = re_ranking(q_g[:, perm], q_q, g_g[np.ix_(perm, perm)])
    np.testing.assert_allclose(permuted, re_ranking(q_g, q_q, g_g)[:, perm], rtol=0, atol=1e-5)


def test_inputs_are_not_modified():
    dists = clustered_distances(6, 20, 8, 10)
    copies = [d.copy() for d in dists]
    re_ranking(*dists)
    for before, after in zip(copies, dists):
        np.testing.assert_array_equal(before, after)


def test_shape_errors():
    q_g, q_q, g_g = clustered_distances(4, 10, 8, 11)
    with pytest.raises(ValueError, match="q_q_dist must have shape"):
        re_ranking(q_g, q_q[:3, :3], g_g)
    with pytest.raises(ValueError, match="g_g_dist must have shape"):
        re_ranking(q_g, q_q, g_g[:, :9])
    with pytest.raises(ValueError, match="q_g_dist must be 2-D"):
        re_ranking(q_g[0], q_q, g_g)
    with pytest.raises(ValueError, match="at least one query"):
        re_ranking(q_g[:0], q_q[:0, :0], g_g)


def test_nan_inf_and_parameter_errors():
    q_g, q_q, g_g = clustered_distances(4, 10, 8, 12)
    bad = g_g.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="g_g_dist contains NaN"):
        re_ranking(q_g, q_q, bad)
    bad[2, 3] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        re_ranking(q_g, q_q, bad)
    with pytest.raises(ValueError, match="distance 0 from every item"):
        re_ranking(np.zeros_like(q_g), np.zeros_like(q_q), np.zeros_like(g_g))
    for kwargs in ({"k1": 0}, {"k2": 0}, {"lambda_value": 1.5}, {"chunk_size": 0}):
        with pytest.raises(ValueError):
            re_ranking(q_g, q_q, g_g, **kwargs)


def test_progress_bar_runs():
    dists = clustered_distances(5, 20, 8, 13)
    np.testing.assert_allclose(re_ranking(*dists, progress=True), re_ranking(*dists), rtol=0, atol=0)


def clustered_features(num_q, num_g, dim, seed):
    """float32 ``(query, gallery)`` features drawn around a few shared centres."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(2, (num_q + num_g) // 8), dim, generator=generator)
    labels = torch.randint(len(centres), (num_q + num_g,), generator=generator)
    features = centres[labels] + 0.6 * torch.randn(num_q + num_g, dim, generator=generator)
    return features[:num_q], features[num_q:]


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("num_q,num_g,dim,seed", SIZES[1:])
def test_features_path_equals_the_distance_blocks_path(num_q, num_g, dim, seed, metric):
    query, gallery = clustered_features(num_q, num_g, dim, seed)
    blocks = [pairwise_distance(x, y, metric) for x, y in ((query, gallery), (query, query), (gallery, gallery))]
    expected = re_ranking(*blocks, k1=10, k2=3)
    for chunk_size in (7, 256):
        result = re_ranking_features(query, gallery, metric, k1=10, k2=3, chunk_size=chunk_size)
        assert result.shape == (num_q, num_g) and result.dtype == np.float32
        np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)


def test_features_path_matches_dense_reference():
    query, gallery = clustered_features(30, 100, 16, 5)
    pairs = ((query, gallery), (query, query), (gallery, gallery))
    blocks = [pairwise_distance(x, y).double().numpy() for x, y in pairs]
    expected = dense_re_ranking(*blocks)
    np.testing.assert_allclose(re_ranking_features(query.numpy(), gallery.numpy()), expected, rtol=0, atol=1e-4)
    assert (expected < 1 - 1e-3).sum() > 30  # overlapping k-reciprocal sets: not a trivial all-ones Jaccard


def test_features_path_errors():
    query, gallery = clustered_features(4, 10, 8, 6)
    with pytest.raises(ValueError, match=r"query_features \[Q, D\] and gallery_features \[G, D\]"):
        re_ranking_features(query, gallery[:, :5])
    with pytest.raises(ValueError, match="at least one query"):
        re_ranking_features(query[:0], gallery)
    bad = gallery.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        re_ranking_features(query, bad)
    with pytest.raises(ValueError, match="metric must be one of"):
        re_ranking_features(query, gallery, metric="manhattan")
    with pytest.raises(ValueError, match="distance 0 from every item"):
        re_ranking_features(torch.ones(2, 3), torch.ones(5, 3))
    with pytest.raises(ValueError, match="lambda_value"):
        re_ranking_features(query, gallery, lambda_value=-0.1)


def unit(angle_deg):
    return [math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))]


def normalised(vector):
    vector = torch.tensor(vector, dtype=torch.float64)
    return vector / vector.norm()


def test_average_query_expansion_by_hand():
    query = torch.tensor([unit(0)], dtype=torch.float64)
    gallery = torch.tensor([unit(30), unit(90), unit(-60), unit(180)], dtype=torch.float64)
    new_query, new_gallery = average_query_expansion(query, gallery, top_k=2)
    # query's two nearest: 30° and −60°; gallery item 90°'s two nearest others: 30° then 180°.
    np.testing.assert_allclose(new_query[0], normalised([1 + unit(30)[0] + unit(-60)[0], unit(30)[1] + unit(-60)[1]]))
    np.testing.assert_allclose(new_gallery[1], normalised([unit(90)[0] + unit(30)[0] - 1, 1 + unit(30)[1]]))
    # 30°'s two nearest others: 90° (60° away) and −60° (90° away)
    np.testing.assert_allclose(new_gallery[0], normalised([unit(30)[0] + 0 + unit(-60)[0],
                                                           unit(30)[1] + 1 + unit(-60)[1]]), atol=1e-12)


def test_alpha_query_expansion_by_hand():
    query = torch.tensor([[2.0, 0.0]], dtype=torch.float64)  # not normalised on purpose
    gallery = torch.tensor([unit(60), unit(90), unit(180)], dtype=torch.float64)
    new_query, new_gallery = alpha_query_expansion(query, gallery, top_k=2, alpha=3.0)
    # neighbours 60° (cos 0.5 → weight 0.125) and 90° (cos 0 → weight 0)
    np.testing.assert_allclose(new_query[0], normalised([1 + 0.125 * 0.5, 0.125 * unit(60)[1]]), atol=1e-12)
    # 180°'s nearest others: 90° (cos 0 → 0) and 60° (cos −0.5 → clamped to 0): unchanged
    np.testing.assert_allclose(new_gallery[2], torch.tensor(unit(180), dtype=torch.float64), atol=1e-12)
    # 90°'s: 60° (cos √3/2 → weight (√3/2)^3), 180° (cos 0 → 0)
    weight = (math.sqrt(3) / 2) ** 3
    np.testing.assert_allclose(new_gallery[1], normalised([weight * 0.5, 1 + weight * unit(60)[1]]), atol=1e-12)


def test_query_expansion_edge_cases():
    rng = torch.Generator().manual_seed(0)
    query, gallery = torch.randn(7, 5, generator=rng), torch.randn(11, 5, generator=rng)
    new_query, new_gallery = alpha_query_expansion(query, gallery, top_k=0)
    torch.testing.assert_close(new_query, torch.nn.functional.normalize(query, dim=1))
    torch.testing.assert_close(new_gallery, torch.nn.functional.normalize(gallery, dim=1))
    # top_k beyond the gallery: every other gallery item is used; chunking changes nothing
    full_q, full_g = average_query_expansion(query, gallery, top_k=100)
    chunked_q, chunked_g = average_query_expansion(query, gallery, top_k=100, chunk_size=3)
    torch.testing.assert_close(full_q, chunked_q)
    torch.testing.assert_close(full_g, chunked_g)
    mean = torch.nn.functional.normalize(gallery, dim=1).sum(0)
    torch.testing.assert_close(full_q, torch.nn.functional.normalize(
        torch.nn.functional.normalize(query, dim=1) + mean, dim=1))
    torch.testing.assert_close(full_g, torch.nn.functional.normalize(mean.expand_as(gallery), dim=1))
    with pytest.raises(ValueError, match="equal D"):
        average_query_expansion(query, gallery[:, :4])
    with pytest.raises(ValueError, match="NaN"):
        average_query_expansion(query * float("nan"), gallery)
    with pytest.raises(ValueError):
        alpha_query_expansion(query, gallery, alpha=-1.0)


@pytest.mark.parametrize("layout", ["random", "sorted_clusters", "ties", "constant"])
def test_nearest_selection_equals_a_stable_argsort(layout):
    rng = np.random.default_rng(14)
    size, num = 3001, 21
    if layout == "random":
        values = rng.random((40, size), dtype=np.float32)
    elif layout == "sorted_clusters":  # near neighbours at adjacent columns, as in a gallery sorted by pid
        values = np.repeat(rng.random((40, size // 20 + 1), dtype=np.float32), 20, axis=1)[:, :size]
        values += 1e-3 * rng.random(values.shape, dtype=np.float32)
    elif layout == "ties":
        values = rng.integers(0, 30, (40, size)).astype(np.float32)
    else:
        values = np.ones((40, size), np.float32)
    group_size = 32
    padded = np.full((40, -(-size // group_size) * group_size), np.inf, np.float32)
    padded[:, :size] = values
    expected = np.argsort(values, axis=1, kind="stable")[:, :num]
    np.testing.assert_array_equal(rerank_module._smallest(padded, num, group_size), expected)


def test_queries_sharing_no_neighbour_with_the_gallery():
    """Queries that are each other's only neighbours have an empty overlap with every gallery item:
    Jaccard distance 1 everywhere, as in the dense reference (an integer overlap array once broke this)."""
    _, gallery = clustered_features(1, 40, 8, 7)
    query = torch.full((5, 8), 50.0) + 0.01 * torch.arange(5.0)[:, None]
    blocks = [pairwise_distance(x, y).double().numpy() for x, y in ((query, gallery), (query, query),
                                                                   (gallery, gallery))]
    expected = dense_re_ranking(*blocks, k1=3, k2=2)
    result = re_ranking_features(query, gallery, k1=3, k2=2)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)
    jaccard_part = (expected - 0.3 * blocks[0] ** 2 / (blocks[0] ** 2).max(1, keepdims=True)) / 0.7
    np.testing.assert_allclose(jaccard_part, 1.0, atol=1e-6)
