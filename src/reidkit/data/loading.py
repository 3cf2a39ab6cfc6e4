"""Image loading: a map-style dataset over `(path, pid, camid)` samples and the train/test DataLoaders.

The train loader draws identity-balanced P×K batches (`PKSampler`) and is reproducible from its seed:
the batch order depends on (seed, epoch) and worker augmentation seeds come from a seeded generator.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from reidkit.data.datasets import Sample
from reidkit.data.samplers import PKSampler
from reidkit.errors import DatasetError


class ImageDataset(Dataset):
    """Images of a list of samples, each returned as a dict.

    Args:
        samples: `(path, pid, camid)` tuples.
        transform: maps an RGB PIL image to a tensor `[3, H, W]` (see `reidkit.data.transforms`).
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        """Return `{"images": [3, H, W], "pids": int, "camids": int, "indices": int}`.

        Raises:
            DatasetError: the file is missing, unreadable or not a valid image.
        """
        path, pid, camid = self.samples[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError) as error:
            raise DatasetError(
                f"cannot read image {path} ({error}); delete or replace the file, "
                f"or remove it from the data set, then rerun."
            ) from error
        return {"images": self.transform(rgb), "pids": pid, "camids": camid, "indices": index}


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
) -> DataLoader:
    """Build the training DataLoader with P×K batches (batch size P·K).

    Call `loader.batch_sampler.set_epoch(epoch)` before each epoch. With `workers=0` the
    augmentations draw from the global torch RNG, so seed it (`torch.manual_seed`) for repeatable
    images; with workers > 0 each worker's seed comes from a generator seeded with `seed`.

    Args:
        samples: train samples with labels 0..C-1.
        transform: training transform.
        p: identities per batch.
        k: images per identity.
        seed: seed of the batch order and of the worker seeds.
        workers: number of worker processes (0 loads in the main process).

    Raises:
        ValueError: invalid p or k, or fewer than p identities (see `PKSampler`).
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        ImageDataset(samples, transform),
        batch_sampler=PKSampler([pid for _, pid, _ in samples], p, k, seed),
        num_workers=workers,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


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
        pin_memory=torch.cuda.is_available(),
    )
