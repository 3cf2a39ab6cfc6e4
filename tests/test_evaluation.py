"""reidkit.engine.evaluation: each evaluation protocol gives exactly what its metric function gives."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reidkit.data.transforms import build_test_transform
from reidkit.engine.evaluation import attribute_accuracy, describe_metrics, eval_record, evaluate_distances
from reidkit.metrics.rank import evaluate_rank
from reidkit.metrics.single_shot import evaluate_single_gallery_shot

pytestmark = pytest.mark.numerics  # evaluation of features vs matrices

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")


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


class _FixedAttributeLogits(torch.nn.Module):
    """A model whose attribute logits are fixed per sample, handed out in loader order."""

    def __init__(self, logits: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.logits, self.seen = logits, 0
        self.attribute_heads = torch.nn.Identity()

    def forward(self, images):
        rows = slice(self.seen, self.seen + len(images))
        self.seen += len(images)
        return {"attr_logits": {name: values[rows] for name, values in self.logits.items()}}


def test_attribute_accuracy_by_hand(tmp_path):
    """Three gallery images with attributes (1-based codes) and one distractor (pid 9) without.

    gender codes 1, 2, 2 → classes 0, 1, 1; predicted 0, 1, 0 ⇒ 2/3. age codes 2, 3, 1 → classes 1, 2, 0;
    predicted 1, 0, 1 ⇒ 1/3. Without the `- 1`: gender 0/3; dividing by all 4 samples: 2/4 and 1/4."""
    samples = []
    for index, pid in enumerate([1, 9, 2, 3]):
        path = tmp_path / f"{pid:04d}_c1s1_{index:06d}_00.jpg"
        Image.new("RGB", (4, 8), (40 * index, 0, 0)).save(path)
        samples.append((str(path), pid, 0))
    attributes = {1: {"gender": 1, "age": 2}, 2: {"gender": 2, "age": 3}, 3: {"gender": 2, "age": 1}}
    model = _FixedAttributeLogits({
        "gender": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
        "age": torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    })
    accuracy = attribute_accuracy(model, samples, attributes, build_test_transform(8, 4), batch_size=2, workers=0,
                                  device="cpu")
    assert model.seen == 3  # the distractor without attributes is not even loaded
    assert accuracy == {"gender": pytest.approx(2 / 3), "age": pytest.approx(1 / 3)}


def test_average_query_expansion_in_evaluate_model(tmp_path):
    """eval.query_expansion=average: `query_expanded` is evaluate_rank on the distances of
    average_query_expansion(query, gallery, qe_top_k) of the evaluated features (an untrained ResNet-18
    on a tiny synthetic set)."""
    from reidkit.config import load_config
    from reidkit.data.build import build_dataset
    from reidkit.distances import pairwise_distance
    from reidkit.engine.evaluation import evaluate_model
    from reidkit.metrics import alpha_query_expansion, average_query_expansion
    from reidkit.models.reid import build_model, model_kwargs

    config = load_config(TINY, [f"data.root={tmp_path / 'data'}", "data.synthetic_identities=8",
                                "eval.query_expansion=average", "eval.qe_top_k=3", "eval.qe_alpha=3.0"])
    dataset = build_dataset(config.data, progress=False)
    torch.manual_seed(0)
    model = build_model(num_classes=dataset.num_train_pids, **model_kwargs(config.model)).eval()
    evaluation = evaluate_model(model, dataset, config.eval, 32, 16, progress=False, protocol="all_gallery")
    labels = [np.array([s[i] for s in split]) for i in (1, 2) for split in (dataset.query, dataset.gallery)]
    q_pids, g_pids, q_cams, g_cams = labels

    def rank_of(query, gallery):
        distmat = pairwise_distance(query, gallery, config.eval.metric).numpy()
        return evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=config.eval.max_rank)

    expected = rank_of(*average_query_expansion(evaluation.query_features, evaluation.gallery_features, top_k=3))
    expanded = evaluation.metrics["query_expanded"]
    assert expanded["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert expanded["mINP"] == pytest.approx(expected["mINP"], abs=1e-6)
    assert expanded["cmc"] == pytest.approx(expected["cmc"].tolist(), abs=1e-6)
    # What a wrong branch would report differs on this data: αQE with qe_alpha, the default top-k, no QE.
    for wrong in (rank_of(*alpha_query_expansion(evaluation.query_features, evaluation.gallery_features, 3, 3.0)),
                  rank_of(*average_query_expansion(evaluation.query_features, evaluation.gallery_features, 5)),
                  rank_of(evaluation.query_features, evaluation.gallery_features)):
        assert (wrong["mAP"], wrong["cmc"][0]) != pytest.approx((expected["mAP"], expected["cmc"][0]), abs=1e-6)


def test_attribute_accuracy_and_rescoring_leave_the_model_training(tmp_path):
    """evaluate_model runs mid-training (train.eval_every): its helpers must hand the model back in the mode
    they found it, as extract_outputs does, or the following epochs train with BatchNorm in eval mode."""
    from reidkit.engine.pair_rescoring import PairHeadRescoring
    from reidkit.models.reid import ReidModel

    path = tmp_path / "0001_c1s1_000000_00.jpg"
    Image.new("RGB", (4, 8)).save(path)
    model = _FixedAttributeLogits({"gender": torch.tensor([[1.0, 0.0]])}).train()
    attribute_accuracy(model, [(str(path), 1, 0)], {1: {"gender": 1}}, build_test_transform(8, 4), 1, 0, "cpu")
    assert model.training
    pair_model = ReidModel(torch.nn.Identity(), feat_dim=4, num_classes=3, pair_head=True).train()
    PairHeadRescoring(pair_model, torch.randn(2, 4), torch.randn(3, 4), k=2)(0, torch.zeros(2, 3))
    assert pair_model.training


def test_non_finite_model_outputs_are_refused_with_the_fix():
    from reidkit.engine.extraction import extract_outputs
    from reidkit.errors import ReidkitError
    from reidkit.models.reid import build_model

    model = build_model("resnet18", num_classes=3)
    loader = [{"images": torch.randn(2, 3, 32, 16)}, {"images": torch.randn(2, 3, 32, 16)}]
    assert torch.isfinite(extract_outputs(model, loader, ("features",), progress=False)["features"]).all()
    with torch.no_grad():
        model.head.bn.running_var[5] = float("nan")  # diverged BNNeck statistics: bn_features NaN in eval
    with pytest.raises(ReidkitError, match="'bn_features' outputs, first for image 0 .*earlier checkpoint"):
        extract_outputs(model, loader, ("bn_features",), progress=False)
    assert model.training  # the mode is restored after the error
    loader[1]["images"][1] = float("nan")  # the fourth image: named by its place in the split
    with pytest.raises(ReidkitError, match="'features' outputs, first for image 3 of the split"):
        extract_outputs(model, loader, ("features",), progress=False)


def test_open_set_figures_in_evaluate_model_from_held_out_pairs(tmp_path):
    """eval.open_set_pairs=holdout: `open_set` from the pairs of the held-out identities' images (counted here by
    hand); the test pairs' figures are those of `open_set_scores` on the returned distances."""
    from reidkit.config import load_config
    from reidkit.data.build import build_dataset
    from reidkit.distances import pairwise_distance
    from reidkit.engine.evaluation import evaluate_model, open_set_figures
    from reidkit.metrics.open_set import open_set_scores
    from reidkit.models.reid import build_model, model_kwargs

    config = load_config(TINY, [f"data.root={tmp_path / 'data'}", "data.synthetic_identities=8",
                                "data.holdout_identities=2", "eval.open_set_pairs=holdout", "eval.open_set_fpr=0.05"])
    dataset = build_dataset(config.data, progress=False)
    torch.manual_seed(0)
    model = build_model(num_classes=dataset.num_train_pids, **model_kwargs(config.model)).eval()
    evaluation = evaluate_model(model, dataset, config.eval, 32, 16, progress=False, protocol="all_gallery")
    figures = evaluation.metrics["open_set"]
    assert (figures["pairs"], figures["metric"], figures["target_fpr"]) == ("holdout", "cosine", 0.05)
    held = dataset.holdout
    assert dataset.num_train_pids == 2 and len({pid for _, pid, _ in held}) == 2
    same = sum(a[1] == b[1] and a[2] != b[2] for i, a in enumerate(held) for b in held[i + 1:])
    other = sum(a[1] != b[1] for i, a in enumerate(held) for b in held[i + 1:])
    assert (figures["num_genuine"], figures["num_impostor"]) == (same, other)
    config.eval.open_set_pairs = "test"  # the test pairs: the figures of the [Q, G] distances
    labels = [[s[i] for s in split] for i in (1, 2) for split in (dataset.query, dataset.gallery)]
    distances = pairwise_distance(evaluation.query_features, evaluation.gallery_features, "cosine")
    expected = open_set_scores(distances, *labels[:2], *labels[2:], target_fpr=0.05)
    figures = open_set_figures(config.eval, evaluation.query_features, evaluation.gallery_features, dataset)
    assert figures == {"pairs": "test", "metric": "cosine", **expected}
