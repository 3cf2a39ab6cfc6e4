"""From a model and a data set to retrieval metrics under the configured protocol: CMC/mAP/mINP, ranked lists,
re-ranking, query expansion, open-set figures, pair-head re-scoring and attribute accuracy, with their summaries."""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from reidkit.data.cache import CachedTestImages
from reidkit.data.datasets import ReidDataset, Sample
from reidkit.data.loading import build_test_loader
from reidkit.data.tracklets import is_tracklet_split
from reidkit.data.transforms import build_test_transform
from reidkit.data.video_build import with_video_mode
from reidkit.distances import pairwise_distance
from reidkit.distributed import gather_to_main, is_main_process, rank, world_size
from reidkit.engine.extraction import eval_mode, extract_outputs
from reidkit.engine.pair_rescoring import PairHeadRescoring
from reidkit.engine.tracklet_extraction import tracklet_outputs
from reidkit.errors import ReidkitError
from reidkit.metrics.features_eval import evaluate_features
from reidkit.metrics.open_set import open_set_features, open_set_within
from reidkit.metrics.query_expansion import alpha_query_expansion
from reidkit.metrics.rank import evaluate_rank
from reidkit.metrics.ranked_lists import RankedLists, rank_features
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
                   protocol: str, cached: tuple[CachedTestImages, CachedTestImages] | None = None,
                   interpolation: str = "bilinear", seq_len: int = 0) -> Evaluation:
    """Extract query and gallery features and evaluate them: metrics, ranked lists and features (`Evaluation`).

    `cached`: the query and gallery images decoded once (`CachedTestImages`, `data.cache`), read instead of
    decoding every image again; the features are the same.

    A video set (samples `(paths, pid, camid)`) gets one feature per tracklet (`reidkit.engine.tracklet_extraction`:
    `eval_config.frame_sampling` with `seq_len` frames, chunks of `eval_config.chunk_frames`), its queries or
    gallery cut to single frames by `eval_config.video_mode`; the metrics are those of images.

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
    if is_tracklet_split(dataset.gallery):
        dataset = with_video_mode(dataset, eval_config.video_mode)
    device = torch.device(device)
    transform = build_test_transform(height, width, interpolation=interpolation)
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
        elif not is_tracklet_split(samples):
            loader = build_test_loader(samples[start:stop], transform, batch_size=eval_config.batch_size,
                                       workers=workers)
        local = tracklet_outputs(model, samples[start:stop], keys, eval_config, height, width, seq_len, device,
                                 workers, amp, progress, interpolation) if is_tracklet_split(samples) else \
            extract_outputs(model, loader, keys, flip=eval_config.flip, device=device, amp=amp, progress=progress,
                            on_device=True)
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


