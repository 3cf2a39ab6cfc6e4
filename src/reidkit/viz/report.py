"""HTML report of one run (`report.html`), drawn from what it is handed: the run's summary
(`RunSummary`: config, metrics, baselines, training records) and, when available, its test set, ranked lists,
gallery features and activation maps. `reidkit.engine.reporting` reads a run folder into these, recomputing
what the folder lacks. `reidkit.viz.compare` compares several runs.

Sections: config (collapsible), data set, metrics (with baselines and pair-head re-scoring when present), CMC,
training curves per loss term, clustering rounds (an adaptation run), open-set figures and attribute accuracies (when present), rank-1 per camera
pair, ranked lists of sample queries and of the worst queries by AP, PCA scatter of gallery features. The
metrics table and CMC curve are the run's metrics.json (its evaluation protocol, named in the data set
section); the per-query sections come from the ranked lists (`reidkit.metrics.ranked_lists`: all gallery,
Market-1501 junk rule, non-interpolated AP).
"""

from __future__ import annotations

import html
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reidkit.config import Config
from reidkit.config.sections import set_names
from reidkit.viz.adaptation import plot_pseudo_label_rounds
from reidkit.viz.curves import plot_cmc, plot_distance_histograms, plot_roc, plot_training_curves
from reidkit.viz.embedding_plot import plot_embedding
from reidkit.viz.html_page import METRIC_COLUMNS, image_figure, metrics_table, percent_cell, table, write_page
from reidkit.viz.ranked import save_ranked_lists


@dataclass
class RunSummary:
    """What the report shows of a run besides its test set: `name` (the folder's), the `config` and the text of
    its config.yaml, `metrics` (metrics.json), `baselines` ({name: metrics}), `records` (metrics.jsonl),
    `evaluations` ({folder: metrics} of the later `reidkit eval` runs) and `notes` shown under the title (what
    could not be read or recomputed)."""

    name: str
    config: Config
    config_text: str
    metrics: dict
    baselines: dict = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    evaluations: dict[str, dict] = field(default_factory=dict)


def write_report(summary: RunSummary, out_path: str | Path, ranked: Any = None, dataset: Any = None,
                 gallery_features: Any = None, num_ranked: int = 6, num_worst: int = 6, num_identities: int = 20,
                 activation=None, training_curves: Path | None = None) -> Path:
    """Write the HTML report of a run to `out_path`; sections whose inputs are None are left out.

    Args:
        summary: the run's config, metrics, baselines and training records.
        ranked: the final evaluation's `RankedLists` (per query its AP and nearest gallery items, rank-1 per
            camera pair), in data set order.
        dataset: the run's test `ReidDataset`.
        gallery_features: ``[G, D]`` retrieval features of the gallery (for the PCA scatter).
        num_ranked: sample queries drawn as ranked lists.
        num_worst: worst queries (lowest AP) drawn as ranked lists.
        num_identities: identities in the PCA scatter.
        activation: image file → activation map `[h, w]` in [0, 1]: the ranked lists then show where the
            feature comes from under each image.
        training_curves: the picture `plot_training_curves` drew of `summary.records` (the run folder's
            plots/training_curves.png, when the caller has just drawn it); None draws it.

    Returns:
        The path of the report.
    """
    config, metrics = summary.config, summary.metrics
    rows = {"this run": metrics}
    if "verification_rescored" in metrics:
        rows["top-k re-scored by the pair head"] = metrics["verification_rescored"]
    if "reranked" in metrics:
        rows["k-reciprocal re-ranking"] = metrics["reranked"]
    if "query_expanded" in metrics:
        rows["query expansion"] = metrics["query_expanded"]
    if "direct_transfer" in metrics:  # an adaptation run: its source model before adaptation
        rows["direct transfer (the source model)"] = metrics["direct_transfer"]
    if "target_bn" in metrics:  # the source model with BatchNorm statistics of the unlabelled images (AdaBN)
        rows["source model, target BatchNorm statistics"] = metrics["target_bn"]
    rows.update({f"baseline: {name.replace('_', ' ')}": values for name, values in summary.baselines.items()})
    with tempfile.TemporaryDirectory() as scratch:
        sections = [
            ("config", "Config", _config_section(summary.config_text)),
            ("dataset", "Data set", _dataset_section(config, dataset, metrics)),
            ("metrics", "Metrics", metrics_table(rows)),
            *([("test-sets", "Test sets", _test_sets_section(metrics["test_sets"]))] if "test_sets" in metrics else []),
            *([("evaluations", "Evaluations", _evaluations_section(summary.evaluations))] if summary.evaluations
              else []),
            ("cmc", "CMC curve", _cmc_section(metrics, Path(scratch), dataset)),
            ("training", "Training curves", _training_section(summary.records, Path(scratch), training_curves)),
        ]
        if any(record.get("kind") == "cluster" for record in summary.records):
            sections.append(("pseudo-labels", "Clustering rounds", image_figure(
                plot_pseudo_label_rounds(summary.records, Path(scratch) / "rounds.png"),
                "clusters, outliers and (with known identities) purity, NMI, ARI of each round's pseudo labels")))
        if metrics.get("open_set"):
            sections.append(("open-set", "Open-set matching", _open_set_section(metrics["open_set"], Path(scratch))))
        if metrics.get("attribute_accuracy"):
            sections.append(("attributes", "Attribute accuracy", _attribute_section(metrics["attribute_accuracy"])))
        if dataset is not None and ranked is not None:
            sections += [
                ("camera-pairs", "Rank-1 per camera pair", _camera_section(ranked.camera_rank1)),
                *_ranked_sections(ranked, dataset, Path(scratch), num_ranked, num_worst, activation),
            ]
        if dataset is not None and gallery_features is not None:
            sections.append(("embedding", "Gallery embedding (PCA)", _embedding_section(
                gallery_features, dataset, config.eval.metric, Path(scratch), num_identities)))
    title = f"reidkit report — {summary.name}"
    trained_on = "+".join(source.name or source.dataset for source in config.data.train_sets) or config.data.dataset
    line = (f"{config.model.backbone} on {trained_on}, {config.train.epochs} epochs · "
            f"rank-1 {metrics['rank1']:.2%} · mAP {metrics['mAP']:.2%} · mINP {metrics['mINP']:.2%}")
    return write_page(Path(out_path), title, line, sections, summary.notes)


def _as_numpy(values: Any) -> np.ndarray:  # numpy or torch → numpy
    return np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values)


def _config_section(config_text: str) -> str:
    return f"<details><summary>config.yaml</summary><pre>{html.escape(config_text)}</pre></details>"


def _dataset_section(config, dataset, metrics: dict) -> str:
    valid = (f"<p>{metrics.get('num_valid_queries', '?')} valid queries (protocol "
             f"&quot;{html.escape(metrics.get('protocol', 'all_gallery'))}&quot;, junk rule "
             f"&quot;{html.escape(config.eval.junk)}&quot;).</p>")
    if config.data.train_sets or config.data.combineall:
        sets = set_names(config.data.train_sets, "data.train_sets") if config.data.train_sets else [config.data.dataset]
        valid += (f"<p>Trained on {html.escape(' + '.join(sets))}" + (" with their query and gallery identities "
                  "(data.combineall)" if config.data.combineall else "") + "; the table shows the test set.</p>")
    if dataset is None:
        return f"<p>{html.escape(config.data.dataset)} at {html.escape(config.data.root)}: not available.</p>{valid}"
    rows = [(split, "".join(f"<td>{count}</td>" for count in (
        len({s[1] for s in samples}), len(samples), len({s[2] for s in samples}))))
        for split, samples in (("train", dataset.train), ("query", dataset.query), ("gallery", dataset.gallery))]
    return (f"<p>{html.escape(dataset.name)} at {html.escape(str(dataset.root))}, images "
            f"{config.data.height}×{config.data.width}.</p>"
            + table("dataset-table", ["split", "identities", "images", "cameras"], rows) + valid)


def _test_sets_section(test_sets: dict[str, dict]) -> str:
    """One row per test set of a cross-domain evaluation (the sections below show the first)."""
    return ("<p>The same model on each test set; the sections below show the first one.</p>"
            + table("test-sets-table", ["test set"] + [f"{title} (%)" for _, title in METRIC_COLUMNS],
                     [(name, "".join(percent_cell(values.get(key), key=key) for key, _ in METRIC_COLUMNS))
                      for name, values in test_sets.items()]))


def _evaluations_section(evaluations: dict[str, dict]) -> str:
    """One row per folder `reidkit eval` wrote into the run (its own test set again, other data sets)."""
    return ("<p>Evaluations of this run's model written by <code>reidkit eval</code>, one folder each (the "
            "metrics.json and pictures are there).</p>" + metrics_table(evaluations))


def _cmc_section(metrics: dict, scratch: Path, dataset) -> str:
    label = dataset.name if dataset is not None else None
    return image_figure(plot_cmc(metrics["cmc"], scratch / "cmc.png", label=label), "CMC curve") if metrics.get("cmc") \
        else "<p class='note'>metrics.json has no CMC curve.</p>"


def _training_section(records: list[dict], scratch: Path, drawn: Path | None) -> str:
    if not records:
        return "<p class='note'>no metrics.jsonl records.</p>"
    return image_figure(drawn or plot_training_curves(records, scratch / "training.png"),
                  "each loss term and the learning rate per step; evaluation per epoch")


def _open_set_section(figures: dict, scratch: Path) -> str:
    rows = [("EER", percent_cell(figures["eer"], title=f"threshold {figures['eer_threshold']:.6g}"))]
    rows += [(f"TPR at FPR {float(fpr):g}", percent_cell(tpr)) for fpr, tpr in figures["tpr_at_fpr"].items()]
    rows.append((f"threshold for FPR ≤ {figures['target_fpr']:g}",
                 f"<td data-value='{figures['threshold']!r}'>{figures['threshold']:.4f} (TPR "
                 f"{figures['tpr_at_threshold']:.2%}, FPR {figures['fpr_at_threshold']:.4%})</td>"))
    text = (f"<p>{figures['num_genuine']} same-identity and {figures['num_impostor']} different-identity "
            f"{html.escape(figures['pairs'])} pairs, {html.escape(figures['metric'])} distance; "
            "same person when the distance is below the threshold.</p>")
    return (text + table("open-set-table", ["figure", "value"], rows)
            + image_figure(plot_roc(figures, scratch / "roc.png"), "ROC curve (log FPR axis)")
            + image_figure(plot_distance_histograms(figures, scratch / "distances.png"),
                     "distances of same- and different-identity pairs"))


def _attribute_section(accuracy: dict[str, float]) -> str:
    rows = [(name, percent_cell(value)) for name, value in accuracy.items()]
    mean = sum(accuracy.values()) / len(accuracy)
    return table("attribute-table", ["attribute", "accuracy (%)"], rows) + f"<p>mean {100 * mean:.2f}%</p>"


def _camera_section(camera_table: dict) -> str:
    columns = [f"gallery c{camera + 1}" for camera in camera_table["gallery_cameras"]]
    rows = [(f"query c{camera + 1}", "".join(percent_cell(rate, 1, key=column, title=f"{count} valid queries")
                                             for column, rate, count in zip(columns, rates, counts)))
            for camera, rates, counts in zip(camera_table["query_cameras"], camera_table["rank1"], camera_table["queries"])]
    return ("<p>Rank-1 (%) of each query camera's queries searched in one gallery camera; — where no query "
            "has a true match there (same-camera matches are junk under the Market-1501 rule).</p>"
            + table("camera-table", ["", *columns], rows))


def _ranked_sections(ranked, dataset, scratch: Path, num_ranked: int, num_worst: int, activation=None) -> list:
    precisions = ranked.ap
    valid = np.flatnonzero(~np.isnan(precisions))
    worst = valid[np.argsort(precisions[valid], kind="stable")][:num_worst].tolist()
    topk = ranked.top_indices.shape[1]
    sample = save_ranked_lists(ranked, dataset.query, dataset.gallery, scratch / "ranked", num_queries=num_ranked,
                               topk=topk, activation=activation, image_format="jpeg")
    hard = save_ranked_lists(ranked, dataset.query, dataset.gallery, scratch / "worst", query_indices=worst,
                             topk=topk, activation=activation, image_format="jpeg")
    legend = "<p class='note'>query in blue; green frame: same identity, red: another identity." + (
        " Second row: where the feature comes from (norm of the backbone's last feature map at each position; "
        "blue low, red high)." if activation is not None else "") + "</p>"

    def picture(path: Path) -> str:
        index = int(path.stem.split("_")[1])
        _, pid, camid = dataset.query[index]
        caption = f"query {index} · pid {pid} · camera c{camid + 1} · AP {precisions[index]:.3f}"
        return image_figure(path, caption)

    return [("ranked", "Ranked lists of sample queries", legend + "".join(map(picture, sample))),
            ("worst", "Worst queries by average precision", legend + "".join(map(picture, hard)))]


def _embedding_section(features, dataset, metric: str, scratch: Path, num_identities: int) -> str:
    """PCA of the gallery features of real identities (pid 0 distractors and −1 junk left out), on the unit
    sphere for the cosine metric, as retrieval sees them."""
    features = _as_numpy(features).astype(np.float64)
    if metric == "cosine":
        features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    pids = np.array([s[1] for s in dataset.gallery])
    path = plot_embedding(features[pids > 0], pids[pids > 0], scratch / "embedding.png", num_identities=num_identities)
    return image_figure(path, f"gallery features of the {min(num_identities, len(set(pids[pids > 0].tolist())))} most "
                        "frequent identities, projected on their first two principal components")


