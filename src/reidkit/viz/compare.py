"""HTML page comparing finished runs from their metrics and flattened configs: metrics table, overlaid CMC
curves, config keys that differ. One self-contained file like the run report (`reidkit.viz.html_page`);
`reidkit.engine.reporting.compare_run_folders` reads the run folders into it."""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path

import numpy as np

from reidkit.outputs import write_file
from reidkit.viz.html_page import image_figure, metrics_table, table, write_page


def compare_runs(metrics: dict[str, dict], configs: dict[str, dict], out_path: str | Path, summary: str) -> Path:
    """Write one HTML page comparing runs: a metrics table, the CMC curves overlaid, the config keys whose values
    differ. `metrics` and `configs` map each run's label to its metrics.json and its flattened config
    (`reidkit.config.differences.flatten`; {} when unknown), in the same order; `summary` is the line under the
    title.

    Raises:
        ValueError: no run, or `configs` labelled differently from `metrics`.
    """
    if not metrics:
        raise ValueError("compare_runs needs at least one run")
    if list(configs) != list(metrics):
        raise ValueError(f"configs for {list(configs)} but metrics for {list(metrics)}")
    with tempfile.TemporaryDirectory() as scratch:
        curve = _plot_cmc_overlay({label: m["cmc"] for label, m in metrics.items() if m.get("cmc")},
                                  Path(scratch) / "cmc.png")
        sections = [("metrics", "Metrics", metrics_table(metrics)),
                    ("cmc", "CMC curves", image_figure(curve, "CMC curves of the compared runs")),
                    ("config-diff", "Config differences", _config_diff(configs))]
    return write_page(Path(out_path), "reidkit run comparison", summary, sections, [])


def _config_diff(configs: dict[str, dict]) -> str:
    keys = sorted({key for flat in configs.values() for key in flat})
    values = {key: [json.dumps(flat.get(key), sort_keys=True) for flat in configs.values()] for key in keys}
    rows = [(key, "".join(f"<td>{html.escape(text)}</td>" for text in texts))
            for key, texts in values.items() if len(set(texts)) > 1]
    return table("config-diff", ["key", *configs], rows) if rows else "<p>The configs are identical.</p>"


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
