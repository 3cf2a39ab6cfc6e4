"""Reports of run folders: read a run (`reidkit.engine.saved_runs`), recompute what its files lack (the test
set; the ranked lists and gallery features from its reloaded model) and hand it all to `reidkit.viz.report`;
compare runs with `reidkit.viz.compare`."""

from __future__ import annotations

from pathlib import Path

from reidkit.config.differences import flatten
from reidkit.data.build import DatasetLoader, build_test_sets
from reidkit.data.loading import build_test_loader
from reidkit.data.transforms import build_test_transform
from reidkit.devices import resolve_device, uses_amp
from reidkit.engine.activation import activation_of_files
from reidkit.engine.eval_folders import read_evaluations
from reidkit.engine.evaluation import rank_feature_sets
from reidkit.engine.extraction import extract_features
from reidkit.engine.saved_runs import (
    load_run_config,
    load_run_model,
    read_json_object,
    read_metrics_records,
    read_run_config,
    read_run_metrics,
)
from reidkit.errors import ReidkitError
from reidkit.viz.compare import compare_runs
from reidkit.viz.report import RunSummary, write_report


def read_run_summary(run_dir: str | Path) -> RunSummary:
    """The config, metrics, baselines and training records of a finished run, read with checks.

    Raises:
        ReidkitError: not a finished run folder (no config.yaml or metrics.json), or its config.yaml,
            metrics.json or baselines.json is damaged (unreadable metrics.jsonl lines are skipped with a note).
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    metrics = read_run_metrics(run_dir)
    baselines = _read_baselines(run_dir / "baselines.json")
    records, skipped = read_metrics_records(run_dir / "metrics.jsonl")
    lines = f"line{'s' if len(skipped) > 1 else ''} {', '.join(map(str, skipped[:5]))}{', …' * (len(skipped) > 5)}"
    notes = [(f"metrics.jsonl: skipped unreadable {lines} (a run killed while writing leaves a partial last "
              "line); the training curves show the other records")] if skipped else []
    evaluations, unreadable = read_evaluations(run_dir)
    return RunSummary(run_dir.resolve().name, config, (run_dir / "config.yaml").read_text(encoding="utf-8", errors="replace"),
                      metrics, baselines, records, notes + unreadable, evaluations)


def report_run(run_dir: str | Path, ranked=None, dataset=None, gallery_features=None,
               out_path: str | Path | None = None, activation=None, **drawing) -> Path:
    """Write the HTML report of a finished run (default ``run_dir/report.html``).

    What is not given is recomputed: the test set from the run's config, and the gallery features and the
    ranked lists by reloading the model (``model.safetensors``) and extracting features as ``config.eval`` says
    (ranked in blocks: never the query-gallery matrix), and with ``eval.activation_maps`` the activation maps
    of the reloaded model. The trainer passes what it has. Sections needing an unavailable data set or model
    are left out with a note saying why. `drawing`: `num_ranked`, `num_worst`,
    `num_identities`, `training_curves` of `reidkit.viz.report.write_report`.

    Raises:
        ReidkitError: as `read_run_summary`.
    """
    run_dir = Path(run_dir)
    summary = read_run_summary(run_dir)
    config = summary.config
    if dataset is None:
        dataset = _try(summary.notes, "data set",
                       lambda: build_test_sets(config, DatasetLoader(progress=False))[0])
    need_features = dataset is not None and (ranked is None or gallery_features is None)
    need_activation = dataset is not None and activation is None and config.eval.activation_maps
    if need_features or need_activation:
        device = resolve_device(config.train.device)
        model = _try(summary.notes, "model", lambda: load_run_model(run_dir, config).to(device))
        if model is not None and need_features:
            recomputed = _try(summary.notes, "model features",
                              lambda: _extract(model, device, config, dataset, need_query=ranked is None))
            if recomputed is not None:
                ranked = recomputed[0] if ranked is None else ranked
                gallery_features = recomputed[1]
        if model is not None and need_activation:
            activation = activation_of_files(model, config.data.height, config.data.width, device,
                                             config.data.interpolation)
    return write_report(summary, Path(out_path) if out_path else run_dir / "report.html", ranked=ranked,
                        dataset=dataset, gallery_features=gallery_features, activation=activation, **drawing)


def compare_run_folders(run_dirs: list[str | Path], out_path: str | Path, labels: list[str] | None = None) -> Path:
    """Write one HTML page comparing finished runs (`reidkit.viz.compare.compare_runs`), labelled by their folder
    names (their paths where names repeat) or `labels`; each run's later evaluations (`reidkit eval` folders)
    follow it as rows "LABEL: eval/SETS" with the run's config.

    Raises:
        ReidkitError: a folder that does not exist, or has no metrics.json, or a damaged metrics.json or
            config.yaml; ValueError: no run, or labels of the wrong length.
    """
    if not run_dirs:
        raise ValueError("compare_run_folders needs at least one run folder")
    run_dirs = [Path(run) for run in run_dirs]
    names = [run.resolve().name for run in run_dirs]
    labels = labels or (names if len(set(names)) == len(names) else [str(run) for run in run_dirs])
    if len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs")
    metrics, configs = {}, {}
    for label, run in zip(labels, run_dirs):
        config = flatten(read_run_config(run)) if (run / "config.yaml").is_file() else {}
        metrics[label], configs[label] = read_run_metrics(run), config
        for folder, values in read_evaluations(run)[0].items():
            metrics[f"{label}: {folder}"], configs[f"{label}: {folder}"] = values, config
    summary = "runs: " + ", ".join(f"{label} ({run})" for label, run in zip(labels, run_dirs))
    return compare_runs(metrics, configs, out_path, summary)


def _read_baselines(path: Path) -> dict:
    """baselines.json ({name: metrics}) when present, else {}."""
    fix = "delete it and the report leaves the baselines out"
    baselines = read_json_object(path, fix) if path.is_file() else {}
    if not all(isinstance(values, dict) for values in baselines.values()):
        raise ReidkitError(f"{path} is damaged: each baseline must be an object of metrics; {fix}")
    return baselines


def _try(notes: list[str], what: str, compute):
    """compute(), or None and a note on a ReidkitError."""
    try:
        return compute()
    except ReidkitError as error:
        notes.append(f"{what} not available, sections that need it are left out: {error}")
        return None


def _extract(model, device, config, dataset, need_query: bool):
    """(ranked lists or None, gallery features [G, D]) from the run's reloaded model."""
    transform = build_test_transform(config.data.height, config.data.width, interpolation=config.data.interpolation)
    loaders = [build_test_loader(samples, transform, batch_size=config.eval.batch_size, workers=config.data.workers)
               for samples in ((dataset.query, dataset.gallery) if need_query else (dataset.gallery,))]
    features = [extract_features(model, loader, feature=config.eval.feature, flip=config.eval.flip, device=device,
                                 amp=uses_amp(config.train, device), progress=False) for loader in loaders]
    ranked = rank_feature_sets(features[0], features[1], dataset.query, dataset.gallery, config.eval.metric,
                               config.eval.max_rank, config.eval.junk) if need_query else None
    return ranked, features[-1]
