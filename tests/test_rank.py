"""Tests of reidkit.metrics.rank: hand-worked cases and brute-force references by the definitions
(Market-1501 protocol and the single-gallery-shot protocol)."""

import numpy as np
import pytest
import torch

from reidkit.metrics import evaluate_rank
from reidkit.metrics import rank as rank_module
from reidkit.metrics.single_shot import evaluate_single_gallery_shot

pytestmark = pytest.mark.numerics  # CMC/mAP vs brute force


def brute_force_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, junk="market"):
    """One query at a time, by the definitions; returns None when no query is valid."""
    cmcs, aps, inps = [], [], []
    for i in range(len(q_pids)):
        order = sorted(range(len(g_pids)), key=lambda j: (distmat[i][j], j))
        if junk == "market":
            query_label = (q_pids[i], q_camids[i])
            order = [j for j in order if g_pids[j] != -1 and (g_pids[j], g_camids[j]) != query_label]
        relevant = [g_pids[j] == q_pids[i] for j in order]
        if not any(relevant):
            continue
        hits, precision_sum, last = 0, 0.0, 0
        for rank, is_match in enumerate(relevant, start=1):
            if is_match:
                hits += 1
                precision_sum += hits / rank
                last = rank
        first = relevant.index(True) + 1
        cmcs.append([1.0 if first <= k else 0.0 for k in range(1, max_rank + 1)])
        aps.append(precision_sum / hits)
        inps.append(hits / last)
    if not aps:
        return None
    return {"cmc": np.mean(cmcs, axis=0), "mAP": np.mean(aps), "mINP": np.mean(inps),
            "num_valid_queries": len(aps)}


def assert_same_result(result, expected, atol=1e-12):
    assert result["num_valid_queries"] == expected["num_valid_queries"]
    np.testing.assert_allclose(result["cmc"], expected["cmc"], rtol=0, atol=atol)
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=atol)
    assert result["mINP"] == pytest.approx(expected["mINP"], abs=atol)


# Query: pid 1, camera 0.  Gallery (index: pid, camera, distance):
#   0: 1, c0, 0.1  junk (same pid and camera)      3: 2, c1, 0.4  other identity
#   1: 0, c1, 0.2  distractor, never a match       4: 1, c2, 0.5  true match
#   2: 1, c1, 0.3  true match                      5: 0, c0, 0.6  distractor in the query's camera: kept
# Ranking after junk removal: [g1, g2*, g3, g4*, g5] -> true matches at ranks 2 and 4, R = 2.
# AP = (1/2)(1/2 + 2/4) = 0.5; INP = 2/4 = 0.5; CMC = [0, 1, 1].
HAND_DIST = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
HAND_G_PIDS, HAND_G_CAMS = [1, 0, 1, 2, 1, 0], [0, 1, 1, 1, 2, 0]


def test_junk_rule_and_distractors_hand_worked():
    result = evaluate_rank(HAND_DIST, [1], HAND_G_PIDS, [0], HAND_G_CAMS, max_rank=3)
    np.testing.assert_array_equal(result["cmc"], [0.0, 1.0, 1.0])
    assert result["mAP"] == pytest.approx(0.5)
    assert result["mINP"] == pytest.approx(0.5)
    assert result["num_valid_queries"] == 1


def test_junk_none_keeps_same_camera_matches_hand_worked():
    # Nothing removed: [g0*, g1, g2*, g3, g4*, g5] -> ranks 1, 3, 5.
    # AP = (1/1 + 2/3 + 3/5)/3 = 34/45, INP = 3/5.
    result = evaluate_rank(HAND_DIST, [1], HAND_G_PIDS, [0], HAND_G_CAMS, max_rank=3, junk="none")
    np.testing.assert_array_equal(result["cmc"], [1.0, 1.0, 1.0])
    assert result["mAP"] == pytest.approx(34 / 45)
    assert result["mINP"] == pytest.approx(3 / 5)


def test_query_without_match_is_skipped_and_not_counted():
    # Query 1 (pid 3) has no pid-3 gallery item; query 2 (pid 2, camera 1) only has g3, which is junk.
    distmat = np.repeat(HAND_DIST, 3, axis=0)
    result = evaluate_rank(distmat, [1, 3, 2], HAND_G_PIDS, [0, 0, 1], HAND_G_CAMS, max_rank=3)
    assert result["num_valid_queries"] == 1
    np.testing.assert_array_equal(result["cmc"], [0.0, 1.0, 1.0])
    assert result["mAP"] == pytest.approx(0.5)
    assert result["mINP"] == pytest.approx(0.5)


def test_gallery_pid_minus_one_is_junk_under_market():
    # g0 (pid -1) is removed under "market": ranking [g1*] -> AP 1; under "none" it is a negative before g1.
    distmat, g_pids, g_cams = [[0.1, 0.2]], [-1, 1], [1, 1]
    market = evaluate_rank(distmat, [1], g_pids, [0], g_cams, max_rank=2)
    none = evaluate_rank(distmat, [1], g_pids, [0], g_cams, max_rank=2, junk="none")
    assert market["mAP"] == pytest.approx(1.0) and none["mAP"] == pytest.approx(0.5)


def test_ties_are_ordered_by_gallery_index():
    # Query pid 1, camera 0. g3 (match) at 0.5, then a tie at 1.0 between g0 (pid 2), g1 (match), g2 (pid 3).
    # Stable order: [g3*, g0, g1*, g2] -> ranks 1, 3; AP = (1 + 2/3)/2 = 5/6; INP = 2/3.
    distmat = [[1.0, 1.0, 1.0, 0.5]]
    result = evaluate_rank(distmat, [1], [2, 1, 3, 1], [0], [1, 1, 1, 2], max_rank=2)
    assert result["mAP"] == pytest.approx(5 / 6)
    assert result["mINP"] == pytest.approx(2 / 3)
    # All distances tied: the first true match is at its gallery index + 1.
    for match_index in range(4):
        g_pids = [1 if j == match_index else 5 for j in range(4)]
        result = evaluate_rank([[2.0] * 4], [1], g_pids, [0], [1] * 4, max_rank=4)
        np.testing.assert_array_equal(result["cmc"], [0.0] * match_index + [1.0] * (4 - match_index))
        assert result["mAP"] == pytest.approx(1 / (match_index + 1))


def test_gallery_shorter_than_max_rank_pads_with_one():
    # Query 0: [g1*, g0] (g2 junk) -> first match at rank 1. Query 1: [g0, g1*] -> rank 2.
    # Only 2 items remain per query but max_rank = 5: CMC = [1/2, 1, 1, 1, 1], monotone, no stale values.
    distmat = [[0.2, 0.1, 0.0], [0.1, 0.2, 0.0]]
    result = evaluate_rank(distmat, [1, 1], [7, 1, 1], [0, 0], [1, 1, 0], max_rank=5)
    np.testing.assert_array_equal(result["cmc"], [0.5, 1.0, 1.0, 1.0, 1.0])
    assert result["mAP"] == pytest.approx((1.0 + 0.5) / 2)


def random_problem(seed, num_query, num_gallery, integer_distances):
    rng = np.random.default_rng(seed)
    if integer_distances:  # many ties
        distmat = rng.integers(0, 4, (num_query, num_gallery)).astype(np.float64)
    else:
        distmat = rng.random((num_query, num_gallery))
    q_pids, g_pids = rng.integers(-1, 6, num_query), rng.integers(-1, 6, num_gallery)
    q_cams, g_cams = rng.integers(0, 3, num_query), rng.integers(0, 3, num_gallery)
    return distmat, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("junk", ["market", "none"])
@pytest.mark.parametrize("integer_distances", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_random_problems(seed, integer_distances, junk):
    distmat, *labels = random_problem(seed, 25, 40, integer_distances)
    expected = brute_force_rank(distmat, *labels, max_rank=10, junk=junk)
    if expected is None:
        with pytest.raises(ValueError, match="no valid query"):
            evaluate_rank(distmat, *labels, max_rank=10, junk=junk)
    else:
        assert_same_result(evaluate_rank(distmat, *labels, max_rank=10, junk=junk), expected)


@pytest.mark.parametrize("integer_distances", [True, False])
def test_matches_brute_force_on_gallery_larger_than_histogram(integer_distances):
    # More gallery items than histogram cells, so cells hold several items and matches share cells.
    distmat, *labels = random_problem(1, 4, rank_module._NUM_CELLS * 2 + 3, integer_distances)
    expected = brute_force_rank(distmat, *labels, max_rank=50)
    assert_same_result(evaluate_rank(distmat, *labels, max_rank=50, chunk_size=3), expected)


def test_matches_brute_force_with_constant_rows_and_infinities():
    distmat, *labels = random_problem(2, 12, 30, integer_distances=False)
    distmat[0] = 0.5  # zero span
    distmat[1, ::3] = np.inf
    distmat[2, 1::4] = -np.inf
    distmat[3, :] = np.inf
    distmat[4] = [1e308, -1e308] * 15  # span overflows
    expected = brute_force_rank(distmat, *labels, max_rank=10)
    assert_same_result(evaluate_rank(distmat, *labels, max_rank=10, chunk_size=5), expected)


@pytest.mark.parametrize("to_torch", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtypes_containers_chunks_and_threads_give_identical_results(dtype, to_torch):
    distmat, *labels = random_problem(3, 40, 50, integer_distances=True)
    expected = brute_force_rank(distmat, *labels, max_rank=20)
    distmat = distmat.astype(dtype)
    if to_torch:
        distmat, labels = torch.from_numpy(distmat), [torch.from_numpy(x) for x in labels]
    settings = [(1, 1), (7, 1), (7, 3), (1000, None)]  # (chunk_size, num_threads)
    results = [evaluate_rank(distmat, *labels, max_rank=20, chunk_size=size, num_threads=threads)
               for size, threads in settings]
    assert_same_result(results[0], expected)
    for other in results[1:]:
        np.testing.assert_array_equal(other["cmc"], results[0]["cmc"])
        assert (other["mAP"], other["mINP"], other["num_valid_queries"]) == (
            results[0]["mAP"], results[0]["mINP"], results[0]["num_valid_queries"])


def test_output_types_and_inputs_unchanged():
    distmat, *labels = random_problem(4, 10, 30, integer_distances=False)
    distmat = distmat.astype(np.float32)
    originals = [distmat.copy()] + [x.copy() for x in labels]
    tensor = torch.from_numpy(distmat.copy())
    evaluate_rank(tensor, *labels, max_rank=5)
    result = evaluate_rank(distmat, *labels, max_rank=5)
    for before, after in zip(originals, [distmat] + labels):
        np.testing.assert_array_equal(before, after)
    torch.testing.assert_close(tensor, torch.from_numpy(originals[0]))
    assert result["cmc"].dtype == np.float64 and result["cmc"].shape == (5,)
    assert isinstance(result["mAP"], float) and isinstance(result["mINP"], float)
    assert isinstance(result["num_valid_queries"], int)
    assert np.all(np.diff(result["cmc"]) >= 0) and 0.0 <= result["cmc"][0] <= result["cmc"][-1] <= 1.0


def test_single_camera_data_raises_with_advice_and_junk_none_works():
    distmat = [[0.1, 0.2], [0.2, 0.1]]
    with pytest.raises(ValueError, match="junk='none'"):
        evaluate_rank(distmat, [1, 2], [1, 2], [0, 0], [0, 0])
    result = evaluate_rank(distmat, [1, 2], [1, 2], [0, 0], [0, 0], max_rank=2, junk="none")
    np.testing.assert_array_equal(result["cmc"], [1.0, 1.0])
    assert result["mAP"] == 1.0 and result["num_valid_queries"] == 2


def test_nan_raises_with_count():
    distmat = np.ones((3, 4))
    distmat[0, 1] = distmat[2, 3] = distmat[2, 0] = np.nan
    with pytest.raises(ValueError, match="3 NaN"):
        evaluate_rank(distmat, [1, 1, 1], [1, 1, 2, 2], [0, 0, 0], [1, 1, 1, 1], chunk_size=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"junk": "duke"}, "market"),
        ({"q_pids": [1, 2, 3]}, "q_pids"),
        ({"g_camids": [0]}, "g_camids"),
        ({"distmat": np.ones(3)}, "2-D"),
        ({"q_pids": [1.5, 2.0]}, "integers"),
        ({"max_rank": 0}, "max_rank"),
        ({"num_threads": 0}, "num_threads"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    arguments = {"distmat": np.ones((2, 3)), "q_pids": [1, 2], "g_pids": [1, 2, 3], "q_camids": [0, 0],
                 "g_camids": [1, 1, 1]} | kwargs
    with pytest.raises(ValueError, match=message):
        evaluate_rank(**arguments)


# ---------------------------------------------------------------------------------------------------
# Single-gallery-shot protocol (CUHK03 classic splits)


def brute_force_single_shot(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, junk, repeats, seed):
    """By the documented definition: per repeat keys = rng.random(G); per query, each identity's
    allowed image with the smallest key; rank the query's match among them (ties by gallery index)."""
    rng = np.random.default_rng(seed)
    per_repeat = []
    for _ in range(repeats):
        keys = rng.random(len(g_pids))
        cmcs, aps = [], []
        for i in range(len(q_pids)):
            chosen = {}
            for j in range(len(g_pids)):
                if junk == "market" and g_pids[j] == -1:
                    continue
                if junk == "market" and g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i]:
                    continue
                if g_pids[j] not in chosen or keys[j] < keys[chosen[g_pids[j]]]:
                    chosen[g_pids[j]] = j
            if q_pids[i] not in chosen or (junk == "market" and q_pids[i] == -1):
                continue
            order = sorted(chosen.values(), key=lambda j: (distmat[i][j], j))
            rank = [g_pids[j] for j in order].index(q_pids[i]) + 1
            cmcs.append([1.0 if rank <= k else 0.0 for k in range(1, max_rank + 1)])
            aps.append(1.0 / rank)
        if not aps:
            return None
        per_repeat.append((np.mean(cmcs, axis=0), np.mean(aps), len(aps)))
    return {"cmc": np.mean([r[0] for r in per_repeat], axis=0), "mAP": np.mean([r[1] for r in per_repeat]),
            "mINP": np.mean([r[1] for r in per_repeat]), "num_valid_queries": per_repeat[0][2]}


@pytest.mark.parametrize("junk", ["market", "none"])
@pytest.mark.parametrize("integer_distances", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_single_shot_matches_brute_force(seed, integer_distances, junk):
    distmat, *labels = random_problem(seed, 20, 45, integer_distances)
    expected = brute_force_single_shot(distmat, *labels, max_rank=8, junk=junk, repeats=4, seed=seed)
    if expected is None:
        with pytest.raises(ValueError, match="no valid query"):
            evaluate_single_gallery_shot(distmat, *labels, max_rank=8, junk=junk, repeats=4, seed=seed)
        return
    result = evaluate_single_gallery_shot(distmat, *labels, max_rank=8, junk=junk, repeats=4, seed=seed,
                                          chunk_size=7)
    assert_same_result(result, expected)
    assert result["mAP"] == pytest.approx(result["mINP"])


def test_single_shot_with_one_image_per_identity_equals_evaluate_rank():
    # Nothing to draw: every identity has one gallery image (in another camera than its queries).
    rng = np.random.default_rng(7)
    distmat = rng.random((30, 12)).astype(np.float32)
    g_pids, g_cams = np.arange(12), np.ones(12, np.int64)
    q_pids, q_cams = rng.integers(0, 12, 30), np.zeros(30, np.int64)
    expected = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=12)
    for seed in (0, 1):
        result = evaluate_single_gallery_shot(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=12, seed=seed)
        assert_same_result(result, expected)


def test_single_shot_hand_worked_draw_frequencies():
    # Query pid 1 (camera 0). Gallery: g0 pid 1 cam 1 at 0.1, g1 pid 1 cam 1 at 0.9, g2 pid 2 at 0.5,
    # g3 pid 1 cam 0 (never drawn for this query). The drawn match is g0 (rank 1) or g1 (rank 2),
    # each with probability 1/2, so over many repeats rank-1 -> 1/2 and mAP -> (1 + 1/2)/2 = 3/4.
    distmat = [[0.1, 0.9, 0.5, 0.0]]
    result = evaluate_single_gallery_shot(distmat, [1], [1, 1, 2, 1], [0], [1, 1, 1, 0], max_rank=2,
                                          repeats=4000, seed=3)
    assert result["cmc"][0] == pytest.approx(0.5, abs=0.03)
    assert result["cmc"][1] == 1.0
    assert result["mAP"] == pytest.approx(0.75, abs=0.015)


def test_single_shot_seed_reproducible_and_repeats_average():
    distmat, *labels = random_problem(5, 30, 60, integer_distances=False)
    one = [evaluate_single_gallery_shot(distmat, *labels, max_rank=5, repeats=1, seed=s) for s in (0, 0, 1)]
    np.testing.assert_array_equal(one[0]["cmc"], one[1]["cmc"])
    assert one[0]["mAP"] == one[1]["mAP"]
    assert (one[0]["mAP"], list(one[0]["cmc"])) != (one[2]["mAP"], list(one[2]["cmc"]))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"repeats": 0}, "repeats"), ({"junk": "cuhk03"}, "junk"), ({"max_rank": 0}, "max_rank"),
     ({"g_pids": [1, 2]}, "g_pids")],
)
def test_single_shot_invalid_arguments_raise(kwargs, message):
    arguments = {"distmat": np.ones((2, 3)), "q_pids": [1, 2], "g_pids": [1, 2, 3], "q_camids": [0, 0],
                 "g_camids": [1, 1, 1]} | kwargs
    with pytest.raises(ValueError, match=message):
        evaluate_single_gallery_shot(**arguments)


def test_single_shot_nan_and_no_valid_query_raise():
    with pytest.raises(ValueError, match="1 NaN"):
        evaluate_single_gallery_shot([[np.nan, 1.0]], [1], [1, 2], [0], [1, 1])
    with pytest.raises(ValueError, match="junk='none'"):
        evaluate_single_gallery_shot([[0.1, 0.2]], [1], [1, 2], [0], [0, 0])
