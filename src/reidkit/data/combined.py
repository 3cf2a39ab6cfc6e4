"""Several training sets in one run: their train splits joined into one set of labels, identities and cameras
offset so that they never collide, optionally with each set's query and gallery identities ("combine all",
as Torchreid's `combineall` does).

Set i's labels follow those of sets 0..i−1 (offset = their identities so far) and so do its cameras (offset
= their cameras so far), so identity 5 of Market-1501 and identity 5 of MSMT17 are two classes and camera 1
of each two cameras. With `combineall`, a set's query and gallery identities (pid 0 distractors and −1 junk
left out) become further classes of that set, after its train identities, whatever their raw numbers: the
test identities of the usual splits are other people than the train ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reidkit.data.attributes import attribute_table
from reidkit.data.datasets import ReidDataset, Sample, relabel
from reidkit.errors import DatasetError


@dataclass
class TrainPart:
    """One data set's share of a `TrainingSet`: labels `first_label .. first_label + len(raw_pids) − 1`."""

    name: str
    first_label: int
    first_camid: int
    raw_pids: list[int]  # raw pid of each of its labels, in label order (train identities first)
    images: int
    cameras: int


@dataclass
class TrainingSet:
    """The training samples `(path, label, camid)` of one or several data sets, labels 0..C−1 over all."""

    name: str
    train: list[Sample]
    parts: list[TrainPart]

    @property
    def num_train_pids(self) -> int:
        """Number of training identities C over all sets (classifier width)."""
        return sum(len(part.raw_pids) for part in self.parts)

    def summary(self) -> str:
        """An aligned table: each set's identities, images, cameras and label/camera offsets, then the union."""
        rows = [("training set", "ids", "images", "cameras", "first label", "first camera")]
        rows += [(part.name, str(len(part.raw_pids)), str(part.images), str(part.cameras), str(part.first_label),
                  str(part.first_camid)) for part in self.parts]
        rows.append(("union", str(self.num_train_pids), str(len(self.train)),
                     str(len({camid for _, _, camid in self.train})), "", ""))
        widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
        return "\n".join(" | ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])])
                         for row in rows)

    def attribute_table(self, attributes: list[dict[int, dict[str, int]] | None]) -> torch.Tensor:
        """Class indices `[C, A]` of every label: each set's rows from its own attributes (same order as parts).

        Raises:
            DatasetError: a set without attributes, or sets whose attributes have other names.
        """
        names = None
        for part, table in zip(self.parts, attributes):
            if not table:
                raise DatasetError(f"training set {part.name} has no attributes, but loss.attribute needs them for "
                                   "every identity; give it an attributes file (attributes: in its data.train_sets "
                                   "entry) or set loss.attribute.weight=0")
            found = list(next(iter(table.values())))
            if names is not None and found != names:
                raise DatasetError(f"training set {part.name} has attributes {found}, the first set {names}; the "
                                   "attribute heads need the same attributes in every training set")
            names = found
        return torch.cat([attribute_table(table, part.raw_pids) for part, table in zip(self.parts, attributes)])


def combine_train_sets(datasets: list[ReidDataset], names: list[str], combineall: bool = False) -> TrainingSet:
    """Join the train splits of `datasets` (named `names`) into one `TrainingSet`, identities and cameras offset.

    Args:
        combineall: also train on each set's query and gallery identities (pid > 0).

    Raises:
        DatasetError: a set with no training image left.
    """
    samples: list[Sample] = []
    parts: list[TrainPart] = []
    first_label = first_camid = 0
    for dataset, name in zip(datasets, names):
        own, raw_pids = _own_samples(dataset, combineall)
        if not own:
            raise DatasetError(f"training set {name} ({dataset.root}) has no training images")
        cameras = max(camid for _, _, camid in own) + 1
        samples += [(path, first_label + label, first_camid + camid) for path, label, camid in own]
        parts.append(TrainPart(name, first_label, first_camid, raw_pids, len(own),
                               len({camid for _, _, camid in own})))
        first_label += len(raw_pids)
        first_camid += cameras
    return TrainingSet("+".join(names), samples, parts)


def _own_samples(dataset: ReidDataset, combineall: bool) -> tuple[list[Sample], list[int]]:
    """One set's training samples with labels 0..C_i−1 and the raw pid of each label; with `combineall`, its
    query and gallery identities follow as labels C_train.. (relabelled together, in raw-pid order)."""
    if not combineall:
        return list(dataset.train), list(dataset.train_raw_pids)
    test, test_raw_pids = relabel([s for s in dataset.query + dataset.gallery if s[1] > 0])
    offset = dataset.num_train_pids
    return ([*dataset.train, *((path, offset + label, camid) for path, label, camid in test)],
            [*dataset.train_raw_pids, *test_raw_pids])
