"""Evaluation metrics: ranking (CMC, mAP, mINP), k-reciprocal re-ranking and query expansion."""

from reidkit.metrics.features_eval import evaluate_features
from reidkit.metrics.query_expansion import alpha_query_expansion, average_query_expansion
from reidkit.metrics.rank import evaluate_rank
from reidkit.metrics.rerank import re_ranking, re_ranking_features
from reidkit.metrics.single_shot import evaluate_single_gallery_shot

__all__ = ["evaluate_rank", "evaluate_single_gallery_shot", "evaluate_features", "re_ranking",
           "re_ranking_features", "alpha_query_expansion", "average_query_expansion"]
