"""Features of tracklets: each tracklet's frames (`eval.frame_sampling`) fed in chunks of `eval.chunk_frames`
through the model, which aggregates each chunk, and the chunks' features averaged per tracklet, weighted by
their numbers of frames (for average pooling this is the average over all the frames)."""

from __future__ import annotations

import torch
from torch import nn

from reidkit.data.tracklet_loading import build_tracklet_test_loader, tracklet_chunks
from reidkit.data.transforms import build_test_transform
from reidkit.engine.extraction import extract_outputs


def merge_chunks(outputs: torch.Tensor, owners: torch.Tensor, frames: torch.Tensor, count: int) -> torch.Tensor:
    """Per-tracklet weighted mean of chunk outputs [C, D]: tracklet `owners[c]`, weight `frames[c]` → [count, D]."""
    weights = frames.to(outputs)
    totals = torch.zeros(count, outputs.shape[1], dtype=outputs.dtype, device=outputs.device)
    totals.index_add_(0, owners.to(outputs.device), outputs * weights[:, None])
    norm = torch.zeros(count, dtype=outputs.dtype, device=outputs.device).index_add_(0, owners.to(outputs.device),
                                                                                      weights)
    return totals / norm[:, None]


def tracklet_outputs(model: nn.Module, samples: list, keys: tuple[str, ...], eval_config, height: int, width: int,
                     seq_len: int, device: torch.device | str = "cpu", workers: int = 0, amp: bool = False,
                     progress: bool = True, interpolation: str = "bilinear") -> dict[str, torch.Tensor]:
    """Model outputs `keys` [len(samples), D] of tracklets `(paths, pid, camid)`, on `device` (see module
    docstring); `seq_len` frames per tracklet unless `eval_config.frame_sampling` is "all"; frames resized with
    `interpolation` (`data.interpolation`)."""
    items = tracklet_chunks(samples, seq_len, eval_config.frame_sampling, eval_config.chunk_frames)
    loader = build_tracklet_test_loader(samples, build_test_transform(height, width, interpolation=interpolation), items,
                                        eval_config.batch_size, workers)
    chunks = extract_outputs(model, loader, keys, flip=eval_config.flip, device=device, amp=amp,
                             progress=progress, on_device=True)
    owners = torch.tensor([index for index, _ in items], dtype=torch.long)
    frames = torch.tensor([len(chunk) for _, chunk in items])
    return {key: merge_chunks(value, owners, frames, len(samples)) for key, value in chunks.items()}
