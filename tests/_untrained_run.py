"""Shared by the service tests: an untrained tiny run folder with gallery/query features and an index."""

from pathlib import Path

import torch

from reidkit.config import load_config
from reidkit.data.build import build_dataset
from reidkit.engine.extraction import extract_split
from reidkit.engine.indexing import model_digest
from reidkit.engine.run_writer import write_model_run
from reidkit.models.reid import build_model, model_kwargs
from reidkit.retrieval import GalleryIndex

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")


def write_untrained_run(root: Path, height: int = 32, width: int = 16):
    """Write `root/run` (config + untrained weights, seed 0) of the tiny synthetic set under `root/data`, images
    `height`×`width`; returns (run, config, dataset, model)."""
    config = load_config(TINY, [f"data.root={root / 'data'}", f"data.height={height}", f"data.width={width}"])
    dataset = build_dataset(config.data, progress=False)
    torch.manual_seed(0)
    model = build_model(num_classes=dataset.num_train_pids, **model_kwargs(config.model)).eval()
    run = root / "run"
    write_model_run(run, config, model)
    return run, config, dataset, model


def build_untrained_run(root: Path):
    """Write `write_untrained_run`'s run, `root/{gallery,query}.safetensors` and `root/index.safetensors` (exact
    index of the gallery, recording the model's digest and the gallery folder, as `reidkit index` does, but naming
    no run); returns (run, index, query features, dataset)."""
    run, config, dataset, model = write_untrained_run(root)
    digest = model_digest(run)
    extract_split(model, dataset.gallery, config, torch.device("cpu"), root / "gallery.safetensors", progress=False,
                  model_digest=digest)
    queries = extract_split(model, dataset.query, config, torch.device("cpu"), root / "query.safetensors",
                            progress=False, model_digest=digest)
    index = GalleryIndex.from_feature_file(root / "gallery.safetensors", metric=config.eval.metric,
                                           image_roots=[str(root / "data" / "bounding_box_test")])
    index.save(root / "index.safetensors")
    return run, index, queries, dataset
