"""Self-contained HTML report of one run (`report.html`); `reidkit.viz.compare` compares several runs.

One file each: inline CSS, pictures as base64 data URIs, no script, no network access. `write_report`
sections: config (collapsible), data set, metrics (with baselines.json and pair-head re-scoring when
present), CMC, training curves per loss term, attribute accuracies (when present), rank-1 per camera pair,
ranked lists of sample queries and of the worst queries by AP, PCA scatter of gallery features.
The metrics table and CMC curve are the run's metrics.json (its evaluation protocol, named in the data set
section); the sections recomputed here follow `reidkit.metrics.evaluate_rank` (all gallery, Market-1501
junk rule, non-interpolated AP). Nothing new is stored in the run: what the run's files lack is
recomputed from its config, data set and model.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from reidkit.errors import ReidkitError
from reidkit.outputs import write_text

METRIC_COLUMNS = (("rank1", "rank-1"), ("rank5", "rank-5"), ("rank10", "rank-10"), ("mAP", "mAP"), ("mINP", "mINP"))
_CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1rem 2rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; border-bottom: 1px solid #ccc; padding-bottom: .2rem; }
nav a { margin-right: .8rem; } .note { color: #666; font-size: .9rem; }
table { border-collapse: collapse; margin: .5rem 0; } th, td { border: 1px solid #ccc; padding: .25rem .6rem; }
td { text-align: right; } td.name, th.name { text-align: left; } thead th { background: #f0f0f0; }
pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; } img { max-width: 100%; }
figure { margin: .8rem 0; } figcaption { font-size: .85rem; color: #444; }
"""


def write_report(run_dir: str | Path, ranked: Any = None, dataset: Any = None, gallery_features: Any = None,
                 out_path: str | Path | None = None, num_ranked: int = 6, num_worst: int = 6,
                 num_identities: int = 20, activation=None) -> Path:
    """Write the HTML report of a finished run.

    What is not given is recomputed: the data set from the run's config, and the gallery features and
    the ranked lists by reloading the model (``model.safetensors``) and extracting features as
    ``config.eval`` says (ranked in blocks: never the query-gallery matrix). The trainer passes what it has; sections needing an unavailable data set or
    model say so instead of failing.

    Args:
        run_dir: run folder written by `reidkit train` (needs config.yaml and metrics.json).
        ranked: the final evaluation's `RankedLists` (``reidkit.metrics.ranked_lists``: per query its AP and
            nearest gallery items, rank-1 per camera pair), in data set order.
        dataset: the run's `ReidDataset`.
        gallery_features: ``[G, D]`` retrieval features of the gallery (for the PCA scatter).
        out_path: HTML file to write; default ``run_dir/report.html``.
        num_ranked: sample queries drawn as ranked lists.
        num_worst: worst queries (lowest AP) drawn as ranked lists.
        num_identities: identities in the PCA scatter.
        activation: image file → activation map `[h, w]` in [0, 1] (`reidkit.engine.activation`): the ranked
            lists then show where the feature comes from under each image (the trainer hands it with
            eval.activation_maps).

    Returns:
        The path of the report.

    Raises:
        ReidkitError: not a finished run folder (no config.yaml or metrics.json), or its config.yaml,
            metrics.json or baselines.json is damaged (unreadable metrics.jsonl lines are skipped with a note).
    """
    from reidkit.data.build import DatasetLoader, build_test_sets
    from reidkit.engine.runs import load_run_config, read_metrics_records, read_run_metrics

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    metrics = read_run_metrics(run_dir)
    baselines = _read_baselines(run_dir / "baselines.json")
    records, skipped = read_metrics_records(run_dir / "metrics.jsonl")
    lines = f"line{'s' if len(skipped) > 1 else ''} {', '.join(map(str, skipped[:5]))}{', …' * (len(skipped) > 5)}"
    notes = [(f"metrics.jsonl: skipped unreadable {lines} (a run killed while writing leaves a partial last "
              "line); the training curves show the other records")] if skipped else []
    rows = {"this run": metrics}
    if "verification_rescored" in metrics:
        rows["top-k re-scored by the pair head"] = metrics["verification_rescored"]
    if "reranked" in metrics:
        rows["k-reciprocal re-ranking"] = metrics["reranked"]
    if "query_expanded" in metrics:
        rows["query expansion"] = metrics["query_expanded"]
    rows.update({f"baseline: {name.replace('_', ' ')}": values for name, values in baselines.items()})
    if dataset is None:
        dataset = _try(notes, "data set", lambda: build_test_sets(config, DatasetLoader(progress=False))[0])
    if dataset is not None and (ranked is None or gallery_features is None):
        recomputed = _try(notes, "model features", lambda: _extract(run_dir, config, dataset, ranked is None))
        if recomputed is not None:
            gallery_features = recomputed[1]
            ranked = recomputed[0] if ranked is None else ranked
    with tempfile.TemporaryDirectory() as scratch:
        sections = [
            ("config", "Config", _config_section(run_dir)),
            ("dataset", "Data set", _dataset_section(config, dataset, metrics)),
            ("metrics", "Metrics", _metrics_table(rows)),
            *([("test-sets", "Test sets", _test_sets_section(metrics["test_sets"]))] if "test_sets" in metrics else []),
            ("cmc", "CMC curve", _cmc_section(metrics, Path(scratch), dataset)),
            ("training", "Training curves", _training_section(records, Path(scratch))),
        ]
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
    title = f"reidkit report — {run_dir.resolve().name}"
    trained_on = "+".join(source.name or source.dataset for source in config.data.train_sets) or config.data.dataset
    summary = (f"{config.model.backbone} on {trained_on}, {config.train.epochs} epochs · "
               f"rank-1 {metrics['rank1']:.2%} · mAP {metrics['mAP']:.2%} · mINP {metrics['mINP']:.2%}")
    return _write_page(Path(out_path) if out_path else run_dir / "report.html", title, summary, sections, notes)


def _as_numpy(values: Any) -> np.ndarray:  # numpy or torch → numpy
    return np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values)


def _read_baselines(path: Path) -> dict:  # baselines.json ({name: metrics}) when present, else {}
    from reidkit.engine.runs import read_json_object

    fix = "delete it and the report leaves the baselines out"
    baselines = read_json_object(path, fix) if path.is_file() else {}
    if not all(isinstance(values, dict) for values in baselines.values()):
        raise ReidkitError(f"{path} is damaged: each baseline must be an object of metrics; {fix}")
    return baselines


def _try(notes: list[str], what: str, compute):  # compute(), or None and a note on a ReidkitError
    try:
        return compute()
    except ReidkitError as error:
        notes.append(f"{what} not available, sections that need it are left out: {error}")
        return None


def _extract(run_dir: Path, config, dataset, need_query: bool):
    """(ranked lists or None, gallery features [G, D]) from the run's reloaded model."""
    from reidkit.data.loading import build_test_loader
    from reidkit.data.transforms import build_test_transform
    from reidkit.engine.evaluator import extract_features, rank_feature_sets, uses_amp
    from reidkit.engine.runs import load_run_model
    from reidkit.engine.trainer import resolve_device

    device = resolve_device(config.train.device)
    model = load_run_model(run_dir, config).to(device)
    transform = build_test_transform(config.data.height, config.data.width)
    loaders = [build_test_loader(samples, transform, batch_size=config.eval.batch_size, workers=config.data.workers)
               for samples in ((dataset.query, dataset.gallery) if need_query else (dataset.gallery,))]
    features = [extract_features(model, loader, feature=config.eval.feature, flip=config.eval.flip, device=device,
                                 amp=uses_amp(config.train, device), progress=False) for loader in loaders]
    ranked = rank_feature_sets(features[0], features[1], dataset.query, dataset.gallery, config.eval.metric,
                               config.eval.max_rank, config.eval.junk) if need_query else None
    return ranked, features[-1]


def _table(table_id: str, header: list[str], rows: list[tuple[str, str]]) -> str:
    """An HTML table: column titles, then rows of (name, cells HTML); the first column holds the names."""
    head = "".join(f"<th>{html.escape(title)}</th>" for title in header[1:])
    body = "".join(f"<tr data-row='{html.escape(name, quote=True)}'><td class='name'>{html.escape(name)}</td>"
                   f"{cells}</tr>" for name, cells in rows)
    return (f"<table id='{table_id}'><thead><tr><th class='name'>{html.escape(header[0])}</th>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _percent(value: Any, digits: int = 2, key: str = "", title: str = "") -> str:
    """A cell with `value` in % that keeps the exact value in data-value; "—" for a missing value."""
    if not isinstance(value, (int, float)):
        return f"<td data-key='{key}'>—</td>"
    return f"<td data-key='{key}' data-value='{value!r}' title='{title}'>{100 * value:.{digits}f}</td>"


def _config_section(run_dir: Path) -> str:
    text = html.escape((run_dir / "config.yaml").read_text())
    return f"<details><summary>config.yaml</summary><pre>{text}</pre></details>"


def _dataset_section(config, dataset, metrics: dict) -> str:
    valid = (f"<p>{metrics.get('num_valid_queries', '?')} valid queries (protocol "
             f"&quot;{html.escape(metrics.get('protocol', 'all_gallery'))}&quot;, junk rule "
             f"&quot;{html.escape(config.eval.junk)}&quot;).</p>")
    if config.data.train_sets or config.data.combineall:
        from reidkit.config.sections import set_names

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
            + _table("dataset-table", ["split", "identities", "images", "cameras"], rows) + valid)


def _metrics_table(rows: dict[str, dict]) -> str:
    """Rows of metrics in % (two decimals); each cell keeps the exact value in data-value."""
    return _table("metrics-table", ["model"] + [f"{title} (%)" for _, title in METRIC_COLUMNS],
                  [(name, "".join(_percent(values.get(key), key=key) for key, _ in METRIC_COLUMNS))
                   for name, values in rows.items()])


def _test_sets_section(test_sets: dict[str, dict]) -> str:
    """One row per test set of a cross-domain evaluation (the sections below show the first)."""
    return ("<p>The same model on each test set; the sections below show the first one.</p>"
            + _table("test-sets-table", ["test set"] + [f"{title} (%)" for _, title in METRIC_COLUMNS],
                     [(name, "".join(_percent(values.get(key), key=key) for key, _ in METRIC_COLUMNS))
                      for name, values in test_sets.items()]))


def _cmc_section(metrics: dict, scratch: Path, dataset) -> str:
    from reidkit.viz.curves import plot_cmc

    label = dataset.name if dataset is not None else None
    return _image(plot_cmc(metrics["cmc"], scratch / "cmc.png", label=label), "CMC curve") if metrics.get("cmc") \
        else "<p class='note'>metrics.json has no CMC curve.</p>"


def _training_section(records: list[dict], scratch: Path) -> str:
    from reidkit.viz.curves import plot_training_curves

    if not records:
        return "<p class='note'>no metrics.jsonl records.</p>"
    return _image(plot_training_curves(records, scratch / "training.png"),
                  "each loss term and the learning rate per step; evaluation per epoch")


def _open_set_section(figures: dict, scratch: Path) -> str:
    from reidkit.viz.curves import plot_distance_histograms, plot_roc

    rows = [("EER", _percent(figures["eer"], title=f"threshold {figures['eer_threshold']:.6g}"))]
    rows += [(f"TPR at FPR {float(fpr):g}", _percent(tpr)) for fpr, tpr in figures["tpr_at_fpr"].items()]
    rows.append((f"threshold for FPR ≤ {figures['target_fpr']:g}",
                 f"<td data-value='{figures['threshold']!r}'>{figures['threshold']:.4f} (TPR "
                 f"{figures['tpr_at_threshold']:.2%}, FPR {figures['fpr_at_threshold']:.4%})</td>"))
    text = (f"<p>{figures['num_genuine']} same-identity and {figures['num_impostor']} different-identity "
            f"{html.escape(figures['pairs'])} pairs, {html.escape(figures['metric'])} distance; "
            "same person when the distance is below the threshold.</p>")
    return (text + _table("open-set-table", ["figure", "value"], rows)
            + _image(plot_roc(figures, scratch / "roc.png"), "ROC curve (log FPR axis)")
            + _image(plot_distance_histograms(figures, scratch / "distances.png"),
                     "distances of same- and different-identity pairs"))


def _attribute_section(accuracy: dict[str, float]) -> str:
    rows = [(name, _percent(value)) for name, value in accuracy.items()]
    mean = sum(accuracy.values()) / len(accuracy)
    return _table("attribute-table", ["attribute", "accuracy (%)"], rows) + f"<p>mean {100 * mean:.2f}%</p>"


def _camera_section(table: dict) -> str:
    columns = [f"gallery c{camera + 1}" for camera in table["gallery_cameras"]]
    rows = [(f"query c{camera + 1}", "".join(_percent(rate, 1, key=column, title=f"{count} valid queries")
                                             for column, rate, count in zip(columns, rates, counts)))
            for camera, rates, counts in zip(table["query_cameras"], table["rank1"], table["queries"])]
    return ("<p>Rank-1 (%) of each query camera's queries searched in one gallery camera; — where no query "
            "has a true match there (same-camera matches are junk under the Market-1501 rule).</p>"
            + _table("camera-table", ["", *columns], rows))


def _ranked_sections(ranked, dataset, scratch: Path, num_ranked: int, num_worst: int, activation=None) -> list:
    from reidkit.viz.ranked import save_ranked_lists

    precisions = ranked.ap
    valid = np.flatnonzero(~np.isnan(precisions))
    worst = valid[np.argsort(precisions[valid], kind="stable")][:num_worst].tolist()
    topk = ranked.top_indices.shape[1]
    sample = save_ranked_lists(ranked, dataset.query, dataset.gallery, scratch / "ranked", num_queries=num_ranked,
                               topk=topk, activation=activation)
    hard = save_ranked_lists(ranked, dataset.query, dataset.gallery, scratch / "worst", query_indices=worst,
                             topk=topk, activation=activation)
    legend = "<p class='note'>query in blue; green frame: same identity, red: another identity." + (
        " Second row: where the feature comes from (norm of the backbone's last feature map at each position; "
        "blue low, red high)." if activation is not None else "") + "</p>"

    def picture(path: Path) -> str:
        index = int(path.stem.split("_")[1])
        _, pid, camid = dataset.query[index]
        caption = f"query {index} · pid {pid} · camera c{camid + 1} · AP {precisions[index]:.3f}"
        return _image(path, caption, photo=True)

    return [("ranked", "Ranked lists of sample queries", legend + "".join(map(picture, sample))),
            ("worst", "Worst queries by average precision", legend + "".join(map(picture, hard)))]


def _embedding_section(features, dataset, metric: str, scratch: Path, num_identities: int) -> str:
    """PCA of the gallery features of real identities (pid 0 distractors and −1 junk left out), on the unit
    sphere for the cosine metric, as retrieval sees them."""
    from reidkit.viz.embedding_plot import plot_embedding

    features = _as_numpy(features).astype(np.float64)
    if metric == "cosine":
        features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    pids = np.array([s[1] for s in dataset.gallery])
    path = plot_embedding(features[pids > 0], pids[pids > 0], scratch / "embedding.png", num_identities=num_identities)
    return _image(path, f"gallery features of the {min(num_identities, len(set(pids[pids > 0].tolist())))} most "
                        "frequent identities, projected on their first two principal components")


def _image(path: Path, caption: str, photo: bool = False) -> str:
    """A figure with the PNG at `path` as a data URI; `photo` re-encodes it as JPEG (~8× smaller for photos)."""
    if photo:
        from PIL import Image

        buffer = io.BytesIO()
        with Image.open(path) as image:
            image.convert("RGB").save(buffer, format="JPEG", quality=85)
        media, data = "image/jpeg", buffer.getvalue()
    else:
        media, data = "image/png", Path(path).read_bytes()
    text = html.escape(caption)
    return (f"<figure><img alt='{text}' src='data:{media};base64,{base64.b64encode(data).decode('ascii')}'>"
            f"<figcaption>{text}</figcaption></figure>")


def _write_page(out: Path, title: str, summary: str, sections: list[tuple[str, str, str]], notes: list[str]) -> Path:
    """Write the HTML page: title, summary, notes, links to the sections, then the sections."""
    written = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f"<a href='#{key}'>{html.escape(name)}</a>" for key, name, _ in sections)
    body = "".join(f"<section id='{key}'><h2>{html.escape(name)}</h2>{content}</section>"
                   for key, name, content in sections)
    remarks = "".join(f"<p class='note'>{html.escape(note)}</p>" for note in notes)
    return write_text(out, f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
                           f"<h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>"
                           f"<p class='note'>written {written}</p>{remarks}<nav>{nav}</nav>{body}</body></html>\n")
