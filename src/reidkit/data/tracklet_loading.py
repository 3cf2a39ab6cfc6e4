"""Frames of tracklets for training and evaluation: which frames a tracklet contributes (`seq_len` with
Torchreid's "evenly", "random" and "all" strategies), chunks of long tracklets, and batches of
variable-length tracklets padded to `[B, T, 3, H, W]` with a frame mask `[B, T]` (True: a real frame).

P×K batches over tracklet identities are the image `PKSampler` over the tracklets' pids: one tracklet
per slot. Every tracklet's frame choice and augmentation derive from the slot seed of `SeededBatchSampler`,
and all frames of a tracklet get the same augmentation draws (one flip, crop and erasing per tracklet).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from reidkit.data.images import read_rgb
from reidkit.data.loading import seed_worker, seeded_pk_batches
from reidkit.errors import DatasetError

SAMPLING = ("evenly", "random", "all")


def sample_frames(num_frames: int, seq_len: int, strategy: str, rng: np.random.Generator | None = None) -> list[int]:
    """Indices of the frames a tracklet of `num_frames` contributes, in time order.

    "evenly": `seq_len` frames at a regular step over the first `num_frames - num_frames % seq_len`
    frames (short tracklets: every frame, then the last one repeated); "random": `seq_len` frames drawn
    without replacement (with replacement when shorter), sorted; "all": every frame. As Torchreid's
    VideoDataset samples them.

    Raises:
        ValueError: an unknown strategy, `num_frames` < 1, `seq_len` < 1, or "random" without `rng`.
    """
    if strategy not in SAMPLING:
        raise ValueError(f"unknown frame sampling {strategy!r}; choose one of {', '.join(SAMPLING)}")
    if num_frames < 1 or seq_len < 1:
        raise ValueError(f"num_frames and seq_len must be at least 1, got {num_frames} and {seq_len}")
    if strategy == "all":
        return list(range(num_frames))
    if strategy == "random":
        if rng is None:
            raise ValueError("random frame sampling needs a generator")
        return sorted(rng.choice(num_frames, size=seq_len, replace=num_frames < seq_len).tolist())
    if num_frames < seq_len:
        return list(range(num_frames)) + [num_frames - 1] * (seq_len - num_frames)
    step = (num_frames - num_frames % seq_len) // seq_len
    return list(range(0, step * seq_len, step))


def frame_chunks(frames: Sequence[int], chunk_len: int) -> list[list[int]]:
    """`frames` cut into consecutive chunks of `chunk_len` (the last one shorter); one chunk if `chunk_len`
    is 0."""
    if chunk_len <= 0:
        return [list(frames)]
    return [list(frames[i:i + chunk_len]) for i in range(0, len(frames), chunk_len)]


class TrackletFrames(Dataset):
    """Frames of tracklet items `(tracklet index, frame indices)` of `samples` `(paths, pid, camid)`.

    Item `i`, or `(i, seed)`: `{"images": [T, 3, H, W], "pids", "camids", "indices"}` where `indices` is the
    tracklet index. With `seq_len` and `strategy`, item `i` is tracklet `i` with frames drawn by
    `sample_frames` (a seed draws them for "random" and seeds the augmentation); else `items` lists the
    frames of each item (evaluation chunks).
    """

    def __init__(self, samples: Sequence, transform: Callable[[Image.Image], torch.Tensor],
                 items: Sequence[tuple[int, list[int]]] | None = None, seq_len: int = 0, strategy: str = "all",
                 skip_bad_images: bool = False, training: bool = False) -> None:
        self.samples, self.transform, self.items = list(samples), transform, items
        self.seq_len, self.strategy = seq_len, strategy
        self.skip_bad_images, self.training = skip_bad_images, training

    def __len__(self) -> int:
        return len(self.items) if self.items is not None else len(self.samples)

    def __getitem__(self, item: int | tuple[int, int]) -> dict | None:
        index, seed = item if isinstance(item, tuple) else (item, None)
        if self.items is not None:
            index, frames = self.items[index]
        paths, pid, camid = self.samples[index]
        if self.items is None:
            frames = sample_frames(len(paths), self.seq_len or len(paths), self.strategy,
                                   np.random.default_rng(seed if seed is not None else index))
        images = []
        for frame in frames:
            try:
                rgb = read_rgb(paths[frame])
            except (OSError, ValueError) as error:
                if self.skip_bad_images:
                    return None
                skip = ", or set data.skip_bad_images=true to skip tracklets with unreadable frames" \
                    if self.training else ""
                raise DatasetError(f"cannot read frame {paths[frame]} ({error}); delete or replace the file"
                                   f"{skip}") from error
            with torch.random.fork_rng(devices=[]):  # one augmentation draw per tracklet: same seed per frame
                torch.manual_seed(seed if seed is not None else 0)
                images.append(self.transform(rgb))
        return {"images": torch.stack(images), "pids": pid, "camids": camid, "indices": index}


def collate_tracklets(batch: list[dict | None]) -> dict:
    """Pad the readable tracklets to the longest: `images` [B, T, 3, H, W] (zeros after each tracklet's
    end), `frame_mask` [B, T] bool, `pids`, `camids`, `indices` [B], and `skipped` (unreadable tracklets)."""
    readable = [item for item in batch if item is not None]
    if not readable:
        return {"skipped": len(batch)}
    longest = max(len(item["images"]) for item in readable)
    images = torch.zeros(len(readable), longest, *readable[0]["images"].shape[1:])
    mask = torch.zeros(len(readable), longest, dtype=torch.bool)
    for row, item in enumerate(readable):
        images[row, :len(item["images"])] = item["images"]
        mask[row, :len(item["images"])] = True
    labels = {key: torch.tensor([item[key] for item in readable]) for key in ("pids", "camids", "indices")}
    return {"images": images, "frame_mask": mask, **labels, "skipped": len(batch) - len(readable)}


def build_tracklet_train_loader(samples: Sequence, transform: Callable[[Image.Image], torch.Tensor], p: int, k: int,
                                seed: int, workers: int, seq_len: int, strategy: str, skip_bad_images: bool = False,
                                batch_sampler: Sampler | None = None) -> DataLoader:
    """P×K batches of tracklets (P identities, K tracklets each) with `seq_len` frames drawn by `strategy`
    ("all": every frame, batches padded with a mask); reproducible from `seed` like the image loader
    (`reidkit.data.loading.build_train_loader`)."""
    return DataLoader(
        TrackletFrames(samples, transform, seq_len=seq_len, strategy=strategy, skip_bad_images=skip_bad_images,
                       training=True),
        batch_sampler=seeded_pk_batches(samples, p, k, seed, batch_sampler), num_workers=workers,
        worker_init_fn=seed_worker, collate_fn=collate_tracklets, generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers > 0)


def tracklet_chunks(samples: Sequence, seq_len: int, strategy: str, chunk_len: int) -> list[tuple[int, list[int]]]:
    """Evaluation items: each tracklet's frames (`sample_frames` with seed = tracklet index for "random")
    cut into chunks of at most `chunk_len` frames (0: whole)."""
    return [(index, chunk)
            for index, (paths, _, _) in enumerate(samples)
            for chunk in frame_chunks(sample_frames(len(paths), seq_len or len(paths), strategy,
                                                    np.random.default_rng(index)), chunk_len)]


def build_tracklet_test_loader(samples: Sequence, transform: Callable[[Image.Image], torch.Tensor],
                               items: Sequence[tuple[int, list[int]]], batch_size: int, workers: int) -> DataLoader:
    """Evaluation loader over tracklet chunks `items` in order; `batch_size` counts frames (at least one
    chunk per batch)."""
    batches, current, frames = [], [], 0
    for position, (_, chunk) in enumerate(items):
        if current and frames + len(chunk) > batch_size:
            batches.append(current)
            current, frames = [], 0
        current.append(position)
        frames += len(chunk)
    batches += [current] if current else []
    return DataLoader(TrackletFrames(samples, transform, items=items), batch_sampler=batches, num_workers=workers,
                      collate_fn=collate_tracklets)
