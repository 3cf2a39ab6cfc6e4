"""reidkit.engine.evaluator: each evaluation protocol gives exactly what its metric function gives."""

import numpy as np
import pytest

from reidkit.engine.evaluator import describe_metrics, eval_record, evaluate_distances
from reidkit.metrics.rank import evaluate_rank
from reidkit.metrics.single_shot import evaluate_single_gallery_shot


def random_problem(seed: int = 0):
    """8 queries and 40 gallery items: 6 identities over 3 cameras, several gallery images per identity,
    junk (pid -1) items, a distractor identity without queries, and tied distances."""
    rng = np.random.default_rng(seed)
    q_pids, q_cams = rng.integers(0, 6, 8), rng.integers(0, 3, 8)
    g_pids, g_cams = rng.integers(-1, 7, 40), rng.integers(0, 3, 40)
    distmat = np.round(rng.random((8, 40)), 1).astype(np.float32)  # one decimal: many ties
    query = [(f"q{i}.jpg", int(pid), int(cam)) for i, (pid, cam) in enumerate(zip(q_pids, q_cams))]
    gallery = [(f"g{i}.jpg", int(pid), int(cam)) for i, (pid, cam) in enumerate(zip(g_pids, g_cams))]
    return distmat, query, gallery, (q_pids, g_pids, q_cams, g_cams)


def expected_summary(result: dict) -> dict:
    cmc = result["cmc"]
    return {"rank1": cmc[0], "rank5": cmc[4], "rank10": cmc[9], "mAP": result["mAP"], "mINP": result["mINP"],
            "num_valid_queries": result["num_valid_queries"], "cmc": list(cmc)}


@pytest.mark.parametrize("junk", ["market", "none"])
def test_single_gallery_shot_equals_evaluate_single_gallery_shot(junk):
    distmat, query, gallery, labels = random_problem()
    summary = evaluate_distances(distmat, query, gallery, max_rank=12, junk=junk, protocol="single_gallery_shot",
                                 repeats=4)
    direct = evaluate_single_gallery_shot(distmat, *labels, max_rank=12, junk=junk, repeats=4, seed=0)
    assert summary == {"protocol": "single_gallery_shot", "repeats": 4, **expected_summary(direct)}
    all_gallery = evaluate_distances(distmat, query, gallery, max_rank=12, junk=junk)
    assert all_gallery["mAP"] != summary["mAP"]  # the protocols really differ on this matrix


@pytest.mark.parametrize("junk", ["market", "none"])
def test_all_gallery_equals_evaluate_rank(junk):
    distmat, query, gallery, labels = random_problem()
    summary = evaluate_distances(distmat, query, gallery, max_rank=12, junk=junk, protocol="all_gallery")
    direct = evaluate_rank(distmat, *labels, max_rank=12, junk=junk)
    assert summary == {"protocol": "all_gallery", **expected_summary(direct)}


def test_unresolved_protocol_is_refused():
    distmat, query, gallery, _ = random_problem()
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate_distances(distmat, query, gallery, protocol="auto")


def test_summaries_name_the_protocol():
    distmat, query, gallery, _ = random_problem()
    single = evaluate_distances(distmat, query, gallery, protocol="single_gallery_shot", repeats=3)
    everything = evaluate_distances(distmat, query, gallery)
    assert "(single-gallery-shot, mean of 3 draws)" in describe_metrics(single)
    assert "single" not in describe_metrics(everything)
    assert eval_record(single)["protocol"] == "single_gallery_shot" and eval_record(single)["repeats"] == 3
    assert eval_record(everything)["protocol"] == "all_gallery" and "repeats" not in eval_record(everything)
