"""Evaluation metrics: ranking (CMC, mAP, mINP), k-reciprocal re-ranking and query expansion."""

from reidkit.metrics.rank import evaluate_rank
from reidkit.metrics.rerank import alpha_query_expansion, average_query_expansion, re_ranking

__all__ = ["evaluate_rank", "re_ranking", "alpha_query_expansion", "average_query_expansion"]
