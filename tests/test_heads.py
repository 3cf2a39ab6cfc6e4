"""Attribute heads and the verification pair head: data mapping, losses, symmetry, re-scoring."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reidkit.data.attributes import attribute_classes, attribute_table
from reidkit.engine.pair_rescoring import PairHeadRescoring
from reidkit.errors import DatasetError
from reidkit.losses.verification import VerificationLoss, balanced_pairs
from reidkit.models.heads import PairHead
from reidkit.models.reid import ReidModel, build_model

ATTRIBUTES = {7: {"gender": 1, "age": 4}, 3: {"gender": 2, "age": 1}, 9: {"gender": 1, "age": 2}}


def test_attribute_codes_become_class_indices():
    assert attribute_classes(ATTRIBUTES) == {"gender": 2, "age": 4}
    table = attribute_table(ATTRIBUTES, [3, 7, 9])  # train label order = sorted raw pids
    assert table.tolist() == [[1, 0], [0, 3], [0, 1]]


def test_missing_or_zero_based_attributes_are_refused():
    with pytest.raises(DatasetError, match="pids \\[5\\]"):
        attribute_table(ATTRIBUTES, [3, 5])
    with pytest.raises(DatasetError, match="1-based"):
        attribute_classes({1: {"hat": 0}})


def test_model_attribute_heads_and_pair_head():
    model = build_model("resnet18", num_classes=3, attributes={"gender": 2, "age": 4}, pair_head=True).eval()
    out = model(torch.randn(2, 3, 64, 32))
    assert {k: v.shape for k, v in out["attr_logits"].items()} == {"gender": (2, 2), "age": (2, 4)}
    a, b = torch.randn(5, 512), torch.randn(5, 512)
    torch.testing.assert_close(model.verify(a, b), model.verify(b, a))  # the fusion is symmetric
    assert ((model.verify(a, b) >= 0) & (model.verify(a, b) <= 1)).all()
    with pytest.raises(ValueError, match="no pair head"):
        build_model("resnet18", num_classes=3).verify(a, b)


def test_balanced_pairs_enumerate_all_positives_and_as_many_negatives():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    first, second, same = balanced_pairs(labels, torch.Generator().manual_seed(0))
    positives = {(int(i), int(j)) for i, j, s in zip(first, second, same) if s}
    assert positives == {(0, 1), (0, 2), (1, 2), (3, 4)}
    negatives = [(int(i), int(j)) for i, j, s in zip(first, second, same) if not s]
    assert len(negatives) == 4 and all(labels[i] != labels[j] and i < j for i, j in negatives)
    assert len(set(negatives)) == 4


def test_verification_loss_is_cross_entropy_on_the_pairs():
    torch.manual_seed(0)
    head = PairHead(4).eval()
    features = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    torch.manual_seed(1)
    loss = VerificationLoss(head)(features, labels)
    torch.manual_seed(1)
    first, second, same = balanced_pairs(labels)
    expected = F.cross_entropy(head(features[first], features[second]), same.long())
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert features.grad.abs().sum() > 0
    singletons = torch.randn(3, 4, requires_grad=True)
    zero = VerificationLoss(head)(singletons, torch.tensor([0, 1, 2]))
    assert zero.item() == 0 and zero.requires_grad


class _ByIndexHead(torch.nn.Module):
    """P(same) = the gallery feature's first value: a head whose answer the test chooses."""

    pair_head = True

    def verify(self, a, b):
        return b[:, 0]


def test_rescoring_reorders_only_the_top_k():
    distmat = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    gallery = torch.tensor([[0.1], [0.9], [0.5], [1.0]])  # the head prefers item 1 within the top 3
    rescored = PairHeadRescoring(_ByIndexHead(), torch.zeros(1, 1), gallery, k=3)(0, torch.from_numpy(distmat)).numpy()
    assert np.argsort(rescored[0], kind="stable").tolist() == [1, 2, 0, 3]
    assert rescored[0, 3] == pytest.approx(0.4)  # outside the top k: unchanged, still last


def _hand_set_pair_head(head: PairHead, same_bias: float = 2.0) -> PairHead:
    """Classifier columns [different, same] over the fusion [(a − b)², a ⊙ b] (each D wide), BN an identity:
    logit_same = same_bias − Σ_d (a_d − b_d)², logit_different = 0."""
    d = head.classifier.in_features // 2
    with torch.no_grad():
        head.norm.eps = 0.0  # eval BN: (x − 0) / sqrt(1 + 0) · 1 + 0 = x exactly
        head.norm.running_mean.zero_()
        head.norm.running_var.fill_(1.0)
        head.norm.weight.fill_(1.0)
        head.norm.bias.zero_()
        head.classifier.weight.zero_()
        head.classifier.weight[1, :d] = -1.0
        head.classifier.bias.copy_(torch.tensor([0.0, same_bias]))
    return head.eval()


def test_verify_is_the_probability_of_the_same_column_by_hand():
    """P(same) = softmax([0, 2 − Σ(a − b)²])[1] = sigmoid(2 − Σ(a − b)²).

    a = (1, 2, 3, 0), b = (0, 4, 3, 1): a − b = (1, −2, 0, −1), Σ(a − b)² = 6 ⇒ sigmoid(−4) = 0.017986;
    (a, a): sigmoid(2) = 0.880797. Swapping the same/different columns gives sigmoid(4) and sigmoid(−2);
    |a − b| instead of (a − b)² gives sigmoid(−2); the products first in the fusion (Σ a ⊙ b = 17) give
    sigmoid(−15)."""
    model = ReidModel(torch.nn.Identity(), feat_dim=4, num_classes=3, pair_head=True)
    _hand_set_pair_head(model.pair_head)
    model.eval()
    a = torch.tensor([[1.0, 2.0, 3.0, 0.0], [1.0, 2.0, 3.0, 0.0]])
    b = torch.tensor([[0.0, 4.0, 3.0, 1.0], [1.0, 2.0, 3.0, 0.0]])
    with torch.no_grad():
        probability = model.verify(a, b)
    expected = torch.tensor([1 / (1 + math.exp(4.0)), 1 / (1 + math.exp(-2.0))])
    torch.testing.assert_close(probability, expected)
    assert probability.tolist() == pytest.approx([0.017986, 0.880797], abs=1e-6)


def test_verification_loss_by_hand():
    """A pair head with all-zero classifier scores every pair [0, 0] ⇒ CE = ln 2 for every pair and the mean.

    With bias (0, 1) (logit_same = 1) on labels [0, 0, 0, 0, 1]: 6 positive pairs (i < j among the four
    0s) and 4 negatives (each 0 with the 1), so L = (6·softplus(−1) + 4·softplus(1)) / 10
    = (6·0.313262 + 4·1.313262) / 10 = 0.713262 (labels flipped: 0.913262; summed: 7.13262)."""
    head = PairHead(4)  # training mode: the BN normalises the batch, the zero classifier ignores it
    with torch.no_grad():
        head.classifier.weight.zero_()
        head.classifier.bias.zero_()
    features = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    loss = VerificationLoss(head)(features, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    with torch.no_grad():
        head.classifier.bias.copy_(torch.tensor([0.0, 1.0]))
    # fewer negatives (4) than positives (6): balanced_pairs keeps all of them, so no random draw matters
    loss = VerificationLoss(head)(features[:5], torch.tensor([0, 0, 0, 0, 1]))
    assert loss.item() == pytest.approx((6 * math.log1p(math.exp(-1)) + 4 * math.log1p(math.exp(1))) / 10, abs=1e-6)
    assert loss.item() == pytest.approx(0.713262, abs=1e-6)


def test_linear_head_is_torchreids_biased_classifier_on_the_feature():
    """model.head=linear: no neck (bn_features are the features), logits = W·f + b; the ID loss alone trains it."""
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=5, head="linear", embedding_dim=8).train()
    outputs = model(torch.randn(4, 3, 32, 16))
    classifier = model.head.classifier
    assert torch.equal(outputs["bn_features"], outputs["features"]) and classifier.bias is not None
    torch.testing.assert_close(outputs["logits"], outputs["features"] @ classifier.weight.T + classifier.bias)
    assert model.freeze_unused(["logits"]) == [] and model.freeze_unused(["features"]) == ["head.classifier"]
