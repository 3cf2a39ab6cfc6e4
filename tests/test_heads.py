"""Attribute heads and the verification pair head: data mapping, losses, symmetry, re-scoring."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reidkit.data.attributes import attribute_classes, attribute_table
from reidkit.engine.evaluator import rescore_top_k
from reidkit.errors import DatasetError
from reidkit.losses.verification import VerificationLoss, balanced_pairs
from reidkit.models.heads import PairHead
from reidkit.models.reid import build_model

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
    rescored = rescore_top_k(_ByIndexHead(), torch.zeros(1, 1), gallery, distmat, k=3)
    assert np.argsort(rescored[0], kind="stable").tolist() == [1, 2, 0, 3]
    assert rescored[0, 3] == pytest.approx(0.4)  # outside the top k: unchanged, still last
