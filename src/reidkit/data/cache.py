"""Decoded images (`data.cache`): every training image decoded once, resized to the training size
and kept as uint8 `[N, 3, H, W]`, in host memory or on the training device; batches are then augmented as
a whole where they live (`reidkit.data.batch_transforms`) instead of per image in worker processes. The
query and gallery images of a run's evaluations are decoded once the same way (`CachedTestImages`).

A quarter of the bytes of float32 crosses memory and PCIe, decoding happens once instead of every epoch,
and the batches, seeds and pixels are those of the PIL loader, so resume stays bitwise exact on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from tqdm import tqdm

from reidkit.data.batch_transforms import BatchAugmentation, normalize_uint8
from reidkit.data.datasets import Sample
from reidkit.data.loading import ImageDataset
from reidkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, _resize, pixel_scale

CACHE_MODES = ("auto", "none", "memory", "device")
AUTO_SHARE = 0.25  # "auto" caches when the images take at most this share of the free memory


def cache_bytes(num_images: int, height: int, width: int) -> int:
    """Bytes of the uint8 cache of `num_images` images at height × width."""
    return num_images * 3 * height * width


def _available_host_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on this platform: assume it does not fit
        return 0


def choose_cache(mode: str, num_images: int, height: int, width: int, device: torch.device) -> tuple[str, str]:
    """(cache, why): `mode` itself unless "auto", which picks "device" on an accelerator whose free memory
    holds the images 4 times over, else "memory" if free host memory does, else "none"."""
    if mode not in CACHE_MODES:
        raise ValueError(f"data.cache must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
    size = cache_bytes(num_images, height, width)
    described = f"{num_images} images, {size / 2**20:.0f} MiB as uint8 at {height}×{width}"
    if mode != "auto":
        return mode, f"data.cache={mode}; {described}"
    if device.type == "cuda" and size <= AUTO_SHARE * torch.cuda.mem_get_info(device)[0]:
        return "device", f"data.cache=auto: on {device} ({described})"
    if size <= AUTO_SHARE * _available_host_bytes():
        return "memory", f"data.cache=auto: in host memory ({described})"
    return "none", f"data.cache=auto: not cached, {described} exceed a quarter of the free memory; PIL workers"


def decode_images(samples: Sequence[Sample], height: int, width: int, workers: int = 0,
                  skip_bad_images: bool = False, progress: bool = True,
                  interpolation: str = "bilinear") -> tuple[Tensor, Tensor]:
    """(images uint8 `[N, 3, height, width]`, readable bool `[N]`) of `samples`, resized as the training
    transform resizes (PIL, `interpolation` with antialiasing); unreadable images are zeros, marked unreadable
    when `skip_bad_images`, an error naming the file otherwise.

    Raises:
        DatasetError: an unreadable image without `skip_bad_images`.
    """
    transform = v2.Compose([_resize(height, width, interpolation), v2.PILToTensor()])
    dataset = ImageDataset(samples, transform, skip_bad_images, training=True)
    loader = DataLoader(dataset, batch_size=64, num_workers=workers, collate_fn=list,
                        generator=torch.Generator().manual_seed(0))  # the global RNG stays untouched
    images = torch.zeros(len(samples), 3, height, width, dtype=torch.uint8)
    readable = torch.zeros(len(samples), dtype=torch.bool)
    start = 0
    for items in tqdm(loader, desc="decode", unit="batch", leave=False, disable=None if progress else True):
        for offset, item in enumerate(items):
            if item is not None:
                images[start + offset] = item["images"]
                readable[start + offset] = True
        start += len(items)
    return images, readable


class CachedTrainLoader:
    """Training batches from decoded images: the `SeededBatchSampler` batches of the PIL loader, each
    gathered from the cache, moved to `device` and augmented there as a whole.

    Yields `{"images": float [B, 3, H, W] on device, "pids": [B], "indices": [B], "skipped": int}` (and
    "camids" [B] when given; images
    unreadable at decoding are dropped from their batch and counted, as the PIL loader does), or
    `{"skipped": B}` when none of a batch's images is readable. Exposes `batch_sampler` like a DataLoader.
    """

    def __init__(self, images: Tensor, readable: Tensor, pids: Sequence[int], batch_sampler,
                 augmentation: BatchAugmentation, device: torch.device, camids: Sequence[int] | None = None) -> None:
        self.images, self.readable, self.device = images, readable, device
        self.pids = torch.as_tensor(list(pids), dtype=torch.int64)
        self.camids = torch.as_tensor(list(camids), dtype=torch.int64) if camids is not None else None
        self.batch_sampler, self.augmentation = batch_sampler, augmentation

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.batch_sampler:
            indices = torch.tensor([index for index, _ in batch], dtype=torch.int64)
            keep = self.readable[indices]
            seeds = [seed for (_, seed), kept in zip(batch, keep.tolist()) if kept]
            indices = indices[keep]
            if not len(indices):
                yield {"skipped": len(batch)}
                continue
            images = self.images[indices.to(self.images.device)]
            if images.device.type == "cpu" and self.device.type == "cuda":
                images = images.pin_memory()  # copied to the GPU without the host waiting
            images = images.to(self.device, non_blocking=True)
            cameras = {"camids": self.camids[indices]} if self.camids is not None else {}
            yield {"images": self.augmentation(images, seeds), "pids": self.pids[indices], "indices": indices,
                   "skipped": len(batch) - len(indices), **cameras}


class CachedTestImages:
    """Query or gallery images decoded once at the test size, uint8 `[N, 3, H, W]` in host memory or on the
    device: every evaluation of a run reads them instead of decoding each image again. A batch is normalised
    where it lives with the operations of `build_test_transform` (resize at decoding, then float and
    normalisation), so its features equal those of the PIL test loader.
    """

    def __init__(self, images: Tensor, camids: Tensor | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        self.images, self.camids = images, camids  # camids [N]: for a model with a camera embedding
        self.mean, self.std = torch.tensor(pixel_scale(IMAGENET_MEAN)), torch.tensor(pixel_scale(IMAGENET_STD))

    @classmethod
    def decode(cls, samples: Sequence[Sample], height: int, width: int, device: torch.device, workers: int = 0,
               progress: bool = True, interpolation: str = "bilinear") -> CachedTestImages:
        """The images of `samples`, on `device` (host memory for "cpu"), resized with `interpolation`.

        Raises:
            DatasetError: an unreadable image (the test sets are never skipped from).
        """
        images, _ = decode_images(samples, height, width, workers, skip_bad_images=False, progress=progress,
                                  interpolation=interpolation)
        return cls(images.to(device), torch.tensor([sample[2] for sample in samples], dtype=torch.int64))

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, start: int, stop: int, batch_size: int, device: torch.device) -> Iterator[dict]:
        """`{"images": float [B, 3, H, W] on device}` for images start..stop−1 in order, as a test loader."""
        for first in range(start, stop, batch_size):
            images = self.images[first:min(first + batch_size, stop)]
            if images.device.type == "cpu" and device.type == "cuda":
                images = images.pin_memory()
            cameras = {"camids": self.camids[first:min(first + batch_size, stop)]} if self.camids is not None else {}
            yield {"images": normalize_uint8(images.to(device, non_blocking=True), self.mean, self.std), **cameras}
