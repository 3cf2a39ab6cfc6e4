"""A 2-D picture of an embedding: PCA by NumPy SVD, scatter of the most frequent identities.

PCA (Pearson 1901; Hotelling 1933) here is the SVD of the centred feature matrix; the 2-D points are the
projections on the first two right singular vectors. matplotlib is imported inside the plotting function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reidkit.outputs import write_file


def pca_2d(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Project features on their first two principal components.

    Args:
        features: ``[N, D]`` (numpy or torch), N ≥ 1.

    Returns:
        ``(points [N, 2] float64, explained [2])``: the projections, and the fraction of the total variance
        each component explains (0 when the features have no variance; a missing component, for N = 1
        or D = 1, is all zeros).
    """
    if hasattr(features, "detach"):
        features = features.detach().cpu().numpy()
    matrix = np.asarray(features, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"features must be a non-empty [N, D] matrix, got shape {matrix.shape}")
    centred = matrix - matrix.mean(axis=0, keepdims=True)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    points = np.zeros((matrix.shape[0], 2))
    explained = np.zeros(2)
    count = min(2, components.shape[0])
    points[:, :count] = centred @ components[:count].T
    total = float((singular ** 2).sum())
    if total > 0:
        explained[:count] = singular[:count] ** 2 / total
    return points, explained


def top_identities(pids: Any, count: int = 20) -> list[int]:
    """The `count` pids with the most samples (ties: smaller pid first), most frequent first."""
    values, counts = np.unique(np.asarray(pids, dtype=np.int64), return_counts=True)
    order = np.lexsort((values, -counts))
    return [int(values[i]) for i in order[:count]]


def plot_embedding(features: Any, pids: Any, path: str | Path, num_identities: int = 20,
                   title: str = "gallery features (PCA)") -> Path:
    """Save a PCA scatter of the samples of the `num_identities` most frequent identities, one colour each.

    The PCA is fitted on the plotted samples only.

    Args:
        features: ``[N, D]`` features (numpy or torch).
        pids: ``[N]`` identities.
        path: PNG file to write (parent folders are created).
        num_identities: identities drawn (at most 20 distinct colours).
        title: figure title.

    Returns:
        ``path`` as a Path.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pids = np.asarray(pids, dtype=np.int64).reshape(-1)
    if hasattr(features, "detach"):
        features = features.detach().cpu().numpy()
    features = np.asarray(features)
    if len(features) != len(pids):
        raise ValueError(f"{len(features)} features but {len(pids)} pids")
    chosen = top_identities(pids, num_identities)
    keep = np.isin(pids, chosen)
    points, explained = pca_2d(features[keep])
    figure = Figure(figsize=(6.5, 5.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    palette = colormaps["tab20"]
    for number, pid in enumerate(chosen):
        mine = pids[keep] == pid
        axes.scatter(points[mine, 0], points[mine, 1], s=18, color=palette(number % 20), label=str(pid))
    axes.set(title=title, xlabel=f"PC 1 ({explained[0]:.0%})", ylabel=f"PC 2 ({explained[1]:.0%})")
    axes.grid(alpha=0.3)
    axes.legend(title="pid", fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    return write_file(path, lambda temporary: figure.savefig(temporary, format="png"))
