"""Losses: distances, metric-learning losses of the lecture, identity (representation) losses."""

from reidkit.losses.distances import pairwise_distance
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

__all__ = [
    "AdaptiveWeightedTripletLoss",
    "CrossEntropyLabelSmooth",
    "TriHardLoss",
    "adaptive_weighted_triplet_loss",
    "contrastive_loss",
    "cross_entropy_label_smooth",
    "hardest_pairs",
    "improved_triplet_loss",
    "pairwise_distance",
    "quadruplet_loss",
    "softmax_weighted_pairs",
    "trihard_loss",
    "triplet_loss",
]
