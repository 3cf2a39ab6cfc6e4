"""Turn the `data` section of a config into a loaded ReidDataset (generating the synthetic set if absent)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from reidkit.data.cuhk03 import load_cuhk03
from reidkit.data.datasets import ReidDataset, load_dataset, load_market1501
from reidkit.data.synthetic import SyntheticSpec, generate_dataset
from reidkit.errors import DatasetError


def build_dataset(data_config, progress: bool = True) -> ReidDataset:
    """Load `data_config.dataset` from `data_config.root`.

    For "synthetic", the set is generated at `root` first when `root/synthetic.json` is missing, with
    `synthetic_identities`, `synthetic_cameras` and `synthetic_seed`; it is then read by the Market-1501
    loader, since it is written in that layout. A set generated with other identities, cameras or seed
    is refused rather than silently reused. For "cuhk03", `cuhk03_variant`, `cuhk03_protocol` and
    `cuhk03_split` pick the boxes, protocol and split. With `holdout_identities` > 0, that many training
    identities move to `dataset.holdout` (`hold_out_identities`).
    """
    return hold_out_identities(_load(data_config, progress), data_config.holdout_identities)


def hold_out_identities(dataset: ReidDataset, count: int) -> ReidDataset:
    """`dataset` with its `count` training identities of highest pid moved from `train` to `holdout` (raw
    pids); the remaining labels stay 0..C−count−1, unchanged.

    Raises:
        DatasetError: fewer than 2 identities would remain for training.
    """
    if count == 0:
        return dataset
    kept = dataset.num_train_pids - count
    if kept < 2:
        raise DatasetError(f"data.holdout_identities={count} leaves {kept} of the {dataset.num_train_pids} training "
                           "identities for training; hold out fewer (2 or more must remain)")
    holdout = [(path, dataset.train_raw_pids[label], camid) for path, label, camid in dataset.train if label >= kept]
    return dataclasses.replace(dataset, train=[s for s in dataset.train if s[1] < kept],
                               train_raw_pids=dataset.train_raw_pids[:kept], holdout=holdout)


def _load(data_config, progress: bool) -> ReidDataset:
    if data_config.dataset == "cuhk03":
        return load_cuhk03(data_config.root, variant=data_config.cuhk03_variant,
                           protocol=data_config.cuhk03_protocol, split=data_config.cuhk03_split)
    if data_config.dataset != "synthetic":
        return load_dataset(data_config.dataset, data_config.root)
    root = Path(data_config.root)
    wanted = {"identities": data_config.synthetic_identities, "cameras": data_config.synthetic_cameras,
              "seed": data_config.synthetic_seed}
    if not (root / "synthetic.json").is_file():
        spec = SyntheticSpec(identities=data_config.synthetic_identities, cameras=data_config.synthetic_cameras)
        generate_dataset(root, spec, seed=data_config.synthetic_seed, progress=progress)
    written = json.loads((root / "synthetic.json").read_text())
    found = {"identities": written["spec"]["identities"], "cameras": written["spec"]["cameras"],
             "seed": written["seed"]}
    if found != wanted:
        raise DatasetError(f"{root} holds a synthetic set made with {found}, but the config asks for {wanted}; "
                           "point data.root at another folder or delete this one to regenerate it")
    dataset = load_market1501(root)
    dataset.name = "synthetic"
    return dataset
