"""The objective: weighted sum of named terms built from the config, each term returned for logging."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from reidkit.config import LossConfig, load_config
from reidkit.losses import trihard_loss
from reidkit.models.heads import PairHead
from reidkit.losses.objective import LossTerm, Objective, build_objective


def outputs_and_labels():
    torch.manual_seed(0)
    features = torch.randn(8, 6, requires_grad=True)
    outputs = {"features": features, "bn_features": features * 2, "logits": torch.randn(8, 4, requires_grad=True),
               "attr_logits": {"gender": features[:, :2] * 3, "age": features[:, 2:6] * 3}}
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
    with pytest.raises(ValueError, match="no loss term"):
        build_objective(load_config(None, ["loss.id.weight=0", "loss.trihard.weight=0"]).loss, 4, 6)
    term = LossTerm("id", 1.0, torch.nn.Identity(), "logits")
    with pytest.raises(ValueError, match="unique"):
        Objective([term, term])


LOSS_TERMS = [f.name for f in dataclasses.fields(LossConfig)]


@pytest.mark.parametrize("name", LOSS_TERMS)
def test_every_configured_term_builds_and_trains(name):
    """Each loss-config entry builds alone, gives a finite loss and a gradient to the features it reads."""
    outputs, labels = outputs_and_labels()
    overrides = ["loss.id.weight=0", "loss.trihard.weight=0", f"loss.{name}.weight=1.0"]
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
    from reidkit.engine.trainer import check_batch_config
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
