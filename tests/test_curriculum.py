"""Mancs's curriculum sampling of negatives (`reidkit.losses.curriculum`): the schedule of σ, the selection
probabilities at the start, middle and end of training against the formula, the draws, and the config."""

import math

import pytest
import torch

from reidkit.config import load_config
from reidkit.errors import ConfigError
from reidkit.losses import CurriculumTripletLoss, negative_probabilities, rank_probabilities, trihard_loss
from reidkit.losses.cross_rank import CrossRankLoss
from reidkit.losses.curriculum import curriculum_sigma, curriculum_triplet_loss, curriculum_triplets
from reidkit.losses.objective import Objective, LossTerm, build_objective

# 1-D embeddings: anchor 0 (identity 0, at 0.0) has negatives at 4.0, 1.0, 3.0, 2.0 → ranks 3, 0, 2, 1.
POINTS = torch.tensor([[0.0], [0.5], [4.0], [1.0], [3.0], [2.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def by_hand(sigma: float, ranks: list[int], count: int) -> list[float]:
    weights = [math.exp(-((r / (count - 1)) ** 2) / (2 * sigma**2)) for r in ranks]
    return [w / sum(weights) for w in weights]


@pytest.mark.parametrize(("progress", "expected"), [(0.0, 10.0), (0.5, math.sqrt(10.0 * 0.02)), (1.0, 0.02)])
def test_sigma_at_start_middle_and_end(progress, expected):
    assert curriculum_sigma(progress, 10.0, 0.02) == pytest.approx(expected)


def test_sigma_holds_outside_the_scheduled_window():
    window = {"sigma_start": 4.0, "sigma_end": 0.25, "start": 0.2, "end": 0.6}
    assert curriculum_sigma(0.1, **window) == 4.0 and curriculum_sigma(0.9, **window) == 0.25
    assert curriculum_sigma(0.4, **window) == pytest.approx(1.0)  # half-way: √(4 · 0.25)


@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_selection_probabilities_at_start_middle_and_end_match_the_formula(progress):
    sigma = curriculum_sigma(progress, sigma_start=2.0, sigma_end=0.125)  # 2.0, 0.5, 0.125
    dist = torch.cdist(POINTS, POINTS)
    probabilities = negative_probabilities(dist, LABELS, sigma)
    expected = by_hand(sigma, [3, 0, 2, 1], count=4)
    torch.testing.assert_close(probabilities[0, 2:], torch.tensor(expected, dtype=torch.float64))
    assert probabilities[0, :2].sum() == 0  # never a positive (or the anchor)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(6, dtype=torch.float64))


def test_probabilities_move_from_nearly_uniform_to_the_hardest():
    start, middle, end = (rank_probabilities(60, curriculum_sigma(t)) for t in (0.0, 0.5, 1.0))
    assert start.max() / start.min() < 1.01  # σ = 10: every negative about equally likely
    assert start[0] < middle[0] < end[0]
    assert end[:4].sum() > 0.99 and end[0] == end.max()  # σ = 0.02 of 60 ranks: the 3–4 hardest
    torch.testing.assert_close(end[1] / end[0], torch.tensor(math.exp(-(1 / 59) ** 2 / (2 * 0.02**2)),
                                                             dtype=torch.float64))


def test_draws_follow_the_probabilities():
    dist = torch.cdist(POINTS, POINTS)
    generator = torch.Generator().manual_seed(0)
    sigma = 0.5
    counts = torch.zeros(4)
    for _ in range(1500):
        _, d_an = curriculum_triplets(dist, LABELS, sigma, generator)
        counts[[4.0, 1.0, 3.0, 2.0].index(d_an[0].item())] += 1
    expected = torch.tensor(by_hand(sigma, [3, 0, 2, 1], count=4), dtype=torch.float32)
    torch.testing.assert_close(counts / 1500, expected, atol=0.04, rtol=0)  # ≈ 3 standard errors


def test_narrow_sigma_is_batch_hard_and_the_module_reads_its_progress():
    embeddings = torch.randn(8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    hard = trihard_loss(embeddings, labels, margin=0.3)
    torch.testing.assert_close(curriculum_triplet_loss(embeddings, labels, progress=1.0, sigma_end=1e-4), hard)
    module = CurriculumTripletLoss(sigma_start=1e-3, sigma_end=1e-4)
    torch.testing.assert_close(module(embeddings, labels), hard)
    objective = Objective([LossTerm("curriculum_triplet", 1.0, CrossRankLoss(module), "features")])
    objective.set_progress(0.75)  # reaches the module inside a wrapper
    assert module.progress == 0.75


def test_no_valid_anchor_is_zero_with_a_gradient():
    embeddings = torch.randn(3, 4, requires_grad=True)
    loss = curriculum_triplet_loss(embeddings, torch.tensor([0, 1, 2]), progress=0.0)
    loss.backward()
    assert loss.item() == 0.0 and embeddings.grad is not None


def test_config_builds_the_term_and_refuses_a_bad_schedule():
    config = load_config(None, ["loss.curriculum_triplet.weight=1", "loss.curriculum_triplet.sigma_end=0.5",
                                "loss.curriculum_triplet.end=0.8"])
    module = build_objective(config.loss, num_classes=3, embedding_dim=4).terms["curriculum_triplet"]
    assert isinstance(module, CurriculumTripletLoss) and (module.sigma_end, module.end) == (0.5, 0.8)
    with pytest.raises(ConfigError, match="sigma_end <= sigma_start"):
        load_config(None, ["loss.curriculum_triplet.weight=1", "loss.curriculum_triplet.sigma_end=20.0"])
    with pytest.raises(ConfigError, match="start < end"):
        load_config(None, ["loss.curriculum_triplet.weight=1", "loss.curriculum_triplet.start=0.5",
                           "loss.curriculum_triplet.end=0.5"])
    with pytest.raises(ValueError, match="start < end"):
        CurriculumTripletLoss(start=0.9, end=0.1)


@pytest.mark.slow
def test_mancs_recipe_trains_from_the_cli_and_the_trainer_feeds_the_progress(tmp_path, monkeypatch):
    """`reidkit train` on the mancs recipe (tiny set, 2 epochs): the curriculum term sees the fraction of
    training done before each step, (epoch − 1 + step / steps_per_epoch) / epochs, and the run evaluates
    the attention-aware feature."""
    from pathlib import Path

    from reidkit.cli import main

    seen = []
    forward = CurriculumTripletLoss.forward
    monkeypatch.setattr(CurriculumTripletLoss, "forward",
                        lambda self, *args: seen.append(self.progress) or forward(self, *args))
    recipe = Path(__file__).resolve().parent.parent / "configs" / "recipes" / "mancs.yaml"
    run = tmp_path / "run"
    assert main(["--quiet", "train", "--config", str(recipe), "--out", str(run), f"data.root={tmp_path / 'data'}",
                 "data.synthetic_identities=8", "data.synthetic_cameras=2", "data.height=64", "data.width=32",
                 "data.p=4", "data.k=4", "data.workers=0", "train.epochs=2", "train.warmup_epochs=0",
                 "eval.ranked_queries=0", "train.log_every=1"]) == 0
    steps = len(seen) // 2
    assert steps >= 1 and seen == [(epoch + step / steps) / 2 for epoch in range(2) for step in range(steps)]
    assert (run / "config.yaml").read_text().count("att_features") == 2  # the loss term and eval.feature
    assert '"kind": "eval"' in (run / "metrics.jsonl").read_text()
