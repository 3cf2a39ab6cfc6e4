"""The `loss` section: one dataclass per loss term (weight 0 disables it) and the ranges each accepts."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from reidkit.config.rules import FeatureKey, Metric, PairStrategy, TripletStrategy, refuse_bad
from reidkit.errors import ConfigError


@dataclass
class IdLossConfig:
    weight: float = 1.0  # every term: 0 disables it
    label_smoothing: float = 0.1  # epsilon of label-smoothed cross-entropy on the classifier logits
    # Split the classifier by class over the ranks of a distributed run (exact softmax through
    # all-reduces) for data sets with very many identities; reads bn_features instead of the model's logits.
    sharded: bool = False
    # "ahsm": adaptive hard sample mining (Chen et al., ICIP 2018): the loss averages over the samples whose
    # hard level 1 - p(true class) is at least a running mean of it (momentum ahsm_momentum per step)
    mining: Literal["none", "ahsm"] = "none"
    ahsm_momentum: float = 0.9


@dataclass
class JigsawLossConfig:
    """TransReID's jigsaw branch (model.jigsaw_groups): the mean over its k local features of label-smoothed
    cross-entropy on each one's classifier plus TriHard on the feature before its BNNeck."""

    weight: float = 0.0
    label_smoothing: float = 0.1
    margin: float | None = 0.3  # null = soft margin
    metric: Metric = "euclidean"


@dataclass
class AttributeLossConfig:
    weight: float = 0.0  # mean cross-entropy of the attribute heads (needs data.attributes)


@dataclass
class EmbeddingTermConfig:
    weight: float = 0.0
    feature: FeatureKey = "features"  # BoT: metric losses on the feature before the BNNeck


@dataclass
class PairwiseTermConfig(EmbeddingTermConfig):
    cross_rank: bool = False  # distributed runs: mine pairs over the global batch of all ranks


@dataclass
class MetricTermConfig(PairwiseTermConfig):
    metric: Metric = "euclidean"


@dataclass
class TriHardLossConfig(MetricTermConfig):
    weight: float = 1.0
    margin: float | None = 0.3  # null = soft margin log(1 + exp(d_ap - d_an))


@dataclass
class AdaptiveTripletLossConfig(MetricTermConfig):
    margin: float | None = None  # softmax(d)-weighted positives, softmax(-d)-weighted negatives


@dataclass
class CurriculumTripletLossConfig(MetricTermConfig):
    """Mancs's curriculum sampling (Wang et al., ECCV 2018): per anchor the farthest positive and one negative
    drawn with p(rank r) ∝ exp(-(r/(M-1))² / 2σ²), r = 0 the hardest; σ shrinks geometrically from sigma_start
    (nearly uniform) to sigma_end (nearly the hardest) between the fractions start and end of training."""

    margin: float | None = 0.3
    sigma_start: float = 10.0
    sigma_end: float = 0.02
    start: float = 0.0  # fraction of training where σ starts to shrink
    end: float = 1.0  # fraction of training where σ reaches sigma_end


@dataclass
class ContrastiveLossConfig(MetricTermConfig):
    margin: float = 1.0
    strategy: PairStrategy = "hard"  # which pairs of the PK batch count


@dataclass
class TripletLossConfig(MetricTermConfig):
    margin: float | None = 0.3
    # "hard" is TriHard; "nn_adaptive" widens the negatives with the batch's nearest-neighbour error
    strategy: TripletStrategy = "random"


@dataclass
class ImprovedTripletLossConfig(MetricTermConfig):
    margin: float = 0.3
    strategy: TripletStrategy = "random"


@dataclass
class QuadrupletLossConfig(MetricTermConfig):
    alpha: float = 0.3  # margin of the triplet term
    beta: float = 0.15  # margin of the weaker term against a pair of two other identities
    strategy: PairStrategy = "hard"


@dataclass
class LiftedLossConfig(MetricTermConfig):
    margin: float = 1.0


@dataclass
class HAP2SLossConfig(MetricTermConfig):
    margin: float = 0.5
    sigma: float = 0.5  # temperature of the hard-aware point-to-set weights


@dataclass
class CirclePairLossConfig(PairwiseTermConfig):
    margin: float = 0.25
    gamma: float = 128.0


@dataclass
class NormSoftmaxLossConfig(EmbeddingTermConfig):
    feature: FeatureKey = "bn_features"
    temperature: float = 0.05


@dataclass
class CosFaceLossConfig(EmbeddingTermConfig):
    feature: FeatureKey = "bn_features"
    scale: float = 30.0
    margin: float = 0.35  # subtracted from the target cosine


@dataclass
class ArcFaceLossConfig(EmbeddingTermConfig):
    feature: FeatureKey = "bn_features"
    scale: float = 30.0
    margin_rad: float = 0.5  # added to the target angle, in radians


@dataclass
class CircleClassLossConfig(EmbeddingTermConfig):
    feature: FeatureKey = "bn_features"
    scale: float = 64.0
    margin: float = 0.25


@dataclass
class ClusterMemoryLossConfig(EmbeddingTermConfig):
    """Cluster Contrast's memory loss over the pseudo identities of `reidkit adapt` (refused by `train`): a
    softmax at `temperature` over unit cluster centroids, each moved by `momentum` (the old centroid's share)
    towards the batch's features; `hard`: towards the hardest feature of each cluster in the batch only."""

    temperature: float = 0.05
    momentum: float = 0.1
    hard: bool = False


@dataclass
class LogitDistillationConfig:
    """Hinton et al.'s logit distillation: T² · KL(softmax(teacher_logits / T) ‖ softmax(logits / T)); needs
    model.teacher, trained on the same identities as the student."""

    teacher_output: ClassVar[str] = "teacher_logits"  # the model-output key of the teacher's it reads
    weight: float = 0.0
    temperature: float = 4.0


@dataclass
class FeatureDistillationConfig(PairwiseTermConfig):
    """A relation of the batch's student `feature` matched to the same relation of the teacher's features (the
    teacher run's eval.feature); needs model.teacher. Dimensions may differ."""

    teacher_output: ClassVar[str] = "teacher_features"
    feature: FeatureKey = "bn_features"


def teacher_terms(loss_config: LossConfig) -> list[str]:
    """Names of the enabled terms (weight > 0) that read the teacher's outputs."""
    return [f.name for f in dataclasses.fields(loss_config)
            if isinstance(getattr(loss_config, f.name), (LogitDistillationConfig, FeatureDistillationConfig))
            and getattr(loss_config, f.name).weight > 0]


@dataclass
class LossConfig:
    """One entry per loss term; the objective is the sum of weight × term over terms with weight > 0."""

    id: IdLossConfig = field(default_factory=IdLossConfig)
    trihard: TriHardLossConfig = field(default_factory=TriHardLossConfig)
    adaptive_triplet: AdaptiveTripletLossConfig = field(default_factory=AdaptiveTripletLossConfig)
    curriculum_triplet: CurriculumTripletLossConfig = field(default_factory=CurriculumTripletLossConfig)
    contrastive: ContrastiveLossConfig = field(default_factory=ContrastiveLossConfig)
    triplet: TripletLossConfig = field(default_factory=TripletLossConfig)
    improved_triplet: ImprovedTripletLossConfig = field(default_factory=ImprovedTripletLossConfig)
    quadruplet: QuadrupletLossConfig = field(default_factory=QuadrupletLossConfig)
    lifted: LiftedLossConfig = field(default_factory=LiftedLossConfig)
    hap2s: HAP2SLossConfig = field(default_factory=HAP2SLossConfig)
    circle_pair: CirclePairLossConfig = field(default_factory=CirclePairLossConfig)
    norm_softmax: NormSoftmaxLossConfig = field(default_factory=NormSoftmaxLossConfig)
    cosface: CosFaceLossConfig = field(default_factory=CosFaceLossConfig)
    arcface: ArcFaceLossConfig = field(default_factory=ArcFaceLossConfig)
    circle: CircleClassLossConfig = field(default_factory=CircleClassLossConfig)
    center: EmbeddingTermConfig = field(default_factory=EmbeddingTermConfig)  # BoT: weight 0.001 here
    attribute: AttributeLossConfig = field(default_factory=AttributeLossConfig)
    jigsaw: JigsawLossConfig = field(default_factory=JigsawLossConfig)  # TransReID's local features
    verification: PairwiseTermConfig = field(default_factory=PairwiseTermConfig)  # Siamese pair head
    cluster_memory: ClusterMemoryLossConfig = field(default_factory=ClusterMemoryLossConfig)  # reidkit adapt
    # Distillation from model.teacher (`teacher_terms`): logits (Hinton et al. 2015), similarity-preserving (Tung &
    # Mori 2019), relational distance and angle (RKD, Park et al. 2019)
    logit_kd: LogitDistillationConfig = field(default_factory=LogitDistillationConfig)
    similarity_preserving: FeatureDistillationConfig = field(default_factory=FeatureDistillationConfig)
    rkd_distance: FeatureDistillationConfig = field(default_factory=FeatureDistillationConfig)
    rkd_angle: FeatureDistillationConfig = field(default_factory=FeatureDistillationConfig)

    def __post_init__(self) -> None:
        """Refuse a negative weight, and a setting of an enabled term (weight > 0) that its loss would refuse."""
        for name in (f.name for f in dataclasses.fields(self)):
            term = getattr(self, name)
            refuse_bad(f"loss.{name}", term, [("weight", term.weight >= 0, "use 0 or more (0 disables the term)")])
            if term.weight > 0:
                refuse_bad(f"loss.{name}", term, [(key, ok(getattr(term, key)), fix)
                                                   for key, (ok, fix) in _LOSS_RULES.get(name, {}).items()])
        if self.id.weight > 0 and self.id.mining == "ahsm" and self.id.sharded:
            raise ConfigError("loss.id.mining=ahsm needs the model's logits; set loss.id.sharded=false or "
                              "loss.id.mining=none")
        curriculum = self.curriculum_triplet
        if curriculum.weight > 0 and not 0 < curriculum.sigma_end <= curriculum.sigma_start < math.inf:
            raise ConfigError(f"loss.curriculum_triplet: sigma_start={curriculum.sigma_start!r}, sigma_end="
                              f"{curriculum.sigma_end!r} are not allowed; use 0 < sigma_end <= sigma_start")
        if curriculum.weight > 0 and not 0 <= curriculum.start < curriculum.end <= 1:
            raise ConfigError(f"loss.curriculum_triplet: start={curriculum.start!r}, end={curriculum.end!r} are not "
                              "allowed; use fractions of training with 0 <= start < end <= 1")
        if not any(getattr(self, f.name).weight > 0 for f in dataclasses.fields(self)):
            raise ConfigError("no loss term has a weight > 0; set one, e.g. loss.id.weight=1")


_AT_LEAST_0 = (lambda v: v >= 0, "use a number >= 0")
_SOFT_OR_AT_LEAST_0 = (lambda v: v is None or v >= 0, "use a number >= 0, or null for the soft margin")
_POSITIVE = (lambda v: 0 < v < math.inf, "use a number > 0")
_UNIT = (lambda v: 0 <= v < 1, "use a value in [0, 1)")
# Loss term -> {key: (accepts(value), fix)}: the ranges the loss modules check, refused before any work.
_LOSS_RULES: dict[str, dict[str, tuple[typing.Callable[[Any], bool], str]]] = {
    "id": {"label_smoothing": _UNIT, "ahsm_momentum": _UNIT}, "curriculum_triplet": {"margin": _SOFT_OR_AT_LEAST_0},
    "trihard": {"margin": _SOFT_OR_AT_LEAST_0},
    "jigsaw": {"label_smoothing": _UNIT, "margin": _SOFT_OR_AT_LEAST_0},
    "adaptive_triplet": {"margin": _SOFT_OR_AT_LEAST_0}, "triplet": {"margin": _SOFT_OR_AT_LEAST_0},
    "contrastive": {"margin": _AT_LEAST_0}, "improved_triplet": {"margin": _AT_LEAST_0},
    "quadruplet": {"alpha": _AT_LEAST_0, "beta": _AT_LEAST_0}, "lifted": {"margin": _AT_LEAST_0},
    "hap2s": {"margin": _AT_LEAST_0, "sigma": _POSITIVE}, "circle_pair": {"margin": _UNIT, "gamma": _POSITIVE},
    "norm_softmax": {"temperature": _POSITIVE},
    "cosface": {"scale": _POSITIVE, "margin": (lambda v: 0 <= v <= 2, "use a value in [0, 2] (cosine units)")},
    "arcface": {"scale": _POSITIVE,
                "margin_rad": (lambda v: 0 <= v <= math.pi / 2, "use a value in [0, pi/2] (radians)")},
    "circle": {"scale": _POSITIVE, "margin": _UNIT}, "logit_kd": {"temperature": _POSITIVE},
    "cluster_memory": {"temperature": _POSITIVE, "momentum": _UNIT},
}


