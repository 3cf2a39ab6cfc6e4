"""Body of each spawned rank of tests/test_adaptation.py's two-process cluster memory test (gloo, CPU)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from reidkit.losses.cluster_memory import ClusterMemoryLoss


def batches() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(initial centroids [3, 4], features [2 ranks, 5, 4], labels [2 ranks, 5]) of the shared toy problem."""
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(3, 4, generator=generator), torch.randn(2, 5, 4, generator=generator),
            torch.randint(0, 3, (2, 5), generator=generator))


def memory_worker(rank: int, world_size: int, rendezvous: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    try:
        centroids, features, labels = batches()
        memory = ClusterMemoryLoss(0, 4, momentum=0.3)
        memory.reset(centroids)
        memory.train()
        memory(features[rank], labels[rank])
        torch.save(memory.memory, Path(out) / f"memory_{rank}.pt")
    finally:
        dist.destroy_process_group()
