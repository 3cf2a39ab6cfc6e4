"""Evaluation metrics: ranking (CMC, mAP, mINP)."""

from reidkit.metrics.rank import evaluate_rank

__all__ = ["evaluate_rank"]
