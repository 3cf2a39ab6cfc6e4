"""Learning-rate schedule: warm-up, step and cosine factors by hand."""

import math

import pytest
import torch

from reidkit.engine.optim import build_optimizer, build_scheduler, lr_factor


def test_bot_schedule_by_hand():
    kwargs = dict(epochs=120, warmup_epochs=10, warmup_factor=0.01, scheduler="step", milestones=[40, 70],
                  gamma=0.1)
    assert lr_factor(0, **kwargs) == pytest.approx(0.01)
    assert lr_factor(5, **kwargs) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(10, **kwargs) == 1.0
    assert lr_factor(39, **kwargs) == 1.0
    assert lr_factor(40, **kwargs) == pytest.approx(0.1)
    assert lr_factor(70, **kwargs) == pytest.approx(0.01)


def test_cosine_schedule():
    kwargs = dict(epochs=12, warmup_epochs=2, warmup_factor=0.1, scheduler="cosine", milestones=[], gamma=0.1)
    assert lr_factor(2, **kwargs) == 1.0
    assert lr_factor(7, **kwargs) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(12, **kwargs) == pytest.approx(0.0)


def test_scheduler_drives_the_optimizer():
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, "sgd", lr=0.1, weight_decay=0.0)
    scheduler = build_scheduler(optimizer, epochs=4, warmup_epochs=2, warmup_factor=0.5, scheduler="step",
                                milestones=[3], gamma=0.1)
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.05, 0.075, 0.1, 0.01])


def test_bad_names_raise():
    with pytest.raises(ValueError, match="adam or sgd"):
        build_optimizer(torch.nn.Linear(1, 1), "rmsprop", 0.1, 0.0)
    optimizer = build_optimizer(torch.nn.Linear(1, 1), "adam", 0.1, 0.0)
    with pytest.raises(ValueError, match="step or cosine"):
        build_scheduler(optimizer, 10, 0, 0.1, "linear", [], 0.1)
