"""Cluster memory contrastive loss over pseudo identities, the loss of clustering-based domain adaptation.

One unit centroid per cluster of the current round is kept in a buffer (not a parameter: no gradient, no
optimiser), initialised from the cluster means and moved towards the features of each batch.

References:
    Dai, Wang, Gan & Sun, "Cluster Contrast for Unsupervised Person Re-Identification", 2021 (cluster-level
        memory, momentum update, hard variant).
    Ge, Zhu, Chen, Chen & Li, "Self-paced Contrastive Learning with Hybrid Memory", NeurIPS 2020 (SpCL).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit import distributed


def cluster_memory_loss(features: Tensor, labels: Tensor, centroids: Tensor, temperature: float = 0.05) -> Tensor:
    """Cross-entropy of a temperature softmax over cluster centroids (the normalised-softmax ID loss, with the
    centroids as class weights).

    L = −mean_i log( exp(⟨f̂_i, m_{y_i}⟩ / τ) / Σ_c exp(⟨f̂_i, m_c⟩ / τ) ), f̂_i = f_i / ‖f_i‖.

    Args:
        features: `[B, D]` features (normalised here; computed in float32).
        labels: `[B]` cluster indices in 0..C−1.
        centroids: `[C, D]` unit centroids (no gradient flows into them).
        temperature: τ > 0.

    Returns:
        Scalar mean over the batch.
    """
    logits = F.normalize(features.float(), dim=1) @ centroids.detach().float().T
    return F.cross_entropy(logits / temperature, labels)


def momentum_update(centroids: Tensor, features: Tensor, labels: Tensor, momentum: float,
                    hard: bool = False) -> Tensor:
    """The centroids after one batch (out of place): for each sample i in batch order (all samples) or, with
    `hard`, for each cluster y of the batch its hardest sample (the least similar to m_y, Cluster Contrast's
    hard variant), m_y ← (μ·m_y + (1 − μ)·f̂_i) / ‖μ·m_y + (1 − μ)·f̂_i‖.

    Args:
        centroids: `[C, D]` unit centroids.
        features: `[B, D]` features (normalised here).
        labels: `[B]` cluster indices.
        momentum: μ in [0, 1), the share of the old centroid.
        hard: update with the hardest sample per cluster only.

    Returns:
        `[C, D]` float32 unit centroids.
    """
    updated = centroids.detach().float().clone()
    units = F.normalize(features.detach().float(), dim=1)
    if hard:
        similarity = (units * updated[labels]).sum(1)
        chosen = [int(torch.nonzero(labels == label)[similarity[labels == label].argmin()])
                  for label in torch.unique(labels).tolist()]
    else:
        chosen = range(len(labels))
    for index in chosen:
        label = int(labels[index])
        updated[label] = F.normalize(momentum * updated[label] + (1.0 - momentum) * units[index], dim=0)
    return updated


class ClusterMemoryLoss(nn.Module):
    """`cluster_memory_loss` against the memory `[C, D]` (a buffer, saved with the objective's state), which
    each training-mode forward then moves by `momentum_update` with the batch of every rank (gathered in rank
    order, so all ranks keep the same memory). `reset` starts a round from its cluster means; loading a state
    of another size resizes the memory (the clusters of the checkpoint's round).

    Degenerate case: the memory must hold the batch's labels (a ValueError otherwise).
    """

    def __init__(self, num_clusters: int, dim: int, temperature: float = 0.05, momentum: float = 0.1,
                 hard: bool = False) -> None:
        super().__init__()
        if not 0 < temperature < math.inf:
            raise ValueError(f"temperature must be a number > 0, got {temperature}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.temperature, self.momentum, self.hard = temperature, momentum, hard
        # random unit centroids (a fixed seed; the global random state is untouched) until the first `reset`
        start = torch.randn(num_clusters, dim, generator=torch.Generator().manual_seed(0))
        self.register_buffer("memory", F.normalize(start, dim=1))

    def reset(self, cluster_means: Tensor) -> None:
        """Start a round: the memory becomes the normalised `cluster_means` `[C, D]`."""
        self.memory = F.normalize(cluster_means.detach().float(), dim=1).to(self.memory.device)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        if len(labels) and int(labels.max()) >= len(self.memory):
            raise ValueError(f"label {int(labels.max())} has no centroid: the memory holds {len(self.memory)} "
                             "clusters; reset it with the round's cluster means")
        loss = cluster_memory_loss(features, labels, self.memory, self.temperature)
        if self.training:
            self.memory = momentum_update(self.memory, distributed.all_gather_tensors(features),
                                          distributed.all_gather_tensors(labels), self.momentum, self.hard)
        return loss

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "memory")
        if saved is not None:
            self.memory = torch.empty(saved.shape, dtype=self.memory.dtype, device=self.memory.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
