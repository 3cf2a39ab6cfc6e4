"""Optimiser groups, backbone freeze and learning-rate schedules, by hand (the peers' own schedulers and
optimisers are compared step by step in tests/test_recipe_parity.py)."""

import math

import pytest
import torch
from torch import nn

from reidkit.config import TrainConfig
from reidkit.engine.optim import BackboneFreeze, build_optimizer, parameter_groups
from reidkit.engine.schedule import Schedule, schedule_from_config, set_learning_rates


def rates(schedule: Schedule, steps: int, steps_per_epoch: int) -> list[float]:
    return [schedule.learning_rate(1.0, step, steps_per_epoch) for step in range(steps)]


def test_bot_schedule_by_hand():
    """BoT: linear warm-up per epoch from 0.01 over 10 epochs, ×0.1 at epochs 40 and 70 counted from 0."""
    schedule = schedule_from_config(TrainConfig())  # the defaults are BoT's
    by_epoch = rates(schedule, 120, 1)
    assert by_epoch[0] == pytest.approx(0.01) and by_epoch[5] == pytest.approx(0.01 + 0.99 * 0.5)
    assert by_epoch[10] == by_epoch[39] == 1.0
    assert by_epoch[40] == pytest.approx(0.1) and by_epoch[69] == pytest.approx(0.1)
    assert by_epoch[70] == pytest.approx(0.01)
    assert rates(schedule, 30, 3)[::3] == by_epoch[:10]  # one rate per epoch, whatever the epoch's length


def test_cosine_after_an_epoch_warmup():
    schedule = Schedule(epochs=12, scheduler="cosine", warmup_epochs=2, warmup_factor=0.1)
    assert schedule.learning_rate(1.0, 2, 1) == 1.0
    assert schedule.learning_rate(1.0, 7, 1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert schedule.learning_rate(1.0, 12, 1) == pytest.approx(0.0)


@pytest.mark.parametrize("method, expected", [
    ("linear", [0.1 + 0.9 * i / 10 for i in range(10)]),
    ("constant", [0.1] * 10),
    ("exp", [0.1 ** (1 - i / 10) for i in range(10)]),
])
def test_fastreid_warmup_by_steps_then_milestones_counted_from_its_last_epoch(method, expected):
    """10 warm-up steps, 4 steps per epoch: the warm-up ends inside epoch 2 (⌈10/4⌉ − 1), where fast-reid's
    MultiStepLR starts counting; milestone 2 is epoch 4, i.e. step 16."""
    schedule = Schedule(epochs=6, scheduler="step", milestones=(2,), gamma=0.1, warmup_iters=10,
                        warmup_method=method, warmup_factor=0.1)
    steps = rates(schedule, 24, 4)
    assert steps[:10] == pytest.approx(expected, rel=1e-12)
    assert steps[10:16] == [1.0] * 6 and steps[16:] == pytest.approx([0.1] * 8)


def test_delayed_cosine_to_a_floor():
    """fast-reid's DELAY_EPOCHS 4 of 10 epochs: rate held, then a cosine over T = 6 epochs to ETA_MIN_LR."""
    schedule = Schedule(epochs=10, scheduler="cosine", delay_epochs=4, eta_min_lr=1e-3)
    by_epoch = [schedule.learning_rate(0.5, epoch, 1) for epoch in range(10)]
    assert by_epoch[:5] == [0.5] * 5
    assert by_epoch[7] == pytest.approx(1e-3 + (0.5 - 1e-3) * 0.5)  # k = 3 of 6: cos(π/2) = 0
    assert by_epoch[9] == pytest.approx(1e-3 + (0.5 - 1e-3) * 0.5 * (1 + math.cos(math.pi * 5 / 6)))


def test_torchreid_single_step():
    schedule = Schedule(epochs=8, scheduler="single_step", stepsize=3, gamma=0.5, warmup_epochs=0)
    assert rates(schedule, 8, 1) == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_bad_names_raise():
    with pytest.raises(ValueError, match="step, single_step or cosine"):
        Schedule(epochs=1, scheduler="linear")
    with pytest.raises(ValueError, match="linear, constant or exp"):
        Schedule(epochs=1, warmup_method="cos")
    with pytest.raises(ValueError, match="adam or sgd"):
        build_optimizer(nn.Linear(1, 1), None, TrainConfig(optimizer="rmsprop"))  # bypassing the config check


class Tiny(nn.Module):
    """A backbone (conv + BatchNorm) and a head (BatchNorm neck with frozen bias, biased linear classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 1, bias=True), nn.BatchNorm2d(4), nn.ReLU())
        self.neck = nn.BatchNorm1d(4)
        self.neck.bias.requires_grad_(False)
        self.classifier = nn.Linear(4, 3)

    def forward(self, images):
        return self.classifier(self.neck(self.backbone(images).mean(dim=(2, 3))))


def test_parameter_groups_as_fastreid_builds_them():
    model, centres = Tiny(), nn.Linear(2, 2, bias=False)  # the objective's own parameter: a head
    train = TrainConfig(lr=0.1, weight_decay=0.01, bias_lr_factor=2.0, weight_decay_bias=0.0, weight_decay_norm=0.5,
                        heads_lr_factor=10.0)
    groups = parameter_groups(model, centres, train)
    found = {id(p): (g["lr"], g["weight_decay"], g["backbone"]) for g in groups for p in g["params"]}
    expected = {
        model.backbone[0].weight: (0.1, 0.01, True), model.backbone[0].bias: (0.2, 0.0, True),
        model.backbone[1].weight: (0.1, 0.5, True), model.backbone[1].bias: (0.2, 0.0, True),
        model.neck.weight: (1.0, 0.5, False),  # the neck's frozen bias is left out
        model.classifier.weight: (1.0, 0.01, False), model.classifier.bias: (2.0, 0.0, False),
        centres.weight: (1.0, 0.01, False)}
    assert found == {id(p): pytest.approx(v) for p, v in expected.items()}
    assert all(g["base_lr"] == g["lr"] for g in groups)
    assert len(groups) == len(set(expected.values()))  # one group per distinct (lr, decay, backbone)
    shared = parameter_groups(model, model.classifier, train)  # a head used by a loss term too: once
    assert sum(len(g["params"]) for g in shared) == 7


def test_optimizer_settings_reach_the_fused_kernels():
    adam = build_optimizer(Tiny(), None, TrainConfig(adam_beta1=0.8, adam_beta2=0.99, adam_eps=1e-6, amsgrad=True))
    assert all(g["betas"] == (0.8, 0.99) and g["eps"] == 1e-6 and g["amsgrad"] and g["fused"]
               for g in adam.param_groups)
    sgd = build_optimizer(Tiny(), None, TrainConfig(optimizer="sgd", momentum=0.5, nesterov=True))
    assert all(g["momentum"] == 0.5 and g["nesterov"] and g["fused"] for g in sgd.param_groups)


def test_set_learning_rates_scales_each_group_from_its_base():
    optimizer = build_optimizer(Tiny(), None, TrainConfig(lr=0.1, bias_lr_factor=2.0))
    set_learning_rates(optimizer, Schedule(epochs=4, warmup_epochs=2, warmup_factor=0.5), step=1, steps_per_epoch=1)
    assert {g["base_lr"]: g["lr"] for g in optimizer.param_groups} == pytest.approx({0.1: 0.075, 0.2: 0.15})


def test_backbone_freeze_trains_only_the_heads_for_its_steps():
    """Two frozen steps: the backbone's weights, BatchNorm statistics and optimiser state stay; the head moves.
    The third step trains the backbone again."""
    torch.manual_seed(0)
    model = Tiny()
    optimizer = build_optimizer(model, None, TrainConfig(lr=0.01))
    freeze = BackboneFreeze(model.backbone, iters=2)
    images, labels = torch.randn(6, 3, 4, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(3):
        freeze.before_forward(step)
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        freeze.drop_gradients(step)
        optimizer.step()
        state = model.state_dict()
        backbone_same = [torch.equal(state[k], start[k]) for k in start if k.startswith("backbone.")]
        if step < 2:
            assert all(backbone_same) and not model.backbone.training
            assert not any(p in optimizer.state for p in model.backbone.parameters())
            assert not torch.equal(state["classifier.weight"], start["classifier.weight"])
        else:
            assert not any(backbone_same) and model.backbone.training
            assert all(optimizer.state[p]["step"] == 1 for p in model.backbone.parameters())
