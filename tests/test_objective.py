"""The objective: weighted sum of named terms built from the config, each term returned for logging."""

import pytest
import torch
import torch.nn.functional as F

from reidkit.config import load_config
from reidkit.losses import trihard_loss
from reidkit.losses.objective import LossTerm, Objective, build_objective


def outputs_and_labels():
    torch.manual_seed(0)
    features = torch.randn(8, 6, requires_grad=True)
    outputs = {"features": features, "bn_features": features * 2, "logits": torch.randn(8, 4, requires_grad=True)}
    return outputs, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def test_weighted_sum_of_named_terms():
    outputs, labels = outputs_and_labels()
    objective = build_objective(load_config(None, ["loss.id.weight=0.5", "loss.trihard.weight=2.0",
                                                   "loss.id.label_smoothing=0.0"]).loss)
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
                                                   "loss.trihard.metric=euclidean"]).loss)
    _, terms = objective(outputs, labels)
    assert list(terms) == ["trihard"]
    torch.testing.assert_close(terms["trihard"], trihard_loss(outputs["bn_features"], labels, margin=0.3))


def test_empty_or_duplicate_terms_are_refused():
    with pytest.raises(ValueError, match="no loss term"):
        build_objective(load_config(None, ["loss.id.weight=0", "loss.trihard.weight=0"]).loss)
    term = LossTerm("id", 1.0, lambda x, y: x.sum(), "logits")
    with pytest.raises(ValueError, match="unique"):
        Objective([term, term])
