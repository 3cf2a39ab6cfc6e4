"""The `adapt` section: unsupervised domain adaptation by clustering (`reidkit adapt`), read only by that command."""

from __future__ import annotations

from dataclasses import dataclass, field

from reidkit.config.rules import refuse_bad
from reidkit.config.sections import DataSource, set_names


@dataclass
class AdaptConfig:
    # The run whose model starts the adaptation: a run folder of `reidkit train` or `reidkit import` (a Torchreid
    # or fast-reid checkpoint); `reidkit adapt --source RUN` sets it. Its model section and input size are kept.
    source: str = ""
    # Unlabelled training images: the train splits of these sets with their identities hidden (known identities
    # only score the pseudo labels: purity, NMI, ARI), and every image under these folders (cameras from
    # Market-style names `0002_c3...`, else camera 0). Both empty: the train split of data.* itself, hidden.
    unlabeled_sets: list[DataSource] = field(default_factory=list)
    unlabeled_folders: list[str] = field(default_factory=list)
    every: int = 1  # epochs between re-clusterings (features re-extracted, labels, sampler, memory rebuilt)
    # k-reciprocal Jaccard distance (Zhong et al. 2017) of the flip-averaged unit features: neighbourhood k1,
    # local query expansion over the k2 nearest
    k1: int = 30
    k2: int = 6
    # DBSCAN (Ester et al. 1996) on that distance: neighbourhood radius and the images a core point needs
    # (itself included). Outliers (in no cluster) are left out of the round's training.
    eps: float = 0.6
    min_samples: int = 4
    # AdaBN (Li et al., "Adaptive Batch Normalization for Practical Domain Adaptation", Pattern Recognition 2018):
    # before the first round, every BatchNorm layer's running mean and variance are re-estimated on the
    # unlabelled images (the source's statistics describe the source cameras), so that the first clustering
    # already sees target-normalised features. The direct-transfer evaluation is of the source model as it is.
    target_bn: bool = True

    def __post_init__(self) -> None:
        set_names(self.unlabeled_sets, "adapt.unlabeled_sets")
        refuse_bad("adapt", self, [
            ("every", self.every >= 1, "use 1 or more epochs (1: re-cluster every epoch)"),
            ("k1", self.k1 >= 1, "use 1 or more neighbours (Cluster Contrast: 30)"),
            ("k2", self.k2 >= 1, "use 1 or more neighbours (1 turns query expansion off; Cluster Contrast: 6)"),
            ("eps", 0 < self.eps <= 1, "use a Jaccard distance in (0, 1], e.g. 0.6"),
            ("min_samples", self.min_samples >= 1, "use 1 or more images (Cluster Contrast: 4)"),
        ])
