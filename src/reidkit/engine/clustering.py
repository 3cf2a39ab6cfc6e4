"""One clustering round of adaptation: features → k-reciprocal Jaccard distance → DBSCAN → pseudo labels.

DBSCAN: Ester, Kriegel, Sander & Xu, KDD 1996 (scikit-learn's, on the sparse precomputed distances).
Outliers (images in no cluster) get the label −1 and are left out of the round's training (the policy of
Cluster Contrast; SpCL would keep them as single-image entries).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from reidkit.errors import ReidkitError
from reidkit.metrics.jaccard import jaccard_distance_graph


def dbscan_labels(distances: sp.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN cluster labels `[N]` (0..C−1 in order of each cluster's first core point; −1 outliers) of a
    sparse distance graph whose absent entries are farther than `eps`.

    A core point has at least `min_samples` points (itself included) within `eps` (≤); clusters are the core
    points joined through such neighbourhoods plus the non-core points within `eps` of one of them.

    Raises:
        ReidkitError: scikit-learn is missing (names the extra to install).
    """
    try:
        from sklearn.cluster import DBSCAN
    except ImportError as error:
        raise ReidkitError('clustering needs scikit-learn: pip install "reidkit[adapt]"') from error
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(distances).astype(np.int64)


def pseudo_labels(features: Any, k1: int, k2: int, eps: float, min_samples: int,
                  progress: bool = False) -> np.ndarray:
    """Pseudo labels `[N]` of `features` `[N, D]`: DBSCAN on their k-reciprocal Jaccard distances (only the
    entries ≤ eps are built: `jaccard_distance_graph`)."""
    graph = jaccard_distance_graph(features, k1, k2, max_distance=eps, progress=progress)
    return dbscan_labels(graph, eps, min_samples)


def cluster_means(features: Any, labels: np.ndarray) -> np.ndarray:
    """`[C, D]` mean feature of each cluster 0..C−1 (outliers, −1, left out)."""
    features = np.asarray(features, np.float64)
    clustered = labels >= 0
    sums = np.zeros((labels.max() + 1, features.shape[1]))
    np.add.at(sums, labels[clustered], features[clustered])
    return sums / np.bincount(labels[clustered])[:, None]
