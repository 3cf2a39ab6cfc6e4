"""The clustering rounds of an adaptation run (`reidkit adapt`): clusters and outliers, and, where the true
identities are known, purity, NMI and ARI of the pseudo labels, per round."""

from __future__ import annotations

from pathlib import Path

from reidkit.viz.curves import new_figure, save_figure

SCORES = ("cluster/purity", "cluster/nmi", "cluster/ari")


def plot_pseudo_label_rounds(records: list[dict], path: str | Path) -> Path:
    """Save one PNG: clusters and outliers against the epoch of each round; purity, NMI and ARI (when the
    records hold them) on a second panel.

    Args:
        records: parsed lines of ``metrics.jsonl``; those of ``"kind": "cluster"`` are drawn
            (``"epoch"``, ``"cluster/clusters"``, ``"cluster/outliers"``, ``"cluster/purity"``, ...).
        path: PNG file to write.

    Raises:
        ValueError: no clustering record.
    """
    rounds = [record for record in records if record.get("kind") == "cluster"]
    if not rounds:
        raise ValueError("no 'cluster' record in metrics.jsonl: not an adaptation run")
    scored = any(key in record for record in rounds for key in SCORES)
    figure, axes = new_figure(1, 2 if scored else 1, (9.0 if scored else 4.5, 3.2))
    counts = axes[0] if scored else axes
    epochs = [record["epoch"] for record in rounds]
    for key in ("cluster/clusters", "cluster/outliers"):
        counts.plot(epochs, [record.get(key, 0) for record in rounds], marker="o", label=key.split("/")[1])
    counts.set(title="pseudo identities per round", xlabel="epoch")
    counts.legend(loc="best")
    counts.grid(alpha=0.3)
    if scored:
        for key in SCORES:
            axes[1].plot(epochs, [record.get(key) for record in rounds], marker="o", label=key.split("/")[1])
        axes[1].set(title="pseudo labels against the true identities", xlabel="epoch", ylim=(0, 1))
        axes[1].legend(loc="best")
        axes[1].grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path)
