"""The distances the losses train with, under the name of the design's contract
(`reidkit.losses.distances.pairwise_distance`): one implementation, `reidkit.distances`, shared with evaluation
and retrieval, which must not import the losses."""

from reidkit.distances import METRICS, SQUARED_EPS, check_metric, pairwise_distance

__all__ = ["METRICS", "SQUARED_EPS", "check_metric", "pairwise_distance"]
