"""Losses: distances, metric-learning losses of the lecture, identity (representation) losses."""

from reidkit.losses.distances import pairwise_distance
from reidkit.losses.center import CenterLoss, center_loss
from reidkit.losses.cluster_memory import ClusterMemoryLoss, cluster_memory_loss, momentum_update
from reidkit.losses.curriculum import (
                                       CurriculumTripletLoss,
                                       curriculum_triplet_loss,
                                       negative_probabilities,
                                       rank_probabilities,
)
from reidkit.losses.hard_samples import HardSampleCrossEntropy, hard_levels, hard_sample_cross_entropy
from reidkit.losses.margin_softmax import (
                                       ArcFaceLoss,
                                       CircleClassLoss,
                                       CirclePairLoss,
                                       CosFaceLoss,
                                       CosineMarginLoss,
                                       NormSoftmaxLoss,
                                       circle_pair_loss,
)
from reidkit.losses.metric import (
                                       AdaptiveWeightedTripletLoss,
                                       TriHardLoss,
                                       adaptive_weighted_triplet_loss,
                                       contrastive_loss,
                                       hardest_pairs,
                                       improved_triplet_loss,
                                       quadruplet_loss,
                                       softmax_weighted_pairs,
                                       trihard_loss,
                                       triplet_loss,
)
from reidkit.losses.representation import CrossEntropyLabelSmooth, cross_entropy_label_smooth
from reidkit.losses.set_losses import HAP2SLoss, LiftedStructuredLoss, hap2s_loss, lifted_structured_loss
from reidkit.losses.tuple_losses import (
                                       BatchContrastiveLoss,
                                       BatchImprovedTripletLoss,
                                       BatchQuadrupletLoss,
                                       BatchTripletLoss,
                                       batch_contrastive_loss,
                                       batch_improved_triplet_loss,
                                       batch_quadruplet_loss,
                                       batch_triplet_loss,
)
from reidkit.losses.tuples import (
                                       PAIR_STRATEGIES,
                                       QUADRUPLET_STRATEGIES,
                                       TRIPLET_STRATEGIES,
                                       build_pairs,
                                       build_quadruplets,
                                       build_triplets,
)

__all__ = [
    "PAIR_STRATEGIES",
    "QUADRUPLET_STRATEGIES",
    "TRIPLET_STRATEGIES",
    "AdaptiveWeightedTripletLoss",
    "ArcFaceLoss",
    "BatchContrastiveLoss",
    "BatchImprovedTripletLoss",
    "BatchQuadrupletLoss",
    "BatchTripletLoss",
    "CenterLoss",
    "CircleClassLoss",
    "ClusterMemoryLoss",
    "CirclePairLoss",
    "CosFaceLoss",
    "CosineMarginLoss",
    "CrossEntropyLabelSmooth",
    "CurriculumTripletLoss",
    "HAP2SLoss",
    "HardSampleCrossEntropy",
    "LiftedStructuredLoss",
    "NormSoftmaxLoss",
    "TriHardLoss",
    "adaptive_weighted_triplet_loss",
    "batch_contrastive_loss",
    "batch_improved_triplet_loss",
    "batch_quadruplet_loss",
    "batch_triplet_loss",
    "build_pairs",
    "build_quadruplets",
    "build_triplets",
    "center_loss",
    "circle_pair_loss",
    "cluster_memory_loss",
    "contrastive_loss",
    "cross_entropy_label_smooth",
    "curriculum_triplet_loss",
    "hap2s_loss",
    "hard_levels",
    "hard_sample_cross_entropy",
    "hardest_pairs",
    "improved_triplet_loss",
    "lifted_structured_loss",
    "momentum_update",
    "negative_probabilities",
    "pairwise_distance",
    "quadruplet_loss",
    "rank_probabilities",
    "softmax_weighted_pairs",
    "trihard_loss",
    "triplet_loss",
]
