"""The training objective: a weighted sum of named loss terms, built once from the config.

Each term reads one key of the model's output dict and the batch labels; every term is returned for
logging, so a run shows what each loss contributed. Terms with weight 0 are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from reidkit.losses.metric import trihard_loss
from reidkit.losses.representation import cross_entropy_label_smooth

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossTerm:
    """One weighted term: `weight * fn(outputs[input_key], labels)`."""

    name: str
    weight: float
    fn: LossFn
    input_key: str


class Objective:
    """L = Σ_t w_t · L_t(outputs[key_t], labels); returns the total and each unweighted term."""

    def __init__(self, terms: list[LossTerm]) -> None:
        if not terms:
            raise ValueError("the objective has no loss term: give at least one term a weight > 0")
        names = [term.name for term in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"loss term names must be unique, got {names}")
        self.terms = terms

    def __call__(self, outputs: dict, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = {term.name: term.fn(outputs[term.input_key], labels) for term in self.terms}
        total = sum(term.weight * values[term.name] for term in self.terms)
        return total, values


def build_objective(loss_config) -> Objective:
    """Build the Objective from a `reidkit.config.LossConfig`; terms with weight 0 are skipped."""
    candidates = [
        LossTerm("id", loss_config.id.weight,
                 lambda logits, labels: cross_entropy_label_smooth(
                     logits, labels, epsilon=loss_config.id.label_smoothing), "logits"),
        LossTerm("trihard", loss_config.trihard.weight,
                 lambda embeddings, labels: trihard_loss(
                     embeddings, labels, margin=loss_config.trihard.margin,
                     metric=loss_config.trihard.metric), loss_config.trihard.feature),
    ]
    return Objective([term for term in candidates if term.weight > 0])
