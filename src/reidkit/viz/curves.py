"""Curves of a run: the CMC curve of an evaluation, the training curves of ``metrics.jsonl``, and the open-set
ROC curve and pair-distance histograms (drawn from the ``open_set`` entry of metrics.json alone).

Figures are drawn with matplotlib's object-oriented API on an Agg canvas (no pyplot, no global
backend change, nothing left open); matplotlib is imported inside the functions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from reidkit.outputs import write_file

_EVAL_KEYS = ("rank1", "mAP", "mINP")


def plot_cmc(cmc: Any, path: str | Path, label: str | None = None) -> Path:
    """Save the CMC curve as a PNG, with rank-1/5/10 annotated.

    Args:
        cmc: ``[max_rank]`` matching rates in [0, 1]; ``cmc[k]`` is the rate at rank k + 1.
        path: PNG file to write (parent folders are created).
        label: legend entry, e.g. the model name; no legend when None.

    Returns:
        ``path`` as a Path.
    """
    cmc = np.asarray(cmc, dtype=np.float64).reshape(-1)
    if cmc.size == 0:
        raise ValueError("cmc is empty")
    figure, axes = new_figure(1, 1, (6.0, 4.5))
    ranks = np.arange(1, cmc.size + 1)
    axes.plot(ranks, 100 * cmc, marker="." if cmc.size <= 50 else None, label=label)
    for rank in (1, 5, 10):
        if rank <= cmc.size:
            rate = 100 * cmc[rank - 1]
            axes.scatter([rank], [rate], color="black", zorder=3)
            axes.annotate(f"R{rank} {rate:.1f}%", (rank, rate), textcoords="offset points", xytext=(8, -4))
    bottom = max(0.0, 100 * cmc.min() - 5)
    axes.set(xlabel="rank", ylabel="matching rate (%)", title="CMC", xlim=(0.5, cmc.size + 0.5),
             ylim=(bottom, 101))
    axes.grid(alpha=0.3)
    if label is not None:
        axes.legend(loc="lower right")
    return save_figure(figure, path)


def plot_training_curves(records: list[dict], path: str | Path) -> Path:
    """Save the training curves of a run as one PNG.

    Panels: each loss term (``loss`` and every ``loss/<name>``) against the training step, the
    learning rate against the step, and rank-1 / mAP / mINP (%) against the epoch when eval records
    exist. Steps that restart at each epoch are made cumulative over epochs.

    Args:
        records: parsed lines of ``metrics.jsonl``: ``{"kind": "train", "epoch", "step", "lr",
            "loss", "loss/<name>", ...}`` and ``{"kind": "eval", "epoch", "rank1", "mAP", "mINP"}`` (with
            ``"test_set"`` when a run has several: one line per set).
        path: PNG file to write (parent folders are created).

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: nothing to plot (no loss, lr or eval values).
    """
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    steps = _global_steps([r.get("step", i) for i, r in enumerate(train)])
    loss_keys = sorted({k for r in train for k in r if k == "loss" or k.startswith("loss/")},
                       key=lambda k: (k != "loss", k))
    panels = [(key, "step") for key in loss_keys]
    if any("lr" in r for r in train):
        panels.append(("lr", "step"))
    if evals:
        panels.append(("eval", "epoch"))
    if not panels:
        raise ValueError("no 'train' record with a loss or lr, and no 'eval' record: nothing to plot")
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = new_figure(rows, columns, (4.5 * columns, 3.2 * rows))
    axes = np.atleast_1d(axes).reshape(-1)
    for ax, (key, x_label) in zip(axes, panels):
        if key == "eval":
            test_sets = list(dict.fromkeys(r.get("test_set") for r in evals))  # one line per test set
            for test_set in test_sets:
                for name in _EVAL_KEYS:
                    points = [(r["epoch"], 100 * r[name]) for r in evals if name in r and r.get("test_set") == test_set]
                    if points:
                        ax.plot(*zip(*points), marker="o", label=f"{test_set} {name}" if test_set else name)
            ax.set(title="evaluation (%)", ylim=(0, 100))
            ax.legend(loc="best")
        else:
            points = [(s, r[key]) for s, r in zip(steps, train) if key in r]
            ax.plot(*zip(*points), linewidth=1)
            ax.set(title=key)
            if key == "lr":
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_roc(figures: dict, path: str | Path) -> Path:
    """Save the ROC curve (TPR against FPR, log axis) of `figures` as a PNG, marking the threshold's point
    and the EER.

    Args:
        figures: the `open_set` dict of metrics.json (`roc`, `eer`, `fpr_at_threshold`, ...).
        path: PNG file to write.
    """
    roc = figures["roc"]
    floor = 0.5 / figures["num_impostor"]  # FPR 0 drawn at half the smallest non-zero FPR
    fpr = np.maximum(np.asarray(roc["fpr"], np.float64), floor)
    figure, axes = new_figure(1, 1, (6.0, 4.5))
    axes.step(fpr, 100 * np.asarray(roc["tpr"]), where="post", label="ROC")
    point = (max(figures["fpr_at_threshold"], floor), 100 * figures["tpr_at_threshold"])
    axes.scatter(*point, color="black", zorder=3,
                 label=f"threshold {figures['threshold']:.4f} (FPR ≤ {figures['target_fpr']:g})")
    eer = figures["eer"]
    axes.scatter([max(eer, floor)], [100 * (1 - eer)], marker="x", color="tab:red", zorder=3,
                 label=f"EER {100 * eer:.2f}%")
    axes.set(xscale="log", xlabel="false positive rate (impostor pairs accepted)",
             ylabel="true positive rate (%)", title=f"ROC, {figures['pairs']} pairs", xlim=(floor, 1.0),
             ylim=(0, 101))
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="upper left")
    return save_figure(figure, path)


def plot_distance_histograms(figures: dict, path: str | Path) -> Path:
    """Save the histograms of same- and different-identity pair distances (each normalised to its own
    count) with the threshold as a vertical line."""
    histogram = figures["histogram"]
    edges = np.asarray(histogram["edges"])
    figure, axes = new_figure(1, 1, (6.0, 4.0))
    for key, label, colour in (("same", "same identity", "tab:green"), ("different", "different identities",
                                                                          "tab:red")):
        counts = np.asarray(histogram[key], np.float64)
        axes.stairs(counts / max(counts.sum(), 1), edges, fill=True, alpha=0.45, color=colour,
                    label=f"{label} ({int(counts.sum())} pairs)")
    axes.axvline(figures["threshold"], color="black", linestyle="--", label=f"threshold {figures['threshold']:.4f}")
    axes.set(xlabel=f"{figures['metric']} distance", ylabel="share of pairs", title="Pair distances")
    axes.legend(loc="upper right")
    return save_figure(figure, path)


def _global_steps(steps: list[int]) -> list[int]:
    """Steps made cumulative where they restart (a step not above the previous one)."""
    offset, previous, result = 0, None, []
    for step in steps:
        if previous is not None and step + offset <= previous:
            offset = previous
        result.append(step + offset)
        previous = result[-1]
    return result


def new_figure(rows: int, columns: int, size: tuple[float, float]):
    """A matplotlib Figure on an Agg canvas, and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns, squeeze=True)


def save_figure(figure: Any, path: str | Path) -> Path:
    """Write ``figure`` to ``path`` as a PNG."""
    return write_file(path, lambda temporary: figure.savefig(temporary, format="png"))
