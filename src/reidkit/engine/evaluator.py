"""From a model and a data set to retrieval metrics: feature extraction, distances, CMC/mAP/mINP, pictures."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from reidkit.data.datasets import ReidDataset, Sample
from reidkit.data.loading import build_test_loader
from reidkit.data.transforms import build_test_transform
from reidkit.losses.distances import pairwise_distance
from reidkit.metrics.rank import evaluate_rank


def autocast_context(device: torch.device, amp: bool):
    """bfloat16 autocast on CUDA when `amp` is set; a no-op elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def extract_features(model: nn.Module, loader, feature: str = "bn_features", flip: bool = False,
                     device: torch.device | str = "cpu", amp: bool = False,
                     progress: bool = True) -> torch.Tensor:
    """Features of every image of `loader`, in loader order, as float32 on the CPU: [N, D].

    With `flip`, the feature is the mean of the image's and its horizontal mirror's features; the mirror
    is taken of the already normalised tensor, so normalisation happens once.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    chunks = []
    for batch in tqdm(loader, desc="extract", unit="batch", leave=False, disable=None if progress else True):
        images = batch["images"].to(device, non_blocking=True)
        with autocast_context(device, amp):
            features = model(images)[feature].float()
            if flip:
                features = (features + model(torch.flip(images, dims=[3]))[feature].float()) / 2
        chunks.append(features.cpu())
    model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0)


def distance_matrix(query_features: torch.Tensor, gallery_features: torch.Tensor, metric: str,
                    chunk_size: int = 2048) -> np.ndarray:
    """[Q, G] float32 distances, computed `chunk_size` query rows at a time."""
    rows = [pairwise_distance(query_features[i:i + chunk_size], gallery_features, metric=metric).numpy()
            for i in range(0, len(query_features), chunk_size)]
    return np.concatenate(rows).astype(np.float32, copy=False)


def summarize(result: dict) -> dict:
    """Flatten an `evaluate_rank` result into JSON-ready numbers (rank-1/5/10, mAP, mINP, full CMC)."""
    cmc = result["cmc"]
    summary = {f"rank{r}": float(cmc[min(r, len(cmc)) - 1]) for r in (1, 5, 10)}
    summary.update(mAP=float(result["mAP"]), mINP=float(result["mINP"]),
                   num_valid_queries=int(result["num_valid_queries"]), cmc=[float(c) for c in cmc])
    return summary


def evaluate_distances(distmat: np.ndarray, query: list[Sample], gallery: list[Sample], max_rank: int = 50,
                       junk: str = "market") -> dict:
    """Metrics summary of a [Q, G] distance matrix for query/gallery samples `(path, pid, camid)`."""
    q_pids, q_camids = np.array([s[1] for s in query]), np.array([s[2] for s in query])
    g_pids, g_camids = np.array([s[1] for s in gallery]), np.array([s[2] for s in gallery])
    return summarize(evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, junk=junk))


def evaluate_model(model: nn.Module, dataset: ReidDataset, eval_config, height: int, width: int,
                   device: torch.device | str = "cpu", workers: int = 0, amp: bool = False,
                   progress: bool = True) -> tuple[dict, np.ndarray]:
    """Extract query and gallery features and evaluate them; returns (metrics summary, distmat [Q, G])."""
    transform = build_test_transform(height, width)
    features = []
    for samples in (dataset.query, dataset.gallery):
        loader = build_test_loader(samples, transform, batch_size=eval_config.batch_size, workers=workers)
        features.append(extract_features(model, loader, feature=eval_config.feature, flip=eval_config.flip,
                                         device=device, amp=amp, progress=progress))
    distmat = distance_matrix(features[0], features[1], eval_config.metric)
    metrics = evaluate_distances(distmat, dataset.query, dataset.gallery, eval_config.max_rank, eval_config.junk)
    return metrics, distmat


def write_pictures(run_dir: str | Path, metrics: dict, distmat: np.ndarray, dataset: ReidDataset,
                   eval_config) -> None:
    """Write `plots/cmc.png` and `ranked/query_*.png` (query + top-10 with green/red frames) into `run_dir`."""
    from reidkit.viz.curves import plot_cmc
    from reidkit.viz.ranked import save_ranked_lists

    run_dir = Path(run_dir)
    (run_dir / "plots").mkdir(parents=True, exist_ok=True)
    plot_cmc(np.array(metrics["cmc"]), run_dir / "plots" / "cmc.png", label=dataset.name)
    save_ranked_lists(distmat, dataset.query, dataset.gallery, run_dir / "ranked",
                      num_queries=eval_config.ranked_queries, topk=10, junk=eval_config.junk)
