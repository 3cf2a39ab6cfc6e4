"""Ranked lists, per-query AP and rank-1 per camera pair from row blocks, against brute-force loops."""

import numpy as np
import pytest
import torch

from reidkit.distances import pairwise_distance
from reidkit.metrics import evaluate_rank
from reidkit.metrics.ranked_lists import nearest, rank_distances, rank_features, valid_queries

pytestmark = pytest.mark.numerics  # ranking in blocks vs brute force, thread counts


def brute_force(distmat, q_pids, g_pids, q_camids, g_camids, junk, k):
    """Per query by plain loops: AP (NaN when no true match), the k nearest kept items and their distances."""
    precisions, tops = np.full(len(q_pids), np.nan), []
    for row in range(len(q_pids)):
        keep = np.ones(len(g_pids), bool) if junk == "none" else \
            ~(((g_pids == q_pids[row]) & (g_camids == q_camids[row])) | (g_pids == -1))
        order = np.flatnonzero(keep)[np.argsort(distmat[row][keep], kind="stable")]
        hits = np.flatnonzero(g_pids[order] == q_pids[row]) + 1
        if hits.size:
            precisions[row] = np.mean(np.arange(1, hits.size + 1) / hits)
        tops.append(np.concatenate([order[:k], -np.ones(max(0, k - len(order)), np.int64)]))
    return precisions, np.stack(tops)


def brute_force_cameras(distmat, q_pids, g_pids, q_camids, g_camids, junk):
    """Rank-1 of query camera a in gallery camera b, from evaluate_rank on each sub-matrix."""
    q_cams, g_cams = sorted(set(q_camids.tolist())), sorted(set(g_camids.tolist()))
    rates, counts = [[None] * len(g_cams) for _ in q_cams], [[0] * len(g_cams) for _ in q_cams]
    for a, q_cam in enumerate(q_cams):
        for b, g_cam in enumerate(g_cams):
            rows, cols = q_camids == q_cam, g_camids == g_cam
            try:
                result = evaluate_rank(distmat[np.ix_(rows, cols)], q_pids[rows], g_pids[cols], q_camids[rows],
                                       g_camids[cols], max_rank=1, junk=junk)
            except ValueError:  # no valid query for this pair
                continue
            rates[a][b], counts[a][b] = float(result["cmc"][0]), int(result["num_valid_queries"])
    return {"query_cameras": q_cams, "gallery_cameras": g_cams, "rank1": rates, "queries": counts}


def labelled(seed, num_q=37, num_g=90):
    rng = np.random.default_rng(seed)
    return (rng.integers(-1, 6, num_q), rng.integers(-1, 7, num_g), rng.integers(0, 3, num_q),
            rng.integers(0, 4, num_g), rng)


@pytest.mark.parametrize("junk", ["market", "none"])
@pytest.mark.parametrize("query_chunk,threads", [(1, 1), (7, 3), (512, 2)])
def test_blocks_equal_brute_force_with_many_ties(junk, query_chunk, threads):
    q_pids, g_pids, q_camids, g_camids, rng = labelled(0)
    distmat = rng.integers(0, 5, (len(q_pids), len(g_pids))).astype(np.float32)  # ties everywhere
    lists = rank_distances(distmat, q_pids, g_pids, q_camids, g_camids, junk=junk, top_k=12,
                           query_chunk=query_chunk, num_threads=threads)
    precisions, tops = brute_force(distmat, q_pids, g_pids, q_camids, g_camids, junk, 12)
    np.testing.assert_array_equal(np.isnan(lists.ap), np.isnan(precisions))
    np.testing.assert_allclose(lists.ap, precisions, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(lists.top_indices, tops)
    expected_distances = np.where(tops >= 0, distmat[np.arange(len(q_pids))[:, None], tops], np.inf)
    np.testing.assert_array_equal(lists.top_distances, expected_distances)
    reference = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, junk=junk)
    np.testing.assert_array_equal(lists.metrics["cmc"], reference["cmc"])
    assert lists.metrics["mAP"] == reference["mAP"] and lists.metrics["mINP"] == reference["mINP"]
    assert lists.camera_rank1 == brute_force_cameras(distmat, q_pids, g_pids, q_camids, g_camids, junk)


def test_features_path_equals_the_full_matrix_and_is_permutation_consistent():
    q_pids, g_pids, q_camids, g_camids, rng = labelled(1, 50, 200)
    query, gallery = torch.randn(50, 16, generator=torch.Generator().manual_seed(1)), torch.randn(200, 16)
    lists = rank_features(query, gallery, q_pids, g_pids, q_camids, g_camids, metric="cosine", query_chunk=9,
                          gallery_chunk=64, top_k=5)
    whole = rank_distances(pairwise_distance(query, gallery, "cosine"), q_pids, g_pids, q_camids, g_camids,
                           top_k=5)
    np.testing.assert_array_equal(lists.top_indices, whole.top_indices)
    np.testing.assert_allclose(lists.ap, whole.ap, atol=1e-12)
    permutation = rng.permutation(50)  # queries in another order: the same rows, moved
    moved = rank_features(query[permutation], gallery, q_pids[permutation], g_pids, q_camids[permutation],
                          g_camids, metric="cosine", top_k=5)
    np.testing.assert_array_equal(moved.top_indices, lists.top_indices[permutation])
    assert moved.metrics["mAP"] == pytest.approx(lists.metrics["mAP"], abs=1e-12)


def test_adjust_hook_sees_every_block_once_and_its_change_counts():
    q_pids, g_pids, q_camids, g_camids, rng = labelled(2)
    query, gallery = torch.randn(len(q_pids), 8), torch.randn(len(g_pids), 8)
    seen = []

    def reverse(start, block):
        seen.append((start, len(block)))
        return -block

    lists = rank_features(query, gallery, q_pids, g_pids, q_camids, g_camids, adjust=reverse, query_chunk=10)
    reversed_lists = rank_distances(-pairwise_distance(query, gallery), q_pids, g_pids, q_camids, g_camids)
    assert seen == [(0, 10), (10, 10), (20, 10), (30, 7)]
    np.testing.assert_array_equal(lists.top_indices, reversed_lists.top_indices)
    assert lists.metrics["mAP"] == pytest.approx(reversed_lists.metrics["mAP"], abs=1e-12)


def test_nearest_by_hand():
    block = torch.tensor([[3.0, 1.0, 1.0, 0.0, 1.0],
                          [float("inf"), 2.0, float("inf"), float("inf"), float("inf")]])
    indices, values = nearest(block, 3)
    np.testing.assert_array_equal(indices, [[3, 1, 2], [1, -1, -1]])  # ties by column; inf → -1
    np.testing.assert_array_equal(values, [[0.0, 1.0, 1.0], [2.0, np.inf, np.inf]])
    indices, _ = nearest(block[:, :2], 4)  # fewer columns than k: padded
    np.testing.assert_array_equal(indices, [[1, 0, -1, -1], [1, -1, -1, -1]])


def test_camera_pairs_on_a_case_solved_by_hand():
    q_pids, q_camids = np.array([1, 2]), np.array([0, 1])
    g_pids, g_camids = np.array([1, 2, 2, 1]), np.array([1, 1, 0, 0])
    distmat = np.array([[0.5, 0.1, 0.9, 0.0],    # pid 1 cam 0: in cam 1, g1 (pid 2) beats g0 → miss
                        [0.3, 0.0, 0.2, 0.1]])   # pid 2 cam 1: in cam 0, g3 (pid 1) beats g2 → miss
    table = rank_distances(distmat, q_pids, g_pids, q_camids, g_camids).camera_rank1
    assert table == {"query_cameras": [0, 1], "gallery_cameras": [0, 1], "rank1": [[None, 0.0], [0.0, None]],
                     "queries": [[0, 1], [1, 0]]}
    distmat[0, 0] = 0.05
    assert rank_distances(distmat, q_pids, g_pids, q_camids, g_camids).camera_rank1["rank1"][0][1] == 1.0


def test_valid_queries_by_hand():
    g_pids, g_camids = np.array([1, 1, 2, -1]), np.array([0, 1, 0, 2])
    q_pids, q_camids = np.array([1, 2, 2, 3, -1]), np.array([0, 0, 1, 0, 0])
    np.testing.assert_array_equal(valid_queries(q_pids, q_camids, g_pids, g_camids, "market"),
                                  [True, False, True, False, False])
    np.testing.assert_array_equal(valid_queries(q_pids, q_camids, g_pids, g_camids, "none"),
                                  [True, True, True, False, True])
