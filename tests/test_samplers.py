"""Tests for the P×K identity batch sampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from reidkit.data.samplers import PKSampler


def _random_pids(seed: int) -> list[int]:
    """A shuffled pid list with 5-40 identities of 1-12 images each (raw pids not contiguous)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 13, size=rng.integers(5, 41))
    pids = np.repeat(rng.choice(1000, size=len(counts), replace=False), counts)
    return rng.permutation(pids).tolist()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("p", "k"), [(2, 1), (4, 4), (5, 3)])
def test_batches_are_p_identities_by_k_images(seed: int, p: int, k: int) -> None:
    pids = _random_pids(seed)
    images_per_pid = Counter(pids)
    sampler = PKSampler(pids, p=p, k=k, seed=seed)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(sampler) == len(batches) > 0
        seen = Counter()
        for batch in batches:
            assert len(batch) == p * k
            per_pid = Counter(pids[index] for index in batch)
            assert len(per_pid) == p and set(per_pid.values()) == {k}
            for pid in per_pid:
                chunk = [index for index in batch if pids[index] == pid]
                if images_per_pid[pid] >= k:
                    assert len(set(chunk)) == k  # no replacement within a chunk
            seen.update(index for index in batch if images_per_pid[pids[index]] >= k)
        assert max(seen.values()) == 1  # each image of a >=K identity at most once per epoch
        max_batches = sum(max(1, n // k) for n in images_per_pid.values()) // p
        assert len(batches) <= max_batches


def test_deterministic_per_seed_and_epoch() -> None:
    pids = _random_pids(0)
    first, second = PKSampler(pids, 4, 4, seed=3), PKSampler(pids, 4, 4, seed=3)
    first.set_epoch(2)
    second.set_epoch(2)
    assert len(first) == len(second)  # len() does not change the order
    assert list(first) == list(second) == list(first)
    first.set_epoch(3)
    assert list(first) != list(second)
    assert list(PKSampler(pids, 4, 4, seed=4)) != list(PKSampler(pids, 4, 4, seed=3))


def test_small_identity_is_sampled_with_replacement() -> None:
    pids = [0, 1, 1, 1, 1, 2, 2, 2, 2]
    batches = list(PKSampler(pids, p=3, k=4))
    assert len(batches) == 1
    assert [index for index in batches[0] if pids[index] == 0] == [0, 0, 0, 0]


def test_len_is_exact_when_epoch_lengths_differ() -> None:
    # Chunk counts (3, 1, 1) with P=2: drawing the two single-chunk identities first ends the epoch
    # after 1 batch, otherwise it lasts 2; len() must follow the actual draw of each epoch.
    sampler = PKSampler([0, 0, 0, 1, 2], p=2, k=1, seed=0)
    lengths = set()
    for epoch in range(30):
        sampler.set_epoch(epoch)
        assert len(sampler) == len(list(sampler))
        lengths.add(len(sampler))
    assert lengths == {1, 2}


def test_every_image_used_when_counts_are_balanced() -> None:
    pids = [pid for pid in range(6) for _ in range(8)]
    batches = list(PKSampler(pids, p=3, k=4))
    assert len(batches) == 4
    assert sorted(index for batch in batches for index in batch) == list(range(48))


@pytest.mark.parametrize(
    ("p", "k", "seed", "message"),
    [(1, 4, 0, "at least 2"), (2, 0, 0, "at least 1"), (4, 2, 0, "p=4.*only 3 identities"), (2, 2, -1, "seed")],
)
def test_invalid_arguments(p: int, k: int, seed: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PKSampler([0, 1, 2, 2], p=p, k=k, seed=seed)


@pytest.mark.parametrize("seed", range(4))
def test_images_epoch_is_fast_reids_iteration_count(seed: int) -> None:
    """epoch_length="images": ⌊N / (P·K)⌋ P×K batches per epoch (fast-reid's iters_per_epoch), starting with the
    "pk" epoch's batches and continued by fresh passes over the identities."""
    pids = _random_pids(seed)
    p, k = 4, 2
    pk, images = PKSampler(pids, p, k, seed=seed), PKSampler(pids, p, k, seed=seed, epoch_length="images")
    for epoch in (0, 5):
        pk.set_epoch(epoch)
        images.set_epoch(epoch)
        batches = list(images)
        assert len(images) == len(batches) == len(pids) // (p * k)
        one_pass = list(pk)
        assert batches[: len(one_pass)] == one_pass[: len(batches)]
        for batch in batches:
            per_pid = Counter(pids[index] for index in batch)
            assert len(per_pid) == p and set(per_pid.values()) == {k}
    unbalanced = [0] * 40 + [1, 1, 2, 2, 3, 3]  # one pass gives 1 batch of 4 identities × 2; the epoch needs 5
    sampler = PKSampler(unbalanced, 4, 2, seed=1, epoch_length="images")
    batches = list(sampler)
    assert len(batches) == 46 // 8 == 5
    assert all({unbalanced[index] for index in batch} == {0, 1, 2, 3} for batch in batches)
    assert batches[1] != batches[0]  # the next pass is shuffled again, not a copy


def test_unknown_epoch_length_is_refused() -> None:
    with pytest.raises(ValueError, match="epoch_length must be 'pk' or 'images'"):
        PKSampler([0, 0, 1, 1], 2, 2, epoch_length="iterations")
