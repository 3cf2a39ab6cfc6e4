"""Shared by the service tests: an untrained tiny run folder with gallery/query features and an index."""

from pathlib import Path

import torch

from reidkit.config import load_config, save_config
from reidkit.data.build import build_dataset
from reidkit.engine.checkpoint import save_weights
from reidkit.engine.extraction import extract_split
from reidkit.engine.saved_runs import model_metadata
from reidkit.models.reid import build_model, model_kwargs
from reidkit.retrieval import GalleryIndex

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")


def build_untrained_run(root: Path):
    """Write `root/run` (config + untrained weights), `root/{gallery,query}.safetensors` and
    `root/index.safetensors` (exact index of the gallery); returns (run, index, query features, dataset)."""
    config = load_config(TINY, [f"data.root={root / 'data'}", "data.height=32", "data.width=16"])
    dataset = build_dataset(config.data, progress=False)
    torch.manual_seed(0)
    model = build_model(num_classes=dataset.num_train_pids, **model_kwargs(config.model)).eval()
    run = root / "run"
    run.mkdir()
    save_config(config, run / "config.yaml")
    save_weights(model, run / "model.safetensors", model_metadata(model, config))
    extract_split(model, dataset.gallery, config, torch.device("cpu"), root / "gallery.safetensors", progress=False)
    queries = extract_split(model, dataset.query, config, torch.device("cpu"), root / "query.safetensors",
                            progress=False)
    index = GalleryIndex.from_feature_file(root / "gallery.safetensors", metric=config.eval.metric)
    index.save(root / "index.safetensors")
    return run, index, queries, dataset
