"""Identity-balanced "PK" batch sampling for metric learning.

Each batch holds P identities with K images each, so every anchor has positives and negatives for the
batch-hard triplet loss (Hermans et al., "In Defense of the Triplet Loss for Person
Re-Identification", 2017). The epoch follows the random identity sampler of the strong ReID baseline
(Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-identification", CVPRW 2019).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class PKSampler(Sampler[list[int]]):
    """Batch sampler yielding lists of P×K dataset indices: P distinct identities, K images each.

    One epoch: every identity's image indices are shuffled (an identity with fewer than K images
    draws K with replacement instead) and cut into chunks of K, dropping an incomplete last chunk.
    Then, while at least P identities have chunks left, P of them are drawn uniformly without
    replacement and one chunk of each forms a batch. The epoch therefore has at most
    ⌊Σ_i max(1, ⌊n_i / K⌋) / P⌋ batches; the exact number depends on the draw and can differ by a
    few batches between epochs. `len()` returns the exact count for the current epoch.

    Pass it as `DataLoader(..., batch_sampler=sampler)` and call `set_epoch` before each epoch.
    The order is a deterministic function of (seed, epoch).

    Args:
        pids: identity label of every dataset index, `[N]`.
        p: identities per batch P (at least 2, so that every anchor has negatives).
        k: images per identity K (at least 1).
        seed: non-negative base seed.

    Raises:
        ValueError: p < 2, k < 1, a negative seed, or fewer than P identities.
    """

    def __init__(self, pids: Sequence[int], p: int, k: int, seed: int = 0) -> None:
        if p < 2:
            raise ValueError(f"p (identities per batch) must be at least 2 so that negatives exist, got {p}")
        if k < 1:
            raise ValueError(f"k (images per identity) must be at least 1, got {k}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        labels = np.asarray(pids, dtype=np.int64)
        identities = np.unique(labels)
        if len(identities) < p:
            raise ValueError(
                f"p={p} identities per batch but the data set has only {len(identities)} identities; "
                f"lower p to at most {len(identities)}"
            )
        super().__init__()
        self.p, self.k, self.seed = p, k, seed
        self.epoch = 0
        self._indices_per_identity = [np.flatnonzero(labels == identity) for identity in identities]
        self._batches: list[list[int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order `__iter__` and `__len__` describe."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        if epoch != self.epoch:
            self.epoch, self._batches = epoch, None

    def _epoch_batches(self) -> list[list[int]]:
        """Build the current epoch's batches once, from a generator seeded by (seed, epoch)."""
        if self._batches is not None:
            return self._batches
        rng = np.random.default_rng((self.seed, self.epoch))
        chunks = []
        for indices in self._indices_per_identity:
            if len(indices) < self.k:
                order = rng.choice(indices, size=self.k, replace=True)
            else:
                order = rng.permutation(indices)
            num_chunks = len(order) // self.k
            chunks.append(order[: num_chunks * self.k].reshape(num_chunks, self.k).tolist())
        available = list(range(len(chunks)))
        batches = []
        while len(available) >= self.p:
            picked = rng.choice(len(available), size=self.p, replace=False)
            batch = []
            for position in picked:
                batch.extend(chunks[available[position]].pop())
            batches.append(batch)
            available = [identity for identity in available if chunks[identity]]
        self._batches = batches
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._epoch_batches()

    def __len__(self) -> int:
        """Number of batches of the current epoch (exact)."""
        return len(self._epoch_batches())
