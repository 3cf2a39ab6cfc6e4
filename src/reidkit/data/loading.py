"""Image loading: a map-style dataset over `(path, pid, camid)` samples and the train/test DataLoaders.

The train loader draws identity-balanced P×K batches (`PKSampler`) and is reproducible from its seed:
the batch order depends on (seed, epoch) and each image's augmentation on (seed, epoch, batch, slot).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from reidkit.data.datasets import Sample
from reidkit.data.images import read_rgb
from reidkit.data.samplers import PKSampler, SeededBatchSampler
from reidkit.errors import DatasetError

BatchTransform = Callable[[torch.Tensor, Sequence[int]], torch.Tensor]  # (images [B, 3, H, W], seeds) → images


class ImageDataset(Dataset):
    """Images of a list of samples, each returned as a dict.

    Args:
        samples: `(path, pid, camid)` tuples.
        transform: maps an RGB PIL image to a tensor `[3, H, W]` (see `reidkit.data.transforms`).
        skip_bad_images: return None for an unreadable image (the collate function drops it and
            counts it) instead of raising.
        training: the images train a model: an unreadable one's error offers `data.skip_bad_images`.
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], torch.Tensor],
                 skip_bad_images: bool = False, training: bool = False) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self.training = training

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor | int] | None:
        """Return `{"images": [3, H, W], "pids": int, "camids": int, "indices": int}`.

        `item` is an index, or `(index, seed)`: the transform then draws its randomness from a torch
        generator state seeded with `seed` (the global state is restored afterwards), and the item also holds
        `"seeds": seed` for a batch transform (`collate_skipping_bad`).

        Raises:
            DatasetError: the file is missing, unreadable or not a valid image (unless skipped).
        """
        index, seed = item if isinstance(item, tuple) else (item, None)
        path, pid, camid = self.samples[index]
        try:
            rgb = read_rgb(path)
        except (OSError, ValueError) as error:
            if self.skip_bad_images:
                return None
            skip = ", or set data.skip_bad_images=true to skip unreadable training images" if self.training else ""
            raise DatasetError(f"cannot read image {path} ({error}); delete or replace the file{skip}") from error
        if seed is None:
            return {"images": self.transform(rgb), "pids": pid, "camids": camid, "indices": index}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            images = self.transform(rgb)
        return {"images": images, "pids": pid, "camids": camid, "indices": index, "seeds": seed}


def collate_skipping_bad(batch: list[dict | None], batch_transform: BatchTransform | None = None) -> dict:
    """Default collation of the readable items, plus `"skipped"`: how many were unreadable (None). Items with
    `"seeds"` have their images passed through `batch_transform(images [B, 3, H, W], seeds)` (random patch),
    and the seeds left out of the batch."""
    readable = [item for item in batch if item is not None]
    if not readable:
        return {"skipped": len(batch)}
    collated = default_collate(readable)
    seeds = collated.pop("seeds", None)
    if batch_transform is not None and seeds is not None:
        collated["images"] = batch_transform(collated["images"], seeds.tolist())
    return collated | {"skipped": len(batch) - len(readable)}


def seed_worker(worker_id: int) -> None:
    """Seed `random` and NumPy in a DataLoader worker from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_train_loader(
    samples: Sequence[Sample],
    transform: Callable[[Image.Image], torch.Tensor],
    p: int,
    k: int,
    seed: int,
    workers: int,
    skip_bad_images: bool = False,
    batch_sampler: Sampler | None = None,
    batch_transform: BatchTransform | None = None,
) -> DataLoader:
    """Build the training DataLoader with P×K batches (batch size P·K).

    Call `loader.batch_sampler.set_epoch(epoch)` before each epoch (and `.skip(n)` to resume after n
    batches). Every image's augmentation is seeded from (seed, epoch, batch, slot), so batches are
    identical whatever the number of workers.

    Args:
        samples: train samples with labels 0..C-1.
        transform: training transform.
        p: identities per batch.
        k: images per identity.
        seed: seed of the batch order and of the augmentations.
        workers: number of worker processes (0 loads in the main process).
        skip_bad_images: drop unreadable images from their batch (counted in `batch["skipped"]`).
        batch_sampler: a P×K batch sampler to use instead of `PKSampler` (e.g. the distributed one).
        batch_transform: applied to each collated batch with its images' seeds (random patch), in the workers.

    Raises:
        ValueError: invalid p or k, or fewer than p identities (see `PKSampler`).
    """
    return DataLoader(
        ImageDataset(samples, transform, skip_bad_images, training=True),
        batch_sampler=seeded_pk_batches(samples, p, k, seed, batch_sampler),
        num_workers=workers,
        worker_init_fn=seed_worker,
        collate_fn=partial(collate_skipping_bad, batch_transform=batch_transform),
        generator=torch.Generator().manual_seed(seed),  # worker seeds; the global RNG stays untouched
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def seeded_pk_batches(samples: Sequence[Sample], p: int, k: int, seed: int,
                      batch_sampler: Sampler | None = None) -> SeededBatchSampler:
    """P×K batches of `(index, augmentation seed)`: `batch_sampler` (default `PKSampler`) wrapped in a
    `SeededBatchSampler` whose slots are those of the global batch (a distributed sampler's rank offset)."""
    pk_sampler = batch_sampler or PKSampler([pid for _, pid, _ in samples], p, k, seed)
    slot_offset = getattr(pk_sampler, "rank", 0) * getattr(pk_sampler, "p_local", p) * k
    return SeededBatchSampler(pk_sampler, seed, slot_offset)


def build_test_loader(
    samples: Sequence[Sample],
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int,
    workers: int,
) -> DataLoader:
    """Build an evaluation DataLoader that keeps the sample order (no shuffle, last batch kept).

    Args:
        samples: query or gallery samples.
        transform: test transform.
        batch_size: images per batch.
        workers: number of worker processes (0 loads in the main process).
    """
    return DataLoader(
        ImageDataset(samples, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),  # iterating leaves the global RNG untouched
        pin_memory=torch.cuda.is_available(),
    )
