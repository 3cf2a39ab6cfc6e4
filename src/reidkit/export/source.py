"""What an export starts from: a run's model wrapped as images → retrieval feature, its metadata, the data set,
and the parity batch of real query images with the PyTorch features every format is checked against."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from reidkit.config.sections import MIN_HEIGHT, MIN_WIDTH
from reidkit.data.images import read_rgb
from reidkit.errors import ReidkitError
from reidkit.export.common import ModelInfo


class Source(NamedTuple):
    """`module`: images [N, 3, H, W] → features [N, D] (CPU, eval mode); `info`: what the exported file will
    say about itself; `images`: the parity batch [P, 3, H, W] (torch float32) of the first P query images;
    `expected`: `module(images)` [P, D] (numpy), for a video run tracklets [P, T, 3, H, W] of T = data.seq_len
    frames; `dataset`: the run's data set (int8 calibrates on its
    training images)."""

    module: Any
    info: ModelInfo
    images: Any
    expected: np.ndarray
    dataset: Any


def feature_module(model, feature: str, flip: bool):
    """An nn.Module: images [N, 3, H, W] (or tracklets [N, T, 3, H, W]) → model(images)[feature] [N, D],
    flip-averaged when `flip`."""
    import torch
    from torch import nn

    class FeatureModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            features = self.model(images)[feature]
            if flip:
                features = (features + self.model(torch.flip(images, dims=[-1]))[feature]) / 2
            return features

    return FeatureModel().eval()


def prepare_source(run_dir: str | Path, format: str, height: int | None = None, width: int | None = None,
                   weights: str | Path | None = None, parity_images: int = 16,
                   overrides: list[str] | None = None) -> Source:
    """The `Source` of a run folder (its config with `overrides`, its weights or `weights`).

    Raises:
        ValueError: `parity_images` < 1.
        ReidkitError: a bad run folder or data set, a size below the minimum, an unreadable query image.
    """
    import torch

    from reidkit.data.build import build_dataset
    from reidkit.data.tracklet_loading import sample_frames
    from reidkit.data.transforms import build_test_transform
    from reidkit.engine.saved_runs import load_run_config, load_run_model

    if parity_images < 1:
        raise ValueError(f"parity_images must be >= 1, got {parity_images}")
    config = load_run_config(run_dir, overrides)
    height = config.data.height if height is None else height
    width = config.data.width if width is None else width
    if height < MIN_HEIGHT or width < MIN_WIDTH:
        raise ReidkitError(f"export input size {height}×{width} is too small; give at least "
                           f"{MIN_HEIGHT}×{MIN_WIDTH} pixels")
    module = feature_module(load_run_model(run_dir, config, weights).cpu(), config.eval.feature, config.eval.flip)
    dataset = build_dataset(config.data, progress=False)
    transform = build_test_transform(height, width, interpolation=config.data.interpolation)
    images = []
    for path, _, _ in dataset.query[:parity_images]:
        # a video run's query tracklet gives data.seq_len frames evenly spaced (the exported T is dynamic)
        frames = [path[i] for i in sample_frames(len(path), config.data.seq_len, "evenly")] \
            if isinstance(path, tuple) else [path]
        try:
            tensors = [transform(read_rgb(frame)) for frame in frames]
        except (OSError, ValueError) as error:
            raise ReidkitError(f"cannot read query image {frames} for the parity check ({error}); replace "
                               f"or delete the file") from error
        images.append(torch.stack(tensors) if isinstance(path, tuple) else tensors[0])
    batch = torch.stack(images)
    with torch.no_grad():
        expected = module(batch).numpy()
    info = ModelInfo(format, config.eval.feature, config.eval.flip, height, width, config.data.interpolation)
    return Source(module, info, batch, expected, dataset)
