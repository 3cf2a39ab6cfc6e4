"""From a model and a data set to retrieval metrics: feature extraction, distances, CMC/mAP/mINP, pictures."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from reidkit.data.cache import CachedTestImages
from reidkit.data.datasets import ReidDataset, Sample
from reidkit.distributed import gather_to_main, is_main_process, rank, world_size
from reidkit.data.loading import build_test_loader
from reidkit.data.transforms import build_test_transform
from reidkit.errors import ReidkitError
from reidkit.losses.distances import pairwise_distance
from reidkit.metrics.features_eval import evaluate_features
from reidkit.metrics.open_set import open_set_features, open_set_within
from reidkit.metrics.query_expansion import alpha_query_expansion
from reidkit.metrics.rank import evaluate_rank
from reidkit.metrics.ranked_lists import RankedLists, nearest, rank_features
from reidkit.metrics.rerank import re_ranking_features
from reidkit.metrics.single_shot import evaluate_single_gallery_shot
from reidkit.metrics.vehicleid import evaluate_vehicleid

PROTOCOLS = ("all_gallery", "single_gallery_shot", "vehicleid")  # eval.protocol after resolve_protocol


RANKED_TOP_K = 10  # gallery items kept per query for the ranked-list pictures and the report


class Evaluation(NamedTuple):
    """What `evaluate_model` computed: the metrics summary, the ranked lists of the retrieval feature (per
    query: AP, the 10 nearest gallery items, rank-1 per camera pair; never the `[Q, G]` matrix) and that
    feature of the query `[Q, D]` and gallery `[G, D]` (float32 on the CPU, data set order)."""

    metrics: dict
    ranked: RankedLists
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


def uses_amp(train_config, device: torch.device | str) -> bool:
    """Whether `device` runs under bfloat16 autocast: `train.amp` on CUDA; on the CPU with `train.amp_cpu` too."""
    device_type = torch.device(device).type
    return train_config.amp and (device_type == "cuda" or (device_type == "cpu" and train_config.amp_cpu))


def autocast_context(device: torch.device, amp: bool):
    """bfloat16 autocast on `device` (CUDA or CPU) when `amp` is set (see `uses_amp`); a no-op otherwise."""
    if amp and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
            images = batch["images"].to(device, non_blocking=True).contiguous(memory_format=layout)
            # the camera ids, for a model with a camera embedding (TransReID)
            camids = (batch["camids"].to(device),) if getattr(model, "uses_camids", False) and "camids" in batch else ()
            with autocast_context(device, amp):
                outputs = model(images, *camids)
                mirrored = model(torch.flip(images, dims=[3]), *camids) if flip else None
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


def distance_matrix(query_features: torch.Tensor, gallery_features: torch.Tensor, metric: str,
                    chunk_size: int = 2048) -> np.ndarray:
    """[Q, G] float32 distances, computed `chunk_size` query rows at a time."""
    rows = [pairwise_distance(query_features[i:i + chunk_size], gallery_features, metric=metric).cpu().numpy()
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
    if "open_set" in metrics:
        record.update({f"open_set_{k}": metrics["open_set"][k] for k in ("eer", "threshold", "tpr_at_threshold")})
    return record


def describe_metrics(metrics: dict) -> str:
    """One line: rank-1, mAP, mINP (and the protocol unless all-gallery), and what pair-head re-scoring and
    attribute heads give when present."""
    text = f"rank-1 {metrics['rank1']:.2%}  mAP {metrics['mAP']:.2%}  mINP {metrics['mINP']:.2%}"
    if metrics.get("protocol") in ("single_gallery_shot", "vehicleid"):
        text += f" ({metrics['protocol'].replace('_', '-')}, mean of {metrics['repeats']} draws)"
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
    if "open_set" in metrics:
        text += f"  | {describe_open_set(metrics['open_set'])}"
    return text


def describe_open_set(figures: dict) -> str:
    """One line of open-set figures: EER, and the threshold with its TPR at the target FPR."""
    return (f"open set ({figures['pairs']} pairs): EER {figures['eer']:.2%}, same person below distance "
            f"{figures['threshold']:.4f}: TPR {figures['tpr_at_threshold']:.2%} at FPR "
            f"{figures['fpr_at_threshold']:.2%} (≤ {figures['target_fpr']:g})")


def open_set_figures(eval_config, query_features: torch.Tensor, gallery_features: torch.Tensor,
                     dataset: ReidDataset, holdout_features: torch.Tensor | None = None) -> dict:
    """The `open_set` metrics (`reidkit.metrics.open_set`) of the query × gallery pairs, or of the pairs of the
    held-out identities' features with eval.open_set_pairs=holdout; "pairs" and "metric" say which. Computed
    block by block from the features: no [Q, G] matrix.

    Raises:
        ReidkitError: no genuine or no impostor pair (e.g. one image per held-out identity).
    """
    fpr, junk, metric = eval_config.open_set_fpr, eval_config.junk, eval_config.metric
    try:
        if eval_config.open_set_pairs == "holdout":
            figures = open_set_within(holdout_features, [s[1] for s in dataset.holdout],
                                      [s[2] for s in dataset.holdout], metric, junk, fpr)
        else:
            figures = open_set_features(query_features, gallery_features,
                                        *_labels(dataset.query, dataset.gallery), metric, junk, fpr)
    except ValueError as error:
        raise ReidkitError(f"cannot compute the open-set threshold from the {eval_config.open_set_pairs} pairs: "
                           f"{error}") from error
    return {"pairs": eval_config.open_set_pairs, "metric": eval_config.metric, **figures}


def combine_test_sets(names: list[str], evaluations: list[Evaluation]) -> Evaluation:
    """One run's evaluation on several test sets: the first set's `Evaluation`, whose metrics also hold
    `test_sets`, each set's metrics by name, when there are several (metrics.json keeps its top-level keys)."""
    first = evaluations[0]
    if len(evaluations) == 1:
        return first
    return first._replace(metrics={**first.metrics, "test_sets": {name: evaluation.metrics
                                                                  for name, evaluation in zip(names, evaluations)}})


def describe_test_sets(metrics: dict) -> str:
    """`describe_metrics` of a run's metrics, one line per test set when it has several."""
    if "test_sets" not in metrics:
        return describe_metrics(metrics)
    return "\n".join(f"{name}: {describe_metrics(values)}" for name, values in metrics["test_sets"].items())


def evaluate_distances(distmat: np.ndarray, query: list[Sample], gallery: list[Sample], max_rank: int = 50,
                       junk: str = "market", protocol: str = "all_gallery", repeats: int = 10) -> dict:
    """Metrics summary of a [Q, G] distance matrix for query/gallery samples `(path, pid, camid)`.

    Args:
        protocol: "all_gallery" (`evaluate_rank`), "single_gallery_shot" (`evaluate_single_gallery_shot`) or
            "vehicleid" (`evaluate_vehicleid`, query and gallery the same test list), the last two with `repeats`
            draws, seed 0; the summary records it under "protocol" (and "repeats").

    Raises:
        ValueError: unknown `protocol`.
        ReidkitError: the data cannot be evaluated, e.g. no query has a true match.
    """
    check_protocol(protocol)
    q_pids, g_pids, q_camids, g_camids = _labels(query, gallery)
    with _data_errors():
        if protocol == "vehicleid":
            if query != gallery:
                raise ValueError("the vehicleid protocol draws its gallery from the test images: query and gallery "
                                 "must be the same list (data.dataset=vehicleid)")
            result = evaluate_vehicleid(distmat, q_pids, max_rank=max_rank, repeats=repeats, seed=0)
            return {"protocol": protocol, "repeats": repeats, **summarize(result)}
        if protocol == "single_gallery_shot":
            result = evaluate_single_gallery_shot(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank,
                                                  junk=junk, repeats=repeats, seed=0)
            return {"protocol": protocol, "repeats": repeats, **summarize(result)}
        return {"protocol": protocol, **summarize(evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids,
                                                                max_rank=max_rank, junk=junk))}


def evaluate_feature_sets(query_features: torch.Tensor, gallery_features: torch.Tensor, query: list[Sample],
                          gallery: list[Sample], metric: str, max_rank: int = 50, junk: str = "market",
                          protocol: str = "all_gallery", repeats: int = 10) -> dict:
    """`evaluate_distances` of the features' distances; under "all_gallery" in bounded memory, block by block
    on the features' device (`reidkit.metrics.evaluate_features`), never the [Q, G] matrix."""
    check_protocol(protocol)
    if protocol != "all_gallery":  # draws over whole rows: the (small) CUHK03 / VehicleID test sets they serve
        return evaluate_distances(distance_matrix(query_features, gallery_features, metric), query, gallery,
                                  max_rank, junk, protocol, repeats)
    with _data_errors():
        return {"protocol": protocol, **summarize(evaluate_features(
            query_features, gallery_features, *_labels(query, gallery), metric=metric,
            max_rank=max_rank, junk=junk))}


def rank_feature_sets(query_features: torch.Tensor, gallery_features: torch.Tensor, query: list[Sample],
                      gallery: list[Sample], metric: str, max_rank: int = 50, junk: str = "market",
                      adjust=None) -> RankedLists:
    """`reidkit.metrics.ranked_lists.rank_features` for query/gallery samples `(path, pid, camid)`.

    Raises:
        ReidkitError: the data cannot be evaluated, e.g. no query has a true match.
    """
    with _data_errors():
        return rank_features(query_features, gallery_features, *_labels(query, gallery),
                             metric=metric, max_rank=max_rank, junk=junk, top_k=RANKED_TOP_K, adjust=adjust)


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def _labels(query: list[Sample], gallery: list[Sample]) -> tuple[np.ndarray, ...]:
    """(q_pids, g_pids, q_camids, g_camids): the label arguments of `evaluate_rank`, in its order."""
    return tuple(np.array([s[i] for s in samples]) for i, samples in ((1, query), (1, gallery), (2, query),
                                                                        (2, gallery)))


@contextlib.contextmanager
def _data_errors():
    """A ValueError of the ranking (e.g. no valid query) as a ReidkitError: the data, not the code, is at fault."""
    try:
        yield
    except ValueError as error:
        raise ReidkitError(f"cannot evaluate: {error}") from error


def evaluate_model(model: nn.Module, dataset: ReidDataset, eval_config, height: int, width: int,
                   device: torch.device | str = "cpu", workers: int = 0, amp: bool = False,
                   progress: bool = True, pair_feature: str = "features",
                   attributes: dict[int, dict[str, int]] | None = None, *,
                   protocol: str, cached: tuple[CachedTestImages, CachedTestImages] | None = None) -> Evaluation:
    """Extract query and gallery features and evaluate them: metrics, ranked lists and features (`Evaluation`).

    `cached`: the query and gallery images decoded once (`CachedTestImages`, `data.cache`), read instead of
    decoding every image again; the features are the same.

    `protocol` is the resolved evaluation protocol, `reidkit.config.resolve_protocol(config)` ("all_gallery"
    or "single_gallery_shot", with `eval_config.single_shot_repeats` draws); it also applies to the
    re-scored metrics.

    Memory: the all-gallery metrics, ranked lists, pair-head re-scoring and query expansion are computed
    block by block on the evaluation device (`reidkit.metrics.ranked_lists`), never holding the [Q, G]
    distances; the single-gallery-shot protocol and k-reciprocal re-ranking work on the whole matrix.

    In a distributed run every rank extracts a contiguous shard of the query and gallery sets and rank 0
    gathers them in order and evaluates; the other ranks get empty metrics, ranked lists and features.

    With `eval_config.verify_topk` > 0 (a model without a pair head is refused), the summary also holds
    `verification_rescored`: the metrics after re-ordering each query's top-k by the pair head's
    probability of "same person" (computed on the `pair_feature` output). With `eval_config.rerank`, it
    holds `reranked`: the metrics of the k-reciprocal re-ranked distances (`re_ranking_features`); with
    `eval_config.query_expansion` other than "none", `query_expanded`: those of the expanded features. With
    `attributes` and a model with attribute heads, it holds `attribute_accuracy` per attribute on the
    gallery identities. It always holds `open_set` (`open_set_figures`): ROC, EER, TPR@FPR and the distance
    threshold for `eval_config.open_set_fpr`.
    """
    if eval_config.verify_topk > 0 and getattr(model, "pair_head", None) is None:
        raise ReidkitError(f"eval.verify_topk={eval_config.verify_topk} needs a pair head: this run was trained "
                           "without loss.verification; set eval.verify_topk=0")
    check_protocol(protocol)
    device = torch.device(device)
    transform = build_test_transform(height, width)
    rescore = eval_config.verify_topk > 0
    keys = tuple(dict.fromkeys((eval_config.feature, pair_feature) if rescore else (eval_config.feature,)))
    outputs = []
    holdout = eval_config.open_set_pairs == "holdout"  # the held-out identities are extracted too
    for samples, images in zip((dataset.query, dataset.gallery, *([dataset.holdout] if holdout else [])),
                               (*(cached or (None, None)), None)):
        start, stop = len(samples) * rank() // world_size(), len(samples) * (rank() + 1) // world_size()
        if images is not None:
            if len(images) != len(samples):
                raise ValueError(f"cached test images hold {len(images)} images, the split has {len(samples)}")
            loader = images.batches(start, stop, eval_config.batch_size, device)
        else:
            loader = build_test_loader(samples[start:stop], transform, batch_size=eval_config.batch_size,
                                       workers=workers)
        local = extract_outputs(model, loader, keys, flip=eval_config.flip, device=device, amp=amp,
                                progress=progress, on_device=True)
        gathered = {key: gather_to_main(value.to(device)) for key, value in local.items()}  # NCCL: on device
        outputs.append({key: value for key, value in gathered.items() if value is not None})
    if not is_main_process():  # in a distributed run, rank 0 evaluates the gathered features
        return Evaluation({}, RankedLists({}, np.empty(0), np.empty((0, 0), np.int64), np.empty((0, 0), np.float32),
                                          {}), torch.empty(0, 0), torch.empty(0, 0))
    query, gallery = outputs[0][eval_config.feature], outputs[1][eval_config.feature]  # on the device
    config = eval_config
    metrics, ranked = score_features(query, gallery, dataset, config, protocol, progress)
    if rescore:
        adjust = PairHeadRescoring(model, outputs[0][pair_feature], outputs[1][pair_feature], config.verify_topk)
        if protocol == "all_gallery":
            rescored = rank_feature_sets(query, gallery, dataset.query, dataset.gallery, config.metric,
                                         config.max_rank, config.junk, adjust=adjust)
            metrics["verification_rescored"] = {"protocol": protocol, **summarize(rescored.metrics)}
        else:
            distmat = torch.as_tensor(distance_matrix(query, gallery, config.metric))
            metrics["verification_rescored"] = evaluate_distances(adjust(0, distmat).numpy(), dataset.query,
                                                                  dataset.gallery, config.max_rank, config.junk,
                                                                  protocol, config.single_shot_repeats)
    metrics["open_set"] = open_set_figures(config, query, gallery, dataset,
                                           outputs[2][config.feature] if holdout else None)
    if attributes and getattr(model, "attribute_heads", None) is not None:
        metrics["attribute_accuracy"] = attribute_accuracy(model, dataset.gallery, attributes, transform,
                                                           config.batch_size, workers, device)
    return Evaluation(metrics, ranked, query.cpu(), gallery.cpu())


def score_features(query: torch.Tensor, gallery: torch.Tensor, dataset: ReidDataset, eval_config, protocol: str,
                   progress: bool = True) -> tuple[dict, RankedLists]:
    """Metrics summary and ranked lists of query [Q, D] / gallery [G, D] features of `dataset` (on any device),
    with the `reranked` and `query_expanded` metrics when `eval_config` asks for them (see `evaluate_model`)."""
    config = eval_config

    def score(query_features: torch.Tensor, gallery_features: torch.Tensor) -> dict:
        return evaluate_feature_sets(query_features, gallery_features, dataset.query, dataset.gallery,
                                     config.metric, config.max_rank, config.junk, protocol,
                                     config.single_shot_repeats)

    ranked = rank_feature_sets(query, gallery, dataset.query, dataset.gallery, config.metric, config.max_rank,
                               config.junk)
    metrics = score(query, gallery) if protocol != "all_gallery" else {"protocol": protocol,
                                                                       **summarize(ranked.metrics)}
    if config.rerank:
        reranked = re_ranking_features(query.cpu(), gallery.cpu(), config.metric, config.rerank_k1,
                                       config.rerank_k2, config.rerank_lambda, progress=progress)
        metrics["reranked"] = evaluate_distances(reranked, dataset.query, dataset.gallery, config.max_rank,
                                                 config.junk, protocol, config.single_shot_repeats)
    if config.query_expansion != "none":
        alpha = 0.0 if config.query_expansion == "average" else config.qe_alpha
        metrics["query_expanded"] = score(*alpha_query_expansion(query, gallery, config.qe_top_k, alpha))
    return metrics, ranked


def evaluate_exported(model_path: str | Path, dataset: ReidDataset, eval_config, *, protocol: str,
                      progress: bool = True) -> Evaluation:
    """`evaluate_model` for a file written by `reidkit export` (any format, `reidkit.export.load_model`): the
    same metrics of the same query/gallery, so that the accuracy cost of a format is a measured number.

    The feature and flip are those baked into the file (recorded in the summary with `model` and `format`);
    `eval_config`'s metric, junk rule, protocol, re-ranking and query expansion apply as usual.

    Raises:
        ReidkitError: `eval_config.verify_topk` > 0 (the pair head is not exported), or as `load_model`.
    """
    from reidkit.export import extract_with_model, load_model

    if eval_config.verify_topk > 0:
        raise ReidkitError("an exported model holds only the retrieval feature, not the pair head: set "
                           "eval.verify_topk=0 to evaluate it")
    check_protocol(protocol)
    model = load_model(model_path)
    query, gallery = (torch.from_numpy(extract_with_model(model, [s[0] for s in samples],
                                                          batch_size=eval_config.batch_size, progress=progress))
                      for samples in (dataset.query, dataset.gallery))
    metrics, ranked = score_features(query, gallery, dataset, eval_config, protocol, progress)
    metrics.update(model=str(model_path), format=model.info.format, feature=model.info.feature, flip=model.info.flip)
    return Evaluation(metrics, ranked, query, gallery)


class PairHeadRescoring:
    """A block hook of `rank_features`: each query's k nearest gallery items (ties by gallery index) get
    −P(same person) from the model's pair head, below every distance, so they stay the top k re-ordered by
    that probability; the other entries keep their distances."""

    def __init__(self, model: nn.Module, query_features: torch.Tensor, gallery_features: torch.Tensor,
                 k: int) -> None:
        self.model, self.query, self.gallery, self.k = model, query_features, gallery_features, k

    @torch.no_grad()
    def __call__(self, start: int, block: torch.Tensor) -> torch.Tensor:
        k = min(self.k, block.shape[1])
        top = torch.as_tensor(nearest(block, k)[0], device=block.device)
        rows = torch.arange(start, start + len(block), device=block.device).repeat_interleave(k)
        columns = top.reshape(-1)
        device = self.query.device
        with eval_mode(self.model):
            probabilities = torch.cat([
                self.model.verify(self.query[rows[i:i + 8192].to(device)],
                                  self.gallery[columns[i:i + 8192].to(device)]).float()
                for i in range(0, len(rows), 8192)]).to(block.device, block.dtype)
        rescored = block.clone()
        rescored[rows - start, columns] = -probabilities
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


def write_pictures(run_dir: str | Path, metrics: dict, ranked: RankedLists, dataset: ReidDataset,
                   eval_config, activation=None) -> None:
    """Write `plots/cmc.png` and `ranked/query_*.png` (query + top-10 with green/red frames) into `run_dir`.

    The CMC curve is the one of `metrics` (its protocol); the ranked lists always show the whole gallery,
    since a single-gallery-shot draw is one of many and would not explain the metrics by itself. `activation`
    (image file → map, `reidkit.engine.activation.activation_of_files`) adds the activation maps to the lists.
    """
    from reidkit.viz.curves import plot_cmc
    from reidkit.viz.ranked import save_ranked_lists

    run_dir = Path(run_dir)
    (run_dir / "plots").mkdir(parents=True, exist_ok=True)
    plot_cmc(np.array(metrics["cmc"]), run_dir / "plots" / "cmc.png", label=dataset.name)
    save_ranked_lists(ranked, dataset.query, dataset.gallery, run_dir / "ranked",
                      num_queries=eval_config.ranked_queries, topk=RANKED_TOP_K, activation=activation)
