"""Feature extraction: a model's outputs for every image of a loader, a split or a list of files."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from reidkit.data.datasets import Sample
from reidkit.data.loading import build_test_loader
from reidkit.data.tracklets import is_tracklet_split
from reidkit.data.transforms import build_test_transform
from reidkit.devices import autocast_context, uses_amp
from reidkit.errors import ReidkitError
from reidkit.retrieval.feature_files import save_feature_file


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """`model` in evaluation mode inside the block; its train/eval mode restored after it, errors included."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def extract_outputs(model: nn.Module, loader, keys: tuple[str, ...] = ("bn_features",), flip: bool = False,
                    device: torch.device | str = "cpu", amp: bool = False, progress: bool = True,
                    on_device: bool = False) -> dict[str, torch.Tensor]:
    """Model outputs `keys` for every image of `loader`, in loader order, as float32 tensors [N, D] on the
    CPU (on `device` with `on_device`).

    With `flip`, each output is the mean over the image and its horizontal mirror; the mirror is taken
    of the already normalised tensor, so normalisation happens once. On a GPU the images go in channels-last
    layout (the model's too, as the trainer keeps it), under bfloat16 autocast with `amp`, and the outputs
    stay there until the end: the host never waits for a batch.

    Raises:
        ReidkitError: the model gave NaN or infinite outputs (diverged weights).
    """
    device = torch.device(device)
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    if device.type == "cuda":
        model.to(memory_format=layout)
    chunks: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    with eval_mode(model):
        for batch in tqdm(loader, desc="extract", unit="batch", leave=False, disable=None if progress else True):
            images = batch["images"].to(device, non_blocking=True)
            images = images.contiguous(memory_format=layout) if images.dim() == 4 else images
            # the camera ids, for a model with a camera embedding (TransReID)
            camids = (batch["camids"].to(device),) if getattr(model, "uses_camids", False) and "camids" in batch else ()
            # tracklets [B, T, 3, H, W] of several lengths come padded, with the mask of their real frames
            mask = {"frame_mask": batch["frame_mask"].to(device)} if "frame_mask" in batch else {}
            with autocast_context(device, amp):
                outputs = model(images, *camids, **mask)
                mirrored = model(torch.flip(images, dims=[-1]), *camids, **mask) if flip else None
            for key in keys:
                value = outputs[key].float()
                chunks[key].append((value + mirrored[key].float()).div(2) if flip else value)
    result = {key: torch.cat(values) if values else torch.empty(0, device=device) for key, values in chunks.items()}
    for key, values in result.items():
        finite = torch.isfinite(values).flatten(1).all(dim=1) if values.dim() > 1 else torch.isfinite(values)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0, 0])
            raise ReidkitError(f"the model gives NaN or infinite '{key}' outputs, first for image {first} of the "
                               f"split: its weights have diverged; use an earlier checkpoint "
                               f"(--weights RUN/checkpoints/epoch_NNN.safetensors) or retrain")
    return result if on_device else {key: values.cpu() for key, values in result.items()}


def extract_features(model: nn.Module, loader, feature: str = "bn_features", flip: bool = False,
                     device: torch.device | str = "cpu", amp: bool = False, progress: bool = True) -> torch.Tensor:
    """The `feature` output of `extract_outputs`: [N, D] float32 on the CPU."""
    return extract_outputs(model, loader, (feature,), flip, device, amp, progress)[feature]


def extract_split(model: nn.Module, samples: list[Sample], config, device: torch.device, out: str | Path,
                  progress: bool = True, model_digest: str = "") -> torch.Tensor:
    """Extract features of `samples` as `config.eval` says and write them to the feature file `out`
    (`reidkit.retrieval.feature_files`) with the run's `metric` and `model_digest`; returns [N, D]. Tracklets
    give one feature each (`reidkit.engine.tracklet_extraction`), listed in the file by their first frame."""
    if is_tracklet_split(samples):
        from reidkit.engine.tracklet_extraction import tracklet_outputs  # it builds on this module

        features = tracklet_outputs(model, samples, (config.eval.feature,), config.eval, config.data.height,
                                    config.data.width, config.data.seq_len, device, config.data.workers,
                                    uses_amp(config.train, device), progress,
                                    config.data.interpolation)[config.eval.feature].cpu()
        samples = [(paths[0], pid, camid) for paths, pid, camid in samples]
    else:
        transform = build_test_transform(config.data.height, config.data.width,
                                         interpolation=config.data.interpolation)
        loader = build_test_loader(samples, transform, batch_size=config.eval.batch_size, workers=config.data.workers)
        features = extract_features(model, loader, feature=config.eval.feature, flip=config.eval.flip,
                                    device=device, amp=uses_amp(config.train, device), progress=progress)
    save_feature_file(out, features, samples, {"feature": config.eval.feature, "flip": str(config.eval.flip),
                                               "metric": config.eval.metric, "model_digest": model_digest})
    return features


def image_outputs(model: nn.Module, paths: list[str], config, device: torch.device, keys: tuple[str, ...],
                  progress: bool = False) -> dict[str, torch.Tensor]:
    """Outputs `keys` [len(paths), D] of the model for image files, preprocessed as for evaluation."""
    samples = [(str(path), -1, -1) for path in paths]
    transform = build_test_transform(config.data.height, config.data.width, interpolation=config.data.interpolation)
    loader = build_test_loader(samples, transform, batch_size=config.eval.batch_size, workers=0)
    return extract_outputs(model, loader, keys, flip=config.eval.flip, device=device,
                           amp=uses_amp(config.train, device), progress=progress)
