"""How well pseudo labels (clusters) match the true identities, where those are known (e.g. the synthetic set).

Purity (Manning et al., Introduction to Information Retrieval, 2008, ch. 16), normalised mutual information
and the adjusted Rand index (Hubert & Arabie, 1985), the last two from scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reidkit.errors import ReidkitError


def pseudo_label_quality(pseudo_labels: Any, true_labels: Any) -> dict[str, float]:
    """Scores of the clustered images (pseudo label ≥ 0; −1 marks an outlier) against their identities.

    purity = (1 / M) Σ_c max_t |{i in c with identity t}| over the M clustered images; NMI (arithmetic mean
    normalisation) and ARI as scikit-learn computes them, on the clustered images only; `clustered` = M / N.
    A set with no clustered image scores 0 everywhere.

    Args:
        pseudo_labels: `[N]` ints, −1 for outliers.
        true_labels: `[N]` ints, the identities.

    Returns:
        `{"clusters", "outliers", "clustered", "purity", "nmi", "ari"}`.

    Raises:
        ValueError: the two label arrays differ in length.
        ReidkitError: scikit-learn is missing (names the extra to install).
    """
    try:
        from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    except ImportError as error:
        raise ReidkitError('pseudo-label scores need scikit-learn: pip install "reidkit[adapt]"') from error
    pseudo, true = np.asarray(pseudo_labels, np.int64), np.asarray(true_labels, np.int64)
    if pseudo.shape != true.shape or pseudo.ndim != 1:
        raise ValueError(f"expected two [N] label arrays, got shapes {pseudo.shape} and {true.shape}")
    clustered = pseudo >= 0
    scores = {"clusters": int(len(np.unique(pseudo[clustered]))), "outliers": int((~clustered).sum()),
              "clustered": float(clustered.mean()) if len(pseudo) else 0.0}
    if not clustered.any():
        return scores | {"purity": 0.0, "nmi": 0.0, "ari": 0.0}
    pseudo, true = pseudo[clustered], true[clustered]
    _, true_index = np.unique(true, return_inverse=True)
    counts = np.zeros((pseudo.max() + 1, true_index.max() + 1), np.int64)
    np.add.at(counts, (pseudo, true_index), 1)
    return scores | {"purity": float(counts.max(axis=1).sum() / len(pseudo)),
                     "nmi": float(normalized_mutual_info_score(true, pseudo)),
                     "ari": float(adjusted_rand_score(true, pseudo))}
