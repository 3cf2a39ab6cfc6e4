"""The training objective: a weighted sum of named loss terms, built once from the config.

Each term is a loss module reading one key of the model's output dict plus the batch labels; every term
is returned for logging, so a run shows what each loss contributed. Terms with weight 0 are left out.
The objective is an `nn.Module` because some terms own parameters (class weights of CosFace/ArcFace/
circle/normalised softmax, centers of center loss): the optimiser trains them beside the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from reidkit.errors import ConfigError
from reidkit.losses.attribute import AttributeLoss
from reidkit.losses.center import CenterLoss
from reidkit.losses.cluster_memory import ClusterMemoryLoss
from reidkit.losses.cross_rank import CrossRankDistillation, CrossRankLoss
from reidkit.losses.curriculum import CurriculumTripletLoss
from reidkit.losses.distillation import LogitDistillationLoss, RKDAngleLoss, RKDDistanceLoss, SimilarityPreservingLoss
from reidkit.losses.hard_samples import HardSampleCrossEntropy
from reidkit.losses.jigsaw import JigsawLoss
from reidkit.losses.margin_softmax import ArcFaceLoss, CircleClassLoss, CirclePairLoss, CosFaceLoss, NormSoftmaxLoss
from reidkit.losses.metric import AdaptiveWeightedTripletLoss, TriHardLoss
from reidkit.losses.representation import CrossEntropyLabelSmooth
from reidkit.losses.sharded import ShardedLinearCrossEntropy
from reidkit.losses.set_losses import HAP2SLoss, LiftedStructuredLoss
from reidkit.losses.tuple_losses import (BatchContrastiveLoss, BatchImprovedTripletLoss, BatchQuadrupletLoss,
                                         BatchTripletLoss)
from reidkit.losses.verification import VerificationLoss

# Terms that compare samples of the batch with each other: they need K ≥ 2 images per identity.
METRIC_TERMS = ("trihard", "adaptive_triplet", "curriculum_triplet", "contrastive", "triplet", "improved_triplet",
                "quadruplet", "lifted", "hap2s", "circle_pair", "verification", "jigsaw")
# Output keys of the terms whose config has no `feature` field.
FIXED_INPUT_KEYS = {"id": "logits", "attribute": "attr_logits", "jigsaw": "jigsaw", "logit_kd": "logits"}


@dataclass(frozen=True)
class LossTerm:
    """One weighted term: `weight * module(outputs[input_key], target)`, the target being the batch labels, or
    `outputs[target_key]` when given (a distillation term's teacher output)."""

    name: str
    weight: float
    module: nn.Module
    input_key: str
    target_key: str | None = None


class Objective(nn.Module):
    """L = Σ_t w_t · L_t(outputs[key_t], target_t), target_t the labels or a teacher output; returns the total and
    each unweighted term."""

    def __init__(self, terms: list[LossTerm]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("the objective has no loss term: give at least one term a weight > 0")
        names = [term.name for term in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"loss term names must be unique, got {names}")
        self.terms = nn.ModuleDict({term.name: term.module for term in terms})
        self.weights = {term.name: term.weight for term in terms}
        self.input_keys = {term.name: term.input_key for term in terms}
        self.target_keys = {term.name: term.target_key for term in terms}

    def forward(self, outputs: dict, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = {name: module(outputs[self.input_keys[name]],
                               labels if self.target_keys[name] is None else outputs[self.target_keys[name]])
                  for name, module in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in values.items())
        return total, values

    def set_progress(self, progress: float) -> None:
        """Tell the scheduled terms (curriculum sampling) the fraction of training done, in [0, 1]."""
        for module in self.modules():
            if isinstance(module, CurriculumTripletLoss):
                module.progress = progress


def _term_builders(num_classes: int, embedding_dim: int, attribute_table: torch.Tensor | None,
                   pair_head: nn.Module | None) -> dict[str, Callable]:
    """Loss-config field name → function(term config) → loss module."""
    c, d = num_classes, embedding_dim

    def identity(t):
        if t.sharded:
            return ShardedLinearCrossEntropy(c, d, t.label_smoothing)
        if t.mining == "ahsm":
            return HardSampleCrossEntropy(t.label_smoothing, t.ahsm_momentum)
        return CrossEntropyLabelSmooth(t.label_smoothing)

    def attribute(_):
        if attribute_table is None:
            raise ConfigError("loss.attribute needs per-identity attributes, and this data set has none: set "
                              "data.attributes to a CSV (pid,<name>,...) or market_attribute.mat / duke_attribute.mat, or "
                              "loss.attribute.weight=0")
        return AttributeLoss(attribute_table)

    def verification(_):
        if pair_head is None:
            raise ConfigError("loss.verification needs a model built with a pair head")
        return VerificationLoss(pair_head)

    return {
        "id": identity,
        "trihard": lambda t: TriHardLoss(t.margin, t.metric),
        "adaptive_triplet": lambda t: AdaptiveWeightedTripletLoss(t.margin, t.metric),
        "curriculum_triplet": lambda t: CurriculumTripletLoss(t.margin, t.metric, t.sigma_start, t.sigma_end,
                                                              t.start, t.end),
        "contrastive": lambda t: BatchContrastiveLoss(t.margin, t.metric, t.strategy),
        "triplet": lambda t: BatchTripletLoss(t.margin, t.metric, t.strategy),
        "improved_triplet": lambda t: BatchImprovedTripletLoss(t.margin, t.metric, t.strategy),
        "quadruplet": lambda t: BatchQuadrupletLoss(t.alpha, t.beta, t.metric, t.strategy),
        "lifted": lambda t: LiftedStructuredLoss(t.margin, t.metric),
        "hap2s": lambda t: HAP2SLoss(t.margin, t.sigma, t.metric),
        "circle_pair": lambda t: CirclePairLoss(t.margin, t.gamma),
        "norm_softmax": lambda t: NormSoftmaxLoss(c, d, t.temperature),
        "cosface": lambda t: CosFaceLoss(c, d, t.scale, t.margin),
        "arcface": lambda t: ArcFaceLoss(c, d, t.scale, t.margin_rad),
        "circle": lambda t: CircleClassLoss(c, d, t.scale, t.margin),
        "center": lambda t: CenterLoss(c, d),
        "attribute": attribute,
        "jigsaw": lambda t: JigsawLoss(t.label_smoothing, t.margin, t.metric),
        "verification": verification,
        "cluster_memory": lambda t: ClusterMemoryLoss(c, d, t.temperature, t.momentum, t.hard),
        "logit_kd": lambda t: LogitDistillationLoss(t.temperature),
        "similarity_preserving": lambda t: SimilarityPreservingLoss(),
        "rkd_distance": lambda t: RKDDistanceLoss(),
        "rkd_angle": lambda t: RKDAngleLoss(),
    }


def build_objective(loss_config, num_classes: int, embedding_dim: int, attribute_table: torch.Tensor | None = None,
                    pair_head: nn.Module | None = None) -> Objective:
    """Build the Objective from a `reidkit.config.LossConfig`; terms with weight 0 are skipped.

    Args:
        loss_config: one sub-config per term, each with a `weight` and (except `id`, `attribute`) a
            `feature` key naming the model output it reads.
        num_classes: training identities (for terms that own class weights or centers).
        embedding_dim: dimension of the model's features.
        attribute_table: [num_classes, A] attribute class indices per identity (attribute term).
        pair_head: the model's pair head (verification term); shared, so it is saved with the model.

    Terms with `cross_rank` mine over the global batch of all ranks (`CrossRankLoss`; distillation terms:
    `CrossRankDistillation`); `id.sharded` replaces the model's logits by a class-sharded classifier over
    `bn_features`. Distillation terms (a `teacher_output` key) read their teacher output as the target.

    Raises:
        ConfigError: an enabled term whose data or head is missing.
    """
    builders = _term_builders(num_classes, embedding_dim, attribute_table, pair_head)
    terms = []
    for field in dataclasses.fields(loss_config):
        term_config = getattr(loss_config, field.name)
        if term_config.weight > 0:
            module = builders[field.name](term_config)
            target_key = getattr(term_config, "teacher_output", None)  # a distillation term's teacher output
            if getattr(term_config, "cross_rank", False):
                module = CrossRankLoss(module) if target_key is None else CrossRankDistillation(module)
            input_key = "bn_features" if getattr(term_config, "sharded", False) else \
                FIXED_INPUT_KEYS.get(field.name) or term_config.feature
            terms.append(LossTerm(field.name, term_config.weight, module, input_key, target_key))
    return Objective(terms)
