"""The training step without host synchronisation: values stay on the device until `Trainer.read`, and a
non-finite step makes no update (parameters and optimiser state unchanged) and is counted."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reidkit.config import TrainConfig
from reidkit.engine.optim import build_optimizer
from reidkit.engine.trainer import Trainer
from reidkit.losses.objective import LossTerm, Objective
from reidkit.losses.representation import CrossEntropyLabelSmooth

pytestmark = pytest.mark.numerics  # the trainer's step vs a bare step


class Scaled(nn.Module):
    """Cross-entropy times a factor the test sets (NaN makes a diverging step)."""

    def __init__(self) -> None:
        super().__init__()
        self.factor = 1.0
        self.loss = CrossEntropyLabelSmooth(0.0)

    def forward(self, logits, labels):
        return self.loss(logits, labels) * self.factor


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, images):
        return {"logits": self.fc(images.flatten(1))}


# the fused kernels the trainer builds (amsgrad keeps a running maximum, nesterov a look-ahead: both must skip)
OPTIMIZERS = {"adam": {"optimizer": "adam"}, "amsgrad": {"optimizer": "adam", "amsgrad": True},
              "sgd": {"optimizer": "sgd"}, "nesterov": {"optimizer": "sgd", "nesterov": True}}


def _trainer(optimizer: str) -> tuple[Trainer, Scaled]:
    torch.manual_seed(0)
    model, term = Linear(), Scaled()
    objective = Objective([LossTerm("id", 1.0, term, "logits")])
    train = TrainConfig(lr=0.1, **OPTIMIZERS[optimizer])
    return Trainer(model, objective, build_optimizer(model, None, train), torch.device("cpu")), term


def _state(trainer: Trainer) -> dict:
    optimizer_state = {k: v.clone() for state in trainer.optimizer.state.values() for k, v in state.items()}
    return {**{k: v.clone() for k, v in trainer.model.state_dict().items()}, **optimizer_state}


BATCH = {"images": torch.randn(4, 6, 1, 1, generator=torch.Generator().manual_seed(1)),
         "pids": torch.tensor([0, 1, 2, 0])}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_a_nonfinite_step_changes_nothing_and_is_counted(optimizer: str) -> None:
    trainer, term = _trainer(optimizer)
    values = trainer.run_step(BATCH, step=1)
    assert values.shape == (2,) and values.device.type == "cpu" and math.isfinite(values[0].item())
    before = _state(trainer)
    term.factor = float("nan")
    trainer.run_step(BATCH, step=2)
    after = _state(trainer)
    assert before.keys() == after.keys()
    for name, value in before.items():  # weights, Adam's moments, maximum and step count, SGD's momentum
        assert torch.equal(after[name], value), name
    term.factor = 1.0
    third = trainer.run_step(BATCH, step=3)
    assert not torch.equal(_state(trainer)["fc.weight"], before["fc.weight"])  # finite steps update again
    report = trainer.read()
    assert report.skipped_steps == 1 and report.finite_steps == 2
    step, bad = report.first_nonfinite
    assert step == 2 and math.isnan(bad["loss"]) and math.isnan(bad["loss/id"])
    assert report.last == dict(zip(["loss", "loss/id"], third.tolist()))  # the newest step's values
    again = trainer.read()  # the non-finite record is cleared by a read; the epoch sums are not
    assert again.skipped_steps == 0 and again.first_nonfinite is None and again.finite_steps == 2


def test_means_are_over_the_finite_steps_of_the_epoch() -> None:
    trainer, term = _trainer("sgd")
    losses = [trainer.run_step(BATCH, step=i)[0].item() for i in (1, 2)]
    term.factor = float("inf")
    trainer.run_step(BATCH, step=3)
    report = trainer.read()
    assert report.means["loss"] == pytest.approx(sum(losses) / 2, rel=1e-6)
    trainer.start_epoch()
    term.factor = 1.0
    third = trainer.run_step(BATCH, step=4)[0].item()
    assert trainer.read().means["loss"] == pytest.approx(third, rel=1e-6)


def test_the_trainer_refuses_an_optimiser_that_cannot_skip_on_the_device() -> None:
    model = Linear()
    objective = Objective([LossTerm("id", 1.0, Scaled(), "logits")])
    with pytest.raises(ValueError, match="fused optimiser"):
        Trainer(model, objective, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"))


def test_bf16_autocast_runs_where_the_config_says() -> None:
    """train.amp: bf16 autocast on CUDA; on the CPU only with train.amp_cpu (the way to study bf16 without a GPU)."""
    from reidkit.config.sections import TrainConfig
    from reidkit.devices import autocast_context, uses_amp

    cpu = torch.device("cpu")
    assert uses_amp(TrainConfig(amp=True), "cuda:1") and not uses_amp(TrainConfig(amp=False), "cuda")
    assert not uses_amp(TrainConfig(amp=True), cpu) and uses_amp(TrainConfig(amp=True, amp_cpu=True), cpu)
    assert not uses_amp(TrainConfig(amp=False, amp_cpu=True), cpu)
    layer = torch.nn.Linear(4, 3)
    for amp, dtype in ((False, torch.float32), (True, torch.bfloat16)):
        with autocast_context(cpu, amp):
            assert layer(torch.randn(2, 4)).dtype == dtype
