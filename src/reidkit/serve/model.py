"""The run's model inside the search service: images → features as `reidkit extract` computes them, and the
pickable query set (a feature file made by the same model, or the run's query split embedded at start-up)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass
class QuerySet:
    """The pickable queries: features [Q, D] (torch, float32) and their paths, pids and camids."""

    features: Any
    paths: list[str]
    pids: list[int]
    camids: list[int]


class Embedder:
    """The run's model as `reidkit extract` uses it: images → retrieval features [N, D]."""

    def __init__(self, run_dir: str | Path) -> None:
        from reidkit.data.transforms import build_test_transform
        from reidkit.devices import resolve_device
        from reidkit.engine.saved_runs import load_run_config, load_run_model

        self.config = load_run_config(run_dir)
        self.device = resolve_device(self.config.train.device)
        self.model = load_run_model(run_dir, self.config).to(self.device)
        self.transform = build_test_transform(self.config.data.height, self.config.data.width,
                                              interpolation=self.config.data.interpolation)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model's input."""
        return self.config.data.height, self.config.data.width

    def __call__(self, images: list[Image.Image]):
        import torch

        from reidkit.devices import uses_amp
        from reidkit.engine.extraction import extract_outputs

        key, config = self.config.eval.feature, self.config
        batches = [{"images": torch.stack([self.transform(image) for image in images])}]
        return extract_outputs(self.model, batches, (key,), flip=config.eval.flip, device=self.device,
                               amp=uses_amp(config.train, self.device), progress=False)[key]

    def tracklet(self, images: list[Image.Image]):
        """The feature [1, D] of `images` taken as the frames of one person, as `reidkit search --tracklet`
        computes it: every frame, in chunks of `eval.chunk_frames` aggregated by the model (`model.temporal`,
        average pooling for an image model), the chunks averaged weighted by their numbers of frames."""
        import torch

        from reidkit.data.tracklet_loading import collate_tracklets, frame_chunks
        from reidkit.devices import uses_amp
        from reidkit.engine.extraction import extract_outputs
        from reidkit.engine.tracklet_extraction import merge_chunks

        key, config = self.config.eval.feature, self.config
        frames = torch.stack([self.transform(image) for image in images])
        chunks = frame_chunks(range(len(images)), config.eval.chunk_frames)
        batch = collate_tracklets([{"images": frames[chunk], "pids": -1, "camids": -1, "indices": 0}
                                   for chunk in chunks])
        outputs = extract_outputs(self.model, [batch], (key,), flip=config.eval.flip, device=self.device,
                                  amp=uses_amp(config.train, self.device), progress=False)[key]
        return merge_chunks(outputs, torch.zeros(len(chunks), dtype=torch.long),
                            torch.tensor([len(chunk) for chunk in chunks]), 1)

    def query_set(self) -> QuerySet:
        """The run's query split, embedded now (one pass of the model over every query image); a tracklet
        split gives one feature per tracklet, shown by its first frame, as `reidkit extract` lists it."""
        from reidkit.data.build import build_dataset
        from reidkit.data.tracklets import is_tracklet_split
        from reidkit.engine.extraction import image_outputs
        from reidkit.engine.tracklet_extraction import tracklet_outputs

        config, key = self.config, self.config.eval.feature
        samples = build_dataset(config.data, progress=False).query
        if is_tracklet_split(samples):
            features = tracklet_outputs(self.model, samples, (key,), config.eval, config.data.height, config.data.width,
                                        config.data.seq_len, self.device, progress=False,
                                        interpolation=config.data.interpolation)[key].cpu()
            samples = [(paths[0], pid, camid) for paths, pid, camid in samples]
        else:
            features = image_outputs(self.model, [s[0] for s in samples], config, self.device, (key,))[key]
        return QuerySet(features, [s[0] for s in samples], [s[1] for s in samples], [s[2] for s in samples])


def load_query_set(path: str | Path, model_digest: str, trust: bool = False) -> QuerySet:
    """A QuerySet from a feature file written by `extract_split` (`reidkit extract --split query`).

    Args:
        path: the feature file.
        model_digest: SHA-256 of the weights that embedded the gallery (the index's).
        trust: accept a file (or an index) recording no digest (`check_recorded_digest`); a file recording
            another model's digest is refused all the same.

    Raises:
        ReidkitError: an unreadable file, or query features not shown to come from the gallery's model.
    """
    from reidkit.engine.indexing import check_recorded_digest
    from reidkit.retrieval.feature_files import feature_file_metadata, load_feature_file

    features, pids, camids, paths = load_feature_file(path)
    check_recorded_digest(f"the query features {path}", feature_file_metadata(path).get("model_digest", ""),
                          "the gallery index", model_digest, "extract them with the index's run: `reidkit extract "
                          "--run RUN --split query --out FILE`", trust)
    return QuerySet(features.float(), paths, pids.tolist(), camids.tolist())
