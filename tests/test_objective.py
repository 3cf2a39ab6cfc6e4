"""The objective: weighted sum of named terms built from the config, each term returned for logging."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from reidkit.config import LossConfig, load_config
from reidkit.losses import (adaptive_weighted_triplet_loss, batch_contrastive_loss, batch_improved_triplet_loss,
                            batch_quadruplet_loss, batch_triplet_loss, circle_pair_loss, hap2s_loss,
                            lifted_structured_loss, trihard_loss)
from reidkit.errors import ConfigError
from reidkit.models.heads import PairHead
from reidkit.losses.objective import LossTerm, Objective, build_objective


def outputs_and_labels():
    torch.manual_seed(0)
    features = torch.randn(8, 6, requires_grad=True)
    outputs = {"features": features, "bn_features": features * 2, "logits": torch.randn(8, 4, requires_grad=True),
               "attr_logits": {"gender": features[:, :2] * 3, "age": features[:, 2:6] * 3},
               "jigsaw": {"features": torch.stack([features, -features], dim=1),  # 2 local features
                          "logits": torch.stack([features[:, :4], features[:, 2:]], dim=1)},
               "teacher_features": torch.randn(8, 5), "teacher_logits": torch.randn(8, 4)}  # a teacher's outputs
    return outputs, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


ATTRIBUTE_TABLE = torch.tensor([[0, 3], [1, 2], [0, 0], [1, 1]])  # [4 identities, (gender, age)]


def test_weighted_sum_of_named_terms():
    outputs, labels = outputs_and_labels()
    objective = build_objective(load_config(None, ["loss.id.weight=0.5", "loss.trihard.weight=2.0",
                                                   "loss.id.label_smoothing=0.0"]).loss, 4, 6)
    total, terms = objective(outputs, labels)
    ce = F.cross_entropy(outputs["logits"], labels)
    tri = trihard_loss(outputs["features"], labels, margin=0.3)
    torch.testing.assert_close(terms["id"], ce)
    torch.testing.assert_close(terms["trihard"], tri)
    torch.testing.assert_close(total, 0.5 * ce + 2.0 * tri)
    total.backward()
    assert outputs["features"].grad.abs().sum() > 0 and outputs["logits"].grad.abs().sum() > 0


def test_term_reads_its_configured_feature():
    outputs, labels = outputs_and_labels()
    objective = build_objective(load_config(None, ["loss.id.weight=0", "loss.trihard.feature=bn_features",
                                                   "loss.trihard.metric=euclidean"]).loss, 4, 6)
    _, terms = objective(outputs, labels)
    assert list(terms) == ["trihard"]
    torch.testing.assert_close(terms["trihard"], trihard_loss(outputs["bn_features"], labels, margin=0.3))


def test_empty_or_duplicate_terms_are_refused():
    with pytest.raises(ConfigError, match="no loss term has a weight > 0"):
        load_config(None, ["loss.id.weight=0", "loss.trihard.weight=0"])
    with pytest.raises(ValueError, match="no loss term"):
        Objective([])
    term = LossTerm("id", 1.0, torch.nn.Identity(), "logits")
    with pytest.raises(ValueError, match="unique"):
        Objective([term, term])


LOSS_TERMS = [f.name for f in dataclasses.fields(LossConfig)]


@pytest.mark.parametrize("name", LOSS_TERMS)
def test_every_configured_term_builds_and_trains(name):
    """Each loss-config entry builds alone, gives a finite loss and a gradient to the features it reads."""
    outputs, labels = outputs_and_labels()
    overrides = ["loss.id.weight=0", "loss.trihard.weight=0", f"loss.{name}.weight=1.0",
                 *(["model.jigsaw_groups=2"] if name == "jigsaw" else []),
                 *(["model.teacher=runs/teacher"] if name in ("logit_kd", "similarity_preserving", "rkd_distance",
                                                              "rkd_angle") else [])]
    objective = build_objective(load_config(None, overrides).loss, num_classes=4, embedding_dim=6,
                                attribute_table=ATTRIBUTE_TABLE, pair_head=PairHead(6))
    total, terms = objective(outputs, labels)
    assert list(terms) == [name] and torch.isfinite(total)
    total.backward()
    key = objective.input_keys[name]
    source = outputs["logits"] if key == "logits" else outputs["features"]
    assert source.grad is not None and source.grad.abs().sum() > 0
    for parameter in objective.parameters():  # class weights / centers are trained too
        assert parameter.grad is not None


def test_parametric_terms_expose_parameters():
    objective = build_objective(load_config(None, ["loss.cosface.weight=1", "loss.center.weight=0.001"]).loss,
                                num_classes=5, embedding_dim=6)
    shapes = sorted(tuple(p.shape) for p in objective.parameters())
    assert shapes == [(5, 6), (5, 6)]


def test_k1_with_a_metric_loss_is_refused():
    from reidkit.engine.training_data import check_batch_config
    from reidkit.errors import ConfigError

    with pytest.raises(ConfigError, match="trihard.*data.k=1"):
        check_batch_config(load_config(None, ["data.k=1"]))
    check_batch_config(load_config(None, ["data.k=1", "loss.trihard.weight=0"]))  # ID loss alone is fine


def test_attribute_loss_is_the_mean_of_per_attribute_cross_entropies():
    outputs, labels = outputs_and_labels()
    objective = build_objective(load_config(None, ["loss.id.weight=0", "loss.trihard.weight=0",
                                                   "loss.attribute.weight=1"]).loss, 4, 6,
                                attribute_table=ATTRIBUTE_TABLE)
    _, terms = objective(outputs, labels)
    targets = ATTRIBUTE_TABLE[labels]
    expected = (F.cross_entropy(outputs["attr_logits"]["gender"], targets[:, 0])
                + F.cross_entropy(outputs["attr_logits"]["age"], targets[:, 1])) / 2
    torch.testing.assert_close(terms["attribute"], expected)


def test_terms_without_their_data_are_refused():
    from reidkit.errors import ConfigError

    with pytest.raises(ConfigError, match="data.attributes"):
        build_objective(load_config(None, ["loss.attribute.weight=1"]).loss, 4, 6)
    with pytest.raises(ConfigError, match="pair head"):
        build_objective(load_config(None, ["loss.verification.weight=1"]).loss, 4, 6)


# Each configurable term, built from NON-default settings, must equal the public loss function called with
# those settings. `decoys` are the settings a wrong builder would pass instead (defaults, swapped or dropped
# arguments); the test first checks that each decoy gives a different value on these embeddings, so a
# builder passing any of them fails the test.


def _cosine(outputs, module):
    return F.normalize(outputs["bn_features"], dim=1) @ F.normalize(module.weight, dim=1).T


def _norm_softmax_reference(outputs, labels, module, temperature):
    return F.cross_entropy(_cosine(outputs, module) / temperature, labels)


def _cosface_reference(outputs, labels, module, scale, margin):
    # target logit s·(cos θ_y − m), others s·cos θ
    return F.cross_entropy(scale * (_cosine(outputs, module) - margin * F.one_hot(labels, 4)), labels)


def _arcface_reference(outputs, labels, module, scale, margin_rad):
    cosine = _cosine(outputs, module)
    target = cosine.gather(1, labels[:, None])
    assert (target >= -math.cos(margin_rad)).all()  # θ ≤ π − m: the plain cos(θ + m) branch
    shifted = torch.cos(torch.acos(target.clamp(-1, 1)) + margin_rad)
    return F.cross_entropy(scale * cosine.scatter(1, labels[:, None], shifted), labels)


def _circle_class_reference(outputs, labels, module, scale, margin):
    # target γ·[1 + m − s]_+·(s − (1 − m)), others γ·[s + m]_+·(s − m)
    s = _cosine(outputs, module)
    positive = F.one_hot(labels, 4).bool()
    logits = torch.where(positive, (1 + margin - s).clamp_min(0) * (s - (1 - margin)),
                         (s + margin).clamp_min(0) * (s - margin))
    return F.cross_entropy(scale * logits, labels)


def _center_reference(outputs, labels, module):
    # ½ · mean_i ‖f_i − c_{y_i}‖²
    return 0.5 * (outputs["features"] - module.centers[labels]).pow(2).sum(dim=1).mean()


def _on_features(function):
    return lambda outputs, labels, module, **params: function(outputs["features"], labels, **params)


TERM_SETTINGS = {
    # term: (overrides, reference(outputs, labels, module, **settings), settings, decoys)
    "trihard": (["margin=0.7", "metric=cosine"], _on_features(trihard_loss),
                {"margin": 0.7, "metric": "cosine"},
                [{"margin": 0.3, "metric": "cosine"}, {"margin": 0.7, "metric": "euclidean"}]),
    "trihard_soft": (["margin=null"], _on_features(trihard_loss), {"margin": None}, [{"margin": 0.3}]),
    "adaptive_triplet": (["margin=0.4"], _on_features(adaptive_weighted_triplet_loss), {"margin": 0.4},
                         [{"margin": None}]),
    "contrastive": (["margin=2.5", "strategy=all"], _on_features(batch_contrastive_loss),
                    {"margin": 2.5, "strategy": "all"},
                    [{"margin": 2.5, "strategy": "hard"}, {"margin": 1.0, "strategy": "all"}]),
    "triplet": (["margin=0.5", "strategy=nn_adaptive"], _on_features(batch_triplet_loss),
                {"margin": 0.5, "strategy": "nn_adaptive"},
                [{"margin": 0.5, "strategy": "hard"}, {"margin": 0.5, "strategy": "all"},
                 {"margin": 0.3, "strategy": "nn_adaptive"}]),
    # σ = 1e-4 all along: the draw is the hardest negative with probability 1, so the term is TriHard
    "curriculum_triplet": (["margin=0.5", "sigma_start=1e-4", "sigma_end=1e-4"],
                           lambda outputs, labels, module, margin: trihard_loss(outputs["features"], labels, margin),
                           {"margin": 0.5}, [{"margin": 0.3}]),
    "improved_triplet": (["margin=0.6", "strategy=all"], _on_features(batch_improved_triplet_loss),
                         {"margin": 0.6, "strategy": "all"},
                         [{"margin": 0.6, "strategy": "hard"}, {"margin": 0.3, "strategy": "all"}]),
    "quadruplet": (["alpha=1.2", "beta=0.1", "strategy=all"], _on_features(batch_quadruplet_loss),
                   {"alpha": 1.2, "beta": 0.1, "strategy": "all"},
                   [{"alpha": 0.1, "beta": 1.2, "strategy": "all"}, {"alpha": 1.2, "beta": 0.1, "strategy": "hard"},
                    {"alpha": 0.3, "beta": 0.15, "strategy": "all"}]),
    "lifted": (["margin=2.0", "metric=cosine"], _on_features(lifted_structured_loss),
               {"margin": 2.0, "metric": "cosine"},
               [{"margin": 1.0, "metric": "cosine"}, {"margin": 2.0, "metric": "euclidean"}]),
    "hap2s": (["margin=0.8", "sigma=1.7"], _on_features(hap2s_loss), {"margin": 0.8, "sigma": 1.7},
              [{"margin": 0.8, "sigma": 0.8}, {"margin": 1.7, "sigma": 1.7}, {"margin": 1.7, "sigma": 0.8},
               {"margin": 0.5, "sigma": 0.5}]),
    "circle_pair": (["margin=0.4", "gamma=16.0"], _on_features(circle_pair_loss), {"margin": 0.4, "gamma": 16.0},
                    [{"margin": 0.25, "gamma": 16.0}, {"margin": 0.4, "gamma": 128.0}]),
    "norm_softmax": (["temperature=0.2"], _norm_softmax_reference, {"temperature": 0.2}, [{"temperature": 0.05}]),
    "cosface": (["scale=8.0", "margin=0.2"], _cosface_reference, {"scale": 8.0, "margin": 0.2},
                [{"scale": 30.0, "margin": 0.2}, {"scale": 8.0, "margin": 0.35}]),
    "arcface": (["scale=8.0", "margin_rad=0.3"], _arcface_reference, {"scale": 8.0, "margin_rad": 0.3},
                [{"scale": 30.0, "margin_rad": 0.3}, {"scale": 8.0, "margin_rad": 0.5}]),
    "circle": (["scale=16.0", "margin=0.4"], _circle_class_reference, {"scale": 16.0, "margin": 0.4},
               [{"scale": 64.0, "margin": 0.4}, {"scale": 16.0, "margin": 0.25}]),
    "center": ([], _center_reference, {}, []),  # no settings: checks the formula on the term's own centres
}


@pytest.mark.parametrize("case", TERM_SETTINGS)
def test_configured_settings_reach_the_loss(case):
    """loss.<term>.<setting>=value ⇒ the logged term equals the loss function called with that value."""
    term = case.removesuffix("_soft")
    overrides, reference, settings, decoys = TERM_SETTINGS[case]
    outputs, labels = outputs_and_labels()
    config = load_config(None, ["loss.id.weight=0", "loss.trihard.weight=0", f"loss.{term}.weight=1.0",
                                *(f"loss.{term}.{override}" for override in overrides)])
    objective = build_objective(config.loss, num_classes=4, embedding_dim=6)
    _, terms = objective(outputs, labels)
    module = objective.terms[term]
    with torch.no_grad():
        expected = reference(outputs, labels, module, **settings)
        for decoy in decoys:  # the test can tell these settings apart on this batch
            assert abs(reference(outputs, labels, module, **decoy) - expected) > 1e-3 * (1 + abs(expected)), decoy
    torch.testing.assert_close(terms[term].detach(), expected)
