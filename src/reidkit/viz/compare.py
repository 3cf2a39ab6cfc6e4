"""Self-contained HTML page comparing finished runs: metrics table, overlaid CMC curves, config keys that
differ. One file, built like the run report of `reidkit.viz.report` (inline CSS, pictures as data URIs)."""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path

import numpy as np

from reidkit.outputs import write_file
from reidkit.viz.report import _image, _metrics_table, _table, _write_page


def compare_runs(run_dirs: list[str | Path], out_path: str | Path, labels: list[str] | None = None) -> Path:
    """Write one HTML page comparing runs: metrics table, overlaid CMC curves, config keys that differ.

    Raises:
        ReidkitError: a folder that does not exist, or has no metrics.json, or a damaged metrics.json or
            config.yaml; ValueError: no run, or labels of the wrong length.
    """
    from reidkit.engine.run_folder import flatten
    from reidkit.engine.runs import read_run_config, read_run_metrics

    if not run_dirs:
        raise ValueError("compare_runs needs at least one run folder")
    run_dirs = [Path(run) for run in run_dirs]
    names = [run.resolve().name for run in run_dirs]
    labels = labels or (names if len(set(names)) == len(names) else [str(run) for run in run_dirs])
    if len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs")
    metrics = {label: read_run_metrics(run) for label, run in zip(labels, run_dirs)}
    configs = {label: flatten(read_run_config(run)) if (run / "config.yaml").is_file() else {}
               for label, run in zip(labels, run_dirs)}
    with tempfile.TemporaryDirectory() as scratch:
        curve = _plot_cmc_overlay({label: m["cmc"] for label, m in metrics.items() if m.get("cmc")},
                                  Path(scratch) / "cmc.png")
        sections = [("metrics", "Metrics", _metrics_table(metrics)),
                    ("cmc", "CMC curves", _image(curve, "CMC curves of the compared runs")),
                    ("config-diff", "Config differences", _config_diff(configs))]
    summary = "runs: " + ", ".join(f"{label} ({run})" for label, run in zip(labels, run_dirs))
    return _write_page(Path(out_path), "reidkit run comparison", summary, sections, [])


def _config_diff(configs: dict[str, dict]) -> str:
    keys = sorted({key for flat in configs.values() for key in flat})
    values = {key: [json.dumps(flat.get(key), sort_keys=True) for flat in configs.values()] for key in keys}
    rows = [(key, "".join(f"<td>{html.escape(text)}</td>" for text in texts))
            for key, texts in values.items() if len(set(texts)) > 1]
    return _table("config-diff", ["key", *configs], rows) if rows else "<p>The configs are identical.</p>"


def _plot_cmc_overlay(curves: dict[str, list[float]], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for label, cmc in curves.items():
        axes.plot(np.arange(1, len(cmc) + 1), 100 * np.asarray(cmc), label=f"{label} (R1 {100 * cmc[0]:.1f}%)")
    axes.set(xlabel="rank", ylabel="matching rate (%)", title="CMC", ylim=(0, 101))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return write_file(path, lambda temporary: figure.savefig(temporary, format="png"))
