"""Identity-balanced "PK" batch sampling for metric learning.

Each batch holds P identities with K images each, so every anchor has positives and negatives for the
batch-hard triplet loss (Hermans et al., "In Defense of the Triplet Loss for Person
Re-Identification", 2017). The epoch follows the random identity sampler of the strong ReID baseline
(Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-identification", CVPRW 2019).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
from torch.utils.data import Sampler

from reidkit import distributed


class PKSampler(Sampler[list[int]]):
    """Batch sampler yielding lists of P×K dataset indices: P distinct identities, K images each.

    One epoch: every identity's image indices are shuffled (an identity with fewer than K images
    draws K with replacement instead) and cut into chunks of K, dropping an incomplete last chunk.
    Then, while at least P identities have chunks left, P of them are drawn uniformly without
    replacement and one chunk of each forms a batch. The epoch therefore has at most
    ⌊Σ_i max(1, ⌊n_i / K⌋) / P⌋ batches; the exact number depends on the draw and can differ by a
    few batches between epochs. `len()` returns the exact count for the current epoch.

    That is Torchreid's and the strong baseline's epoch (`epoch_length="pk"`). fast-reid's sampler is
    endless and its epoch is ⌊N / (P·K)⌋ iterations for N training images (`epoch_length="images"`): the
    epoch then has exactly that many batches, and when the identities run out within it, a fresh pass
    (shuffled again, from a generator seeded by (seed, epoch, pass)) continues it.

    Pass it as `DataLoader(..., batch_sampler=sampler)` and call `set_epoch` before each epoch.
    The order is a deterministic function of (seed, epoch).

    Args:
        pids: identity label of every dataset index, `[N]`.
        p: identities per batch P (at least 2, so that every anchor has negatives).
        k: images per identity K (at least 1).
        seed: non-negative base seed.
        epoch_length: "pk" (until fewer than P identities have K unused images) or "images" (⌊N / (P·K)⌋
            batches).

    Raises:
        ValueError: p < 2, k < 1, a negative seed, fewer than P identities, or an unknown epoch_length.
    """

    def __init__(self, pids: Sequence[int], p: int, k: int, seed: int = 0,
                 epoch_length: Literal["pk", "images"] = "pk") -> None:
        if p < 2:
            raise ValueError(f"p (identities per batch) must be at least 2 so that negatives exist, got {p}")
        if k < 1:
            raise ValueError(f"k (images per identity) must be at least 1, got {k}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if epoch_length not in ("pk", "images"):
            raise ValueError(f"epoch_length must be 'pk' or 'images', got {epoch_length!r}")
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
        self.fixed_length = len(labels) // (p * k) if epoch_length == "images" else None
        self._indices_per_identity = [np.flatnonzero(labels == identity) for identity in identities]
        self._batches: list[list[int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order `__iter__` and `__len__` describe."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        if epoch != self.epoch:
            self.epoch, self._batches = epoch, None

    def _epoch_batches(self) -> list[list[int]]:
        """Build the current epoch's batches once: one pass over the identities, or as many passes as a fixed
        epoch length needs."""
        if self._batches is not None:
            return self._batches
        batches = self._pass_batches(np.random.default_rng((self.seed, self.epoch)))
        if self.fixed_length is not None:
            passes = 1
            while len(batches) < self.fixed_length:
                batches += self._pass_batches(np.random.default_rng((self.seed, self.epoch, passes)))
                passes += 1
            batches = batches[: self.fixed_length]
        self._batches = batches
        return batches

    def _pass_batches(self, rng: np.random.Generator) -> list[list[int]]:
        """One pass: every identity's images cut into chunks of K, drawn P identities at a time."""
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
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._epoch_batches()

    def __len__(self) -> int:
        """Number of batches of the current epoch (exact)."""
        return len(self._epoch_batches())


class SeededBatchSampler(Sampler[list[tuple[int, int]]]):
    """Wraps a batch sampler so that every drawn image carries its own augmentation seed.

    Yields batches of `(dataset_index, seed)` with seed = f(seed, epoch, batch position, slot), so the
    augmented pixels of a batch depend neither on the number of DataLoader workers nor on which batches
    were loaded before: a run resumed in the middle of an epoch (`skip`) sees exactly the batches, and
    the pixels, of an uninterrupted one. In a distributed run each rank passes its first slot in the
    global batch as `slot_offset`, so the ranks together see the pixels of a single-process run.
    """

    def __init__(self, batch_sampler, seed: int = 0, slot_offset: int = 0) -> None:
        self.batch_sampler = batch_sampler
        self.seed = seed
        self.slot_offset = slot_offset  # a rank's first slot in the global batch (distributed runs)
        self.epoch = 0
        self.skipped = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (forwarded to the wrapped sampler) and start it from its first batch."""
        self.batch_sampler.set_epoch(epoch)
        self.epoch, self.skipped = epoch, 0

    def skip(self, batches: int) -> None:
        """Leave out the first `batches` batches of the current epoch (resuming mid-epoch)."""
        self.skipped = batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for position, batch in enumerate(self.batch_sampler):
            if position < self.skipped:
                continue
            sequence = np.random.SeedSequence([self.seed, self.epoch, position])
            seeds = sequence.generate_state(self.slot_offset + len(batch), np.uint64)[self.slot_offset:]
            yield [(int(index), int(seed % 2**63)) for index, seed in zip(batch, seeds)]

    def __len__(self) -> int:
        return len(self.batch_sampler) - self.skipped


class DistributedPKSampler(PKSampler):
    """Per-rank share of a global P×K batch, split between ranks by whole identities.

    Every rank builds the same global batches as `PKSampler(pids, p, k, seed)` at the same epoch
    (so `world_size=1` reproduces `PKSampler` exactly), and rank r yields the images of identities
    [r·P/W, (r+1)·P/W) of each global batch: P_local = P/W identities × K images. Concatenating the
    ranks' batches in rank order gives the global batch; no identity appears on two ranks in the same
    step, and every rank has the same number of steps, so collectives stay in lockstep. Splitting by
    identity keeps positives and negatives on every rank (a rank with one identity would have no
    negatives and a metric loss of 0; Hermans et al. 2017 need P ≥ 2 per batch).

    Pass it as `DataLoader(..., batch_sampler=sampler)` on each rank and call `set_epoch` before each
    epoch with the same epoch on every rank.

    Args:
        pids: identity label of every dataset index, `[N]` (the same list on every rank).
        p: identities per GLOBAL batch P, a multiple of the world size.
        k: images per identity K.
        seed: non-negative base seed, the same on every rank.
        epoch_length: "pk" or "images", as for `PKSampler`.
        rank: this process's rank; defaults to `reidkit.distributed.rank()`.
        world_size: number of ranks W; defaults to `reidkit.distributed.world_size()`.

    Raises:
        ValueError: W < 1, rank outside [0, W), P not a multiple of W, P/W < 2, or any error of
            `PKSampler`.
    """

    def __init__(
        self,
        pids: Sequence[int],
        p: int,
        k: int,
        seed: int = 0,
        epoch_length: Literal["pk", "images"] = "pk",
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        world_size = distributed.world_size() if world_size is None else world_size
        rank = distributed.rank() if rank is None else rank
        if world_size < 1:
            raise ValueError(f"world_size must be at least 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if p % world_size:
            raise ValueError(
                f"P={p} identities per global batch cannot be split by whole identities over W={world_size} "
                f"ranks; set data.p to a multiple of nproc"
            )
        p_local = p // world_size
        if p_local < 2:
            raise ValueError(
                f"P={p} identities per global batch split over W={world_size} ranks leaves P_local={p_local} < 2: "
                f"a rank with one identity has no negatives and its metric loss is 0; raise data.p or lower nproc"
            )
        super().__init__(pids, p, k, seed, epoch_length)
        self.rank, self.world_size, self.p_local = rank, world_size, p_local

    def __iter__(self) -> Iterator[list[int]]:
        span = self.p_local * self.k  # a global batch is P consecutive chunks of K indices
        start = self.rank * span
        for batch in self._epoch_batches():
            yield batch[start : start + span]
