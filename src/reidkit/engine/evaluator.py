"""From a model and a data set to retrieval metrics: feature extraction, distances, CMC/mAP/mINP, pictures."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from reidkit.data.datasets import ReidDataset, Sample
from reidkit.distributed import gather_to_main, is_main_process, rank, world_size
from reidkit.data.loading import build_test_loader
from reidkit.data.transforms import build_test_transform
from reidkit.errors import ReidkitError
from reidkit.losses.distances import pairwise_distance
from reidkit.metrics.query_expansion import alpha_query_expansion
from reidkit.metrics.rank import evaluate_rank
from reidkit.metrics.rerank import re_ranking_features
from reidkit.metrics.single_shot import evaluate_single_gallery_shot

PROTOCOLS = ("all_gallery", "single_gallery_shot")  # eval.protocol after resolve_protocol


class Evaluation(NamedTuple):
    """What `evaluate_model` computed: the metrics summary, the `[Q, G]` distances of the retrieval feature
    and that feature of the query `[Q, D]` and gallery `[G, D]` (float32, data set order)."""

    metrics: dict
    distmat: np.ndarray
    query_features: torch.Tensor
    gallery_features: torch.Tensor


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """`model` in evaluation mode inside the block; its train/eval mode restored after it, errors included."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def autocast_context(device: torch.device, amp: bool):
    """bfloat16 autocast on CUDA when `amp` is set; a no-op elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def extract_outputs(model: nn.Module, loader, keys: tuple[str, ...] = ("bn_features",), flip: bool = False,
                    device: torch.device | str = "cpu", amp: bool = False,
                    progress: bool = True) -> dict[str, torch.Tensor]:
    """Model outputs `keys` for every image of `loader`, in loader order, as float32 CPU tensors [N, D].

    With `flip`, each output is the mean over the image and its horizontal mirror; the mirror is taken
    of the already normalised tensor, so normalisation happens once.

    Raises:
        ReidkitError: the model gave NaN or infinite outputs (diverged weights).
    """
    device = torch.device(device)
    chunks: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    with eval_mode(model):
        for batch in tqdm(loader, desc="extract", unit="batch", leave=False, disable=None if progress else True):
            images = batch["images"].to(device, non_blocking=True)
            with autocast_context(device, amp):
                outputs = model(images)
                mirrored = model(torch.flip(images, dims=[3])) if flip else None
            for key in keys:
                value = outputs[key].float()
                chunks[key].append((value + mirrored[key].float()).div(2).cpu() if flip else value.cpu())
                if not torch.isfinite(chunks[key][-1]).all():
                    raise ReidkitError(f"the model gives NaN or infinite '{key}' outputs for images of batch "
                                       f"{len(chunks[key])}: its weights have diverged; use an earlier checkpoint "
                                       f"(--weights RUN/checkpoints/epoch_NNN.safetensors) or retrain")
    return {key: torch.cat(values) if values else torch.empty(0) for key, values in chunks.items()}


def extract_features(model: nn.Module, loader, feature: str = "bn_features", flip: bool = False,
                     device: torch.device | str = "cpu", amp: bool = False, progress: bool = True) -> torch.Tensor:
    """The `feature` output of `extract_outputs`: [N, D] float32 on the CPU."""
    return extract_outputs(model, loader, (feature,), flip, device, amp, progress)[feature]


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


def eval_record(metrics: dict) -> dict:
    """The scalars of a metrics summary for metrics.jsonl (the CMC curve stays in metrics.json)."""
    record = {k: v for k, v in metrics.items() if k in ("protocol", "repeats", "rank1", "rank5", "rank10", "mAP",
                                                         "mINP", "num_valid_queries", "attribute_accuracy")}
    for key, prefix in (("verification_rescored", "verified"), ("reranked", "reranked"),
                        ("query_expanded", "query_expanded")):
        if key in metrics:
            record.update({f"{prefix}_{k}": metrics[key][k] for k in ("rank1", "mAP", "mINP")})
    return record


def describe_metrics(metrics: dict) -> str:
    """One line: rank-1, mAP, mINP (and the protocol unless all-gallery), and what pair-head re-scoring and
    attribute heads give when present."""
    text = f"rank-1 {metrics['rank1']:.2%}  mAP {metrics['mAP']:.2%}  mINP {metrics['mINP']:.2%}"
    if metrics.get("protocol") == "single_gallery_shot":
        text += f" (single-gallery-shot, mean of {metrics['repeats']} draws)"
    if "verification_rescored" in metrics:
        verified = metrics["verification_rescored"]
        text += f"  | top-k re-scored by the pair head: rank-1 {verified['rank1']:.2%}  mAP {verified['mAP']:.2%}"
    for key, name in (("reranked", "re-ranked"), ("query_expanded", "query expansion")):
        if key in metrics:
            text += (f"  | {name}: rank-1 {metrics[key]['rank1']:.2%}  mAP {metrics[key]['mAP']:.2%}  "
                     f"mINP {metrics[key]['mINP']:.2%}")
    if metrics.get("attribute_accuracy"):
        accuracy = metrics["attribute_accuracy"]
        text += f"  | mean attribute accuracy {sum(accuracy.values()) / len(accuracy):.2%}"
    return text


def evaluate_distances(distmat: np.ndarray, query: list[Sample], gallery: list[Sample], max_rank: int = 50,
                       junk: str = "market", protocol: str = "all_gallery", repeats: int = 10) -> dict:
    """Metrics summary of a [Q, G] distance matrix for query/gallery samples `(path, pid, camid)`.

    Args:
        protocol: "all_gallery" (`evaluate_rank`) or "single_gallery_shot" (`evaluate_single_gallery_shot`
            with `repeats` draws, seed 0); the summary records it under "protocol" (and "repeats").

    Raises:
        ValueError: unknown `protocol`.
        ReidkitError: the data cannot be evaluated, e.g. no query has a true match.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    q_pids, q_camids = np.array([s[1] for s in query]), np.array([s[2] for s in query])
    g_pids, g_camids = np.array([s[1] for s in gallery]), np.array([s[2] for s in gallery])
    try:
        if protocol == "single_gallery_shot":
            result = evaluate_single_gallery_shot(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank,
                                                  junk=junk, repeats=repeats, seed=0)
            return {"protocol": protocol, "repeats": repeats, **summarize(result)}
        result = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, junk=junk)
        return {"protocol": protocol, **summarize(result)}
    except ValueError as error:  # e.g. no valid query: the data, not the code, is at fault
        raise ReidkitError(f"cannot evaluate: {error}") from error


def evaluate_model(model: nn.Module, dataset: ReidDataset, eval_config, height: int, width: int,
                   device: torch.device | str = "cpu", workers: int = 0, amp: bool = False,
                   progress: bool = True, pair_feature: str = "features",
                   attributes: dict[int, dict[str, int]] | None = None, *,
                   protocol: str) -> Evaluation:
    """Extract query and gallery features and evaluate them: metrics, distances and features (`Evaluation`).

    `protocol` is the resolved evaluation protocol, `reidkit.config.resolve_protocol(config)` ("all_gallery"
    or "single_gallery_shot", with `eval_config.single_shot_repeats` draws); it also applies to the
    re-scored metrics.

    In a distributed run every rank extracts a contiguous shard of the query and gallery sets and rank 0
    gathers them in order and evaluates; the other ranks get empty metrics, distances and features.

    With `eval_config.verify_topk` > 0 (a model without a pair head is refused), the summary also holds
    `verification_rescored`: the metrics after re-ordering each query's top-k by the pair head's
    probability of "same person" (computed on the `pair_feature` output). With `eval_config.rerank`, it
    holds `reranked`: the metrics of the k-reciprocal re-ranked distances (`re_ranking_features`); with
    `eval_config.query_expansion` other than "none", `query_expanded`: those of the expanded features. With
    `attributes` and a model with attribute heads, it holds `attribute_accuracy` per attribute on the
    gallery identities.
    """
    if eval_config.verify_topk > 0 and getattr(model, "pair_head", None) is None:
        raise ReidkitError(f"eval.verify_topk={eval_config.verify_topk} needs a pair head: this run was trained "
                           "without loss.verification; set eval.verify_topk=0")
    transform = build_test_transform(height, width)
    rescore = eval_config.verify_topk > 0
    keys = tuple(dict.fromkeys((eval_config.feature, pair_feature) if rescore else (eval_config.feature,)))
    outputs = []
    for samples in (dataset.query, dataset.gallery):
        shard = samples[len(samples) * rank() // world_size(): len(samples) * (rank() + 1) // world_size()]
        loader = build_test_loader(shard, transform, batch_size=eval_config.batch_size, workers=workers)
        local = extract_outputs(model, loader, keys, flip=eval_config.flip, device=device, amp=amp,
                                progress=progress)
        gathered = {key: gather_to_main(value.to(device)) for key, value in local.items()}  # NCCL: on device
        outputs.append({key: value.cpu() for key, value in gathered.items() if value is not None})
    if not is_main_process():  # in a distributed run, rank 0 evaluates the gathered features
        return Evaluation({}, np.empty((0, 0), np.float32), torch.empty(0, 0), torch.empty(0, 0))

    def score(distances: np.ndarray) -> dict:
        return evaluate_distances(distances, dataset.query, dataset.gallery, eval_config.max_rank, eval_config.junk,
                                  protocol, eval_config.single_shot_repeats)

    query, gallery = outputs[0][eval_config.feature], outputs[1][eval_config.feature]
    distmat = distance_matrix(query, gallery, eval_config.metric)
    metrics = score(distmat)
    if rescore:
        metrics["verification_rescored"] = score(rescore_top_k(model, outputs[0][pair_feature],
                                                               outputs[1][pair_feature], distmat,
                                                               eval_config.verify_topk, device))
    if eval_config.rerank:
        metrics["reranked"] = score(re_ranking_features(query, gallery, eval_config.metric, eval_config.rerank_k1,
                                                        eval_config.rerank_k2, eval_config.rerank_lambda,
                                                        progress=progress))
    if eval_config.query_expansion != "none":
        alpha = 0.0 if eval_config.query_expansion == "average" else eval_config.qe_alpha
        expanded = alpha_query_expansion(query, gallery, eval_config.qe_top_k, alpha)
        metrics["query_expanded"] = score(distance_matrix(*expanded, eval_config.metric))
    if attributes and getattr(model, "attribute_heads", None) is not None:
        metrics["attribute_accuracy"] = attribute_accuracy(model, dataset.gallery, attributes, transform,
                                                           eval_config.batch_size, workers, device)
    return Evaluation(metrics, distmat, query, gallery)


@torch.no_grad()
def rescore_top_k(model: nn.Module, query_features: torch.Tensor, gallery_features: torch.Tensor,
                  distmat: np.ndarray, k: int, device: torch.device | str = "cpu") -> np.ndarray:
    """A copy of `distmat` [Q, G] in which each query's k nearest gallery items are re-ordered by the pair
    head: their entries become −P(same) (below every distance, so they stay the top k); the rest keep
    their distances."""
    k = min(k, distmat.shape[1])
    top = np.argpartition(distmat, k - 1, axis=1)[:, :k]
    rows = np.repeat(np.arange(len(distmat)), k)
    with eval_mode(model):
        probabilities = [model.verify(query_features[rows[i:i + 8192]].to(device),
                                      gallery_features[top.ravel()[i:i + 8192]].to(device)).float().cpu()
                         for i in range(0, rows.size, 8192)]
    rescored = distmat.copy()
    rescored[rows, top.ravel()] = -torch.cat(probabilities).numpy()
    return rescored


@torch.no_grad()
def attribute_accuracy(model: nn.Module, samples: list[Sample], attributes: dict[int, dict[str, int]],
                       transform, batch_size: int, workers: int, device: torch.device | str) -> dict[str, float]:
    """Per-attribute accuracy of the model's attribute heads on the samples whose pid has attributes."""
    samples = [s for s in samples if s[1] in attributes]
    if not samples:
        return {}
    loader = build_test_loader(samples, transform, batch_size=batch_size, workers=workers)
    correct: dict[str, int] = {}
    with eval_mode(model):
        for batch in loader:
            predictions = model(batch["images"].to(device))["attr_logits"]
            for name, logits in predictions.items():
                truth = torch.tensor([attributes[int(pid)][name] - 1 for pid in batch["pids"]])
                correct[name] = correct.get(name, 0) + int((logits.argmax(1).cpu() == truth).sum())
    return {name: count / len(samples) for name, count in correct.items()}


def write_pictures(run_dir: str | Path, metrics: dict, distmat: np.ndarray, dataset: ReidDataset,
                   eval_config) -> None:
    """Write `plots/cmc.png` and `ranked/query_*.png` (query + top-10 with green/red frames) into `run_dir`.

    The CMC curve is the one of `metrics` (its protocol); the ranked lists always show the whole gallery,
    since a single-gallery-shot draw is one of many and would not explain the metrics by itself.
    """
    from reidkit.viz.curves import plot_cmc
    from reidkit.viz.ranked import save_ranked_lists

    run_dir = Path(run_dir)
    (run_dir / "plots").mkdir(parents=True, exist_ok=True)
    plot_cmc(np.array(metrics["cmc"]), run_dir / "plots" / "cmc.png", label=dataset.name)
    save_ranked_lists(distmat, dataset.query, dataset.gallery, run_dir / "ranked",
                      num_queries=eval_config.ranked_queries, topk=10, junk=eval_config.junk)
