"""Pair-head re-scoring: the verification head re-orders each query's nearest gallery items."""

from __future__ import annotations

import torch
from torch import nn

from reidkit.engine.extraction import eval_mode
from reidkit.metrics.ranked_lists import nearest


class PairHeadRescoring:
    """A block hook of `rank_features`: each query's k nearest gallery items (ties by gallery index) get
    −P(same person) from the model's pair head, below every distance, so they stay the top k re-ordered by
    that probability; the other entries keep their distances."""

    def __init__(self, model: nn.Module, query_features: torch.Tensor, gallery_features: torch.Tensor,
                 k: int) -> None:
        self.model, self.query, self.gallery, self.k = model, query_features, gallery_features, k

    @torch.no_grad()
    def __call__(self, start: int, block: torch.Tensor) -> torch.Tensor:
        k = min(self.k, block.shape[1])
        top = torch.as_tensor(nearest(block, k)[0], device=block.device)
        rows = torch.arange(start, start + len(block), device=block.device).repeat_interleave(k)
        columns = top.reshape(-1)
        device = self.query.device
        with eval_mode(self.model):
            probabilities = torch.cat([
                self.model.verify(self.query[rows[i:i + 8192].to(device)],
                                  self.gallery[columns[i:i + 8192].to(device)]).float()
                for i in range(0, len(rows), 8192)]).to(block.device, block.dtype)
        rescored = block.clone()
        rescored[rows - start, columns] = -probabilities
        return rescored
