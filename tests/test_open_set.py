"""Open-set figures: a hand-made score set, brute force over every threshold, ties, pair order, blocks."""

import numpy as np
import pytest
import torch

from _exact_data import exact_rows

from reidkit.data.build import hold_out_identities
from reidkit.data.datasets import ReidDataset
from reidkit.distances import pairwise_distance
from reidkit.errors import DatasetError
from reidkit.metrics.open_set import open_set_features, open_set_scores, open_set_within

pytestmark = pytest.mark.numerics  # ROC/EER under pair order and block sizes

GENUINE = [0.1, 0.2, 0.3, 0.6]
IMPOSTOR = [0.25, 0.4, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]


def one_query(genuine, impostor, target_fpr):
    """One query of pid 1 against a gallery of its genuine and impostor distances (junk rule off)."""
    distances = np.array([genuine + impostor], np.float32)
    g_pids = [1] * len(genuine) + [2] * len(impostor)
    return open_set_scores(distances, [1], g_pids, [0], [0] * distances.shape[1], junk="none",
                           target_fpr=target_fpr)


def test_hand_made_scores():
    result = one_query(GENUINE, IMPOSTOR, target_fpr=0.1)
    assert (result["num_genuine"], result["num_impostor"]) == (4, 10)
    # accept ≤ 0.1: (FPR 0, FNR .75); ≤ 0.2: (0, .5); ≤ 0.3: (.1, .25); ≤ 0.6: (.3, 0)
    # → EER .25 just above 0.3
    assert result["eer"] == pytest.approx(0.25)
    assert result["eer_threshold"] == pytest.approx(0.3) and result["eer_threshold"] > np.float32(0.3)
    # FPR 0.1: one impostor may pass → the 2nd smallest impostor, 0.4; accepted: 0.25 (FPR .1), 3 of 4 genuine
    assert result["threshold"] == pytest.approx(0.4)
    assert result["fpr_at_threshold"] == pytest.approx(0.1) and result["tpr_at_threshold"] == pytest.approx(0.75)
    # FPR 1e-2 .. 1e-4: no impostor may pass → threshold 0.25 → genuine 0.1, 0.2 accepted
    assert result["tpr_at_fpr"] == pytest.approx({"0.01": 0.5, "0.001": 0.5, "0.0001": 0.5})
    assert one_query(GENUINE, IMPOSTOR, target_fpr=0.25)["threshold"] == pytest.approx(0.5)
    roc = result["roc"]
    # the last vertex of each FPR (the upper envelope): (0, .5), (.1, .75), (.3, 1)
    assert roc["fpr"] == pytest.approx([0.0, 0.1, 0.3]) and roc["tpr"] == pytest.approx([0.5, 0.75, 1.0])
    histogram = result["histogram"]
    assert sum(histogram["same"]) == 4 and sum(histogram["different"]) == 10
    assert histogram["edges"][0] == 0.0 and histogram["edges"][-1] == pytest.approx(1.3)


def test_ties_across_the_threshold_are_all_rejected():
    # three impostors tied at 0.3 with a genuine pair: FPR 0.2 allows two, so all three (and the tied
    # genuine pair) must be rejected: the threshold is 0.3 with strict acceptance d < 0.3
    result = one_query([0.1, 0.3], [0.3, 0.3, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1], target_fpr=0.2)
    assert result["threshold"] == pytest.approx(0.3)
    assert result["fpr_at_threshold"] == 0.0 and result["tpr_at_threshold"] == 0.5


def brute_force(genuine: np.ndarray, impostor: np.ndarray, target_fpr: float) -> dict:
    """Every threshold tried: all distinct values, the float32 just above each, and ±inf."""
    values = np.unique(np.concatenate([genuine, impostor]))
    candidates = np.concatenate([values, np.nextafter(values, np.float32(np.inf)), [-np.inf, np.inf]])
    fpr = np.array([(impostor < t).mean() for t in candidates])
    fnr = np.array([1 - (genuine < t).mean() for t in candidates])
    threshold = candidates[fpr <= target_fpr].max()
    return {"eer": np.maximum(fpr, fnr).min(), "threshold": threshold,
            "tpr_at_threshold": (genuine < threshold).mean(), "fpr_at_threshold": (impostor < threshold).mean()}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target_fpr", [0.001, 0.05, 0.3])
def test_brute_force_over_all_thresholds(seed, target_fpr):
    rng = np.random.default_rng(seed)
    q_pids, g_pids = rng.integers(0, 6, 30), rng.integers(0, 6, 70)
    q_camids, g_camids = rng.integers(0, 3, 30), rng.integers(0, 3, 70)
    # distances on a grid of 1/32 (exact in float32) with many ties; genuine pairs lower on average
    same = q_pids[:, None] == g_pids[None, :]
    distances = (np.round(rng.uniform(0, 1.5, (30, 70)) * 32 - 12 * same) / 32).clip(-0.25, None).astype(np.float32)
    kept = ~(same & (q_camids[:, None] == g_camids[None, :]))
    expected = brute_force(distances[same & kept], distances[kept & ~same], target_fpr)
    result = open_set_scores(distances, q_pids, g_pids, q_camids, g_camids, target_fpr=target_fpr, chunk_size=7)
    assert result["num_genuine"] == (same & kept).sum() and result["num_impostor"] == (kept & ~same).sum()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    genuine, impostor = distances[same & kept], distances[kept & ~same]
    for fpr, tpr in result["tpr_at_fpr"].items():
        assert tpr == pytest.approx(brute_force(genuine, impostor, float(fpr))["tpr_at_threshold"])
    for fpr, tpr, threshold in zip(*result["roc"].values()):  # each vertex: accept every d ≤ its threshold
        assert (fpr, tpr) == pytest.approx(((impostor <= threshold).mean(), (genuine <= threshold).mean()))


def test_invariant_to_pair_order_and_blocks():
    # Exact-in-float32 features (tests/_exact_data.py): every block shape and order gives the same distance bits,
    # so the figures must be equal, not merely close (with Gaussian features the thresholds differ by an ulp
    # between block sizes on some CPUs' kernels). The many exact ties exercise the tie rules as well.
    rng = np.random.default_rng(3)
    query, gallery = torch.from_numpy(exact_rows(rng, 40)), torch.from_numpy(exact_rows(rng, 90))
    q_pids, g_pids = rng.integers(0, 8, 40), rng.integers(0, 8, 90)
    q_camids, g_camids = rng.integers(0, 4, 40), rng.integers(0, 4, 90)
    reference = open_set_features(query, gallery, q_pids, g_pids, q_camids, g_camids, target_fpr=0.01, chunk_size=40)
    rows, columns = rng.permutation(40), rng.permutation(90)
    shuffled = open_set_features(query[rows], gallery[columns], q_pids[rows], g_pids[columns], q_camids[rows],
                                 g_camids[columns], target_fpr=0.01, chunk_size=6)
    assert shuffled == reference
    matrix = pairwise_distance(query, gallery, "cosine").numpy()
    assert open_set_scores(matrix, q_pids, g_pids, q_camids, g_camids, target_fpr=0.01) == reference


def test_within_one_set_counts_each_unordered_pair_once():
    rng = np.random.default_rng(4)
    features, pids, camids = torch.from_numpy(exact_rows(rng, 25)), rng.integers(0, 5, 25), rng.integers(0, 3, 25)
    result = open_set_within(features, pids, camids, metric="euclidean", target_fpr=0.1, chunk_size=4)
    distances = pairwise_distance(features, features, "euclidean").numpy()
    upper = np.triu(np.ones((25, 25), bool), k=1)
    same = pids[:, None] == pids[None, :]
    kept = upper & ~(same & (camids[:, None] == camids[None, :]))
    expected = brute_force(distances[same & kept], distances[kept & ~same], 0.1)
    assert result["num_genuine"] == (same & kept).sum() and result["num_impostor"] == (kept & ~same).sum()
    assert result["threshold"] == expected["threshold"] and result["eer"] == pytest.approx(expected["eer"])
    order = rng.permutation(25)
    assert open_set_within(features[order], pids[order], camids[order], metric="euclidean", target_fpr=0.1) == result


def test_bad_inputs():
    with pytest.raises(ValueError, match="target_fpr"):
        one_query(GENUINE, IMPOSTOR, target_fpr=1.0)
    with pytest.raises(ValueError, match="genuine and impostor"):
        one_query([], IMPOSTOR, target_fpr=0.1)
    with pytest.raises(ValueError, match="NaN"):
        one_query([float("nan")], IMPOSTOR, target_fpr=0.1)
    with pytest.raises(ValueError, match="expected distances"):
        open_set_scores(np.zeros((2, 3)), [1, 2], [1, 2], [0, 0], [0, 0])


def test_hold_out_identities_moves_the_highest_pids():
    train = [("a", 0, 0), ("b", 1, 0), ("c", 2, 1), ("d", 2, 0), ("e", 1, 1)]
    dataset = ReidDataset("toy", "/", train, [], [], train_raw_pids=[5, 7, 9])
    held = hold_out_identities(dataset, 1)
    assert held.train == [("a", 0, 0), ("b", 1, 0), ("e", 1, 1)] and held.train_raw_pids == [5, 7]
    assert held.holdout == [("c", 9, 1), ("d", 9, 0)] and hold_out_identities(dataset, 0) is dataset
    with pytest.raises(DatasetError, match="leaves 1 of the 3 training identities"):
        hold_out_identities(dataset, 2)
