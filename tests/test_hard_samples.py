"""Adaptive hard sample mining for the ID loss (Chen et al., ICIP 2018; `reidkit.losses.hard_samples`) and the
renamed distance-based triplet strategy ("adaptive" → "nn_adaptive")."""

import math

import pytest
import torch

from reidkit.config import load_config
from reidkit.errors import ConfigError
from reidkit.losses import HardSampleCrossEntropy, build_triplets, hard_levels, hard_sample_cross_entropy
from reidkit.losses.objective import build_objective

# Two classes; p(true class) = 0.9, 0.5, 0.25, 0.8, so the hard levels are 0.1, 0.5, 0.75, 0.2.
LOGITS = torch.tensor([[math.log(9.0), 0.0], [0.0, 0.0], [math.log(3.0), 0.0], [0.0, math.log(4.0)]],
                      dtype=torch.float64)
LABELS = torch.tensor([0, 1, 1, 1])


def test_hard_level_is_one_minus_the_probability_of_the_true_class():
    torch.testing.assert_close(hard_levels(LOGITS, LABELS), torch.tensor([0.1, 0.5, 0.75, 0.2]))


def test_threshold_follows_the_running_mean_of_the_hard_level_and_selects_by_hand():
    loss = HardSampleCrossEntropy(epsilon=0.0, momentum=0.5).double()
    # step 1: τ = 0.5·0 + 0.5·mean(0.1, 0.5, 0.75, 0.2) = 0.19375 → samples 2, 3, 4 (h = 0.5, 0.75, 0.2)
    first = loss(LOGITS, LABELS)
    assert loss.threshold.item() == pytest.approx(0.19375)
    assert first.item() == pytest.approx((math.log(2) + math.log(4) - math.log(0.8)) / 3)
    # step 2: τ = 0.5·0.19375 + 0.5·0.3875 = 0.290625 → samples 2, 3 only
    second = loss(LOGITS, LABELS)
    assert loss.threshold.item() == pytest.approx(0.290625)
    assert second.item() == pytest.approx((math.log(2) + math.log(4)) / 2)
    loss.eval()  # evaluation leaves the threshold where training put it
    loss(LOGITS, LABELS)
    assert loss.threshold.item() == pytest.approx(0.290625)
    assert set(loss.state_dict()) == {"threshold"}  # saved with the objective in checkpoints


def test_only_the_selected_samples_get_a_gradient_and_none_selected_is_zero_with_a_gradient():
    logits = LOGITS.clone().requires_grad_(True)
    hard_sample_cross_entropy(logits, LABELS, threshold=0.3, epsilon=0.1).backward()
    assert logits.grad[[0, 3]].abs().sum() == 0 and logits.grad[[1, 2]].abs().sum() > 0
    logits.grad = None
    none = hard_sample_cross_entropy(logits, LABELS, threshold=1.5)
    none.backward()
    assert none.item() == 0.0 and logits.grad is not None


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="momentum"):
        HardSampleCrossEntropy(momentum=1.0)
    with pytest.raises(ValueError, match="epsilon"):
        HardSampleCrossEntropy(epsilon=1.0)
    with pytest.raises(ValueError, match="logits"):
        hard_levels(LOGITS, LABELS[:3])


def test_config_switch_builds_the_mining_loss_and_refuses_what_it_cannot_do():
    config = load_config(None, ["loss.id.mining=ahsm", "loss.id.ahsm_momentum=0.5", "loss.trihard.weight=0"])
    objective = build_objective(config.loss, num_classes=2, embedding_dim=4)
    assert isinstance(objective.terms["id"], HardSampleCrossEntropy) and objective.terms["id"].momentum == 0.5
    with pytest.raises(ConfigError, match="sharded"):
        load_config(None, ["loss.id.mining=ahsm", "loss.id.sharded=true"])
    with pytest.raises(ConfigError, match=r"loss\.id\.ahsm_momentum: 1\.0"):
        load_config(None, ["loss.id.mining=ahsm", "loss.id.ahsm_momentum=1.0"])
    with pytest.raises(ConfigError, match="loss.id.mining: 'hard' is not allowed"):
        load_config(None, ["loss.id.mining='hard'"])


def test_the_old_adaptive_strategy_name_gets_one_clear_error():
    renamed = r"loss\.triplet\.strategy: 'adaptive' is now nn_adaptive .*loss\.id\.mining=ahsm"
    with pytest.raises(ConfigError, match=renamed):
        load_config(None, ["loss.triplet.weight=1", "loss.triplet.strategy='adaptive'"])
    assert load_config(None, ["loss.triplet.strategy='nn_adaptive'"]).loss.triplet.strategy == "nn_adaptive"
    dist = torch.rand(4, 4)
    with pytest.raises(ValueError, match="renamed 'nn_adaptive'"):
        build_triplets(dist, LABELS, "adaptive")
