"""Turn the data sets a config names into loaded ReidDatasets (generating a synthetic set if absent): the one
of `data`, the training sets of `data.train_sets` joined into one `TrainingSet`, the test sets of
`eval.test_sets`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from reidkit.config.rules import VIDEO_DATASETS
from reidkit.config.sections import Config, DataConfig, DataSource, set_names
from reidkit.data.combined import TrainingSet, combine_train_sets
from reidkit.data.cuhk03 import load_cuhk03
from reidkit.data.datasets import ReidDataset, load_dataset, load_market1501
from reidkit.data.synthetic import SyntheticSpec, generate_dataset
from reidkit.data.vehicles import load_vehicleid, load_veri776
from reidkit.data.video_build import build_video_dataset
from reidkit.errors import DatasetError


def build_dataset(data_config: DataSource, progress: bool = True) -> ReidDataset:
    """Load `data_config.dataset` from `data_config.root` (a `DataSource`: `DataConfig` or a listed set).

    For "synthetic", the set is generated at `root` first when `root/synthetic.json` is missing, with
    `synthetic_identities`, `synthetic_cameras`, `synthetic_seed` and `synthetic_domain`; it is then read by
    the Market-1501 loader, since it is written in that layout. A set generated with other identities,
    cameras, seed or domain is refused rather than silently reused. For "cuhk03", `cuhk03_variant`,
    `cuhk03_protocol` and `cuhk03_split` pick the boxes, protocol and split; for "vehicleid",
    `vehicleid_test_size` the test list. With `holdout_identities` > 0 (a `DataConfig`'s, not a listed
    set's), that many training identities move to `dataset.holdout` (`hold_out_identities`).
    """
    return hold_out_identities(_load(data_config, progress), getattr(data_config, "holdout_identities", 0))


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
    if data_config.dataset in VIDEO_DATASETS:
        return build_video_dataset(data_config, progress)
    if data_config.dataset == "cuhk03":
        return load_cuhk03(data_config.root, variant=data_config.cuhk03_variant,
                           protocol=data_config.cuhk03_protocol, split=data_config.cuhk03_split)
    if data_config.dataset == "veri776":
        return load_veri776(data_config.root)
    if data_config.dataset == "vehicleid":
        return load_vehicleid(data_config.root, data_config.vehicleid_test_size)
    if data_config.dataset != "synthetic":
        return load_dataset(data_config.dataset, data_config.root)
    root = Path(data_config.root)
    wanted = {"identities": data_config.synthetic_identities, "cameras": data_config.synthetic_cameras,
              "seed": data_config.synthetic_seed, "domain": data_config.synthetic_domain}
    if not (root / "synthetic.json").is_file():
        spec = SyntheticSpec(identities=data_config.synthetic_identities, cameras=data_config.synthetic_cameras,
                             domain=data_config.synthetic_domain)
        generate_dataset(root, spec, seed=data_config.synthetic_seed, progress=progress)
    written = json.loads((root / "synthetic.json").read_text())
    found = {"identities": written["spec"]["identities"], "cameras": written["spec"]["cameras"],
             "seed": written["seed"], "domain": written["spec"].get("domain", "a")}
    if found != wanted:
        raise DatasetError(f"{root} holds a synthetic set made with {found}, but the config asks for {wanted}; "
                           "point data.root at another folder or delete this one to regenerate it")
    dataset = load_market1501(root)
    dataset.name = "synthetic"
    return dataset


def train_sources(data: DataConfig) -> tuple[list[DataSource], list[str]]:
    """The training sets of a run and their labels: `data.train_sets`, or the set of `data` itself."""
    return (data.train_sets, set_names(data.train_sets, "data.train_sets")) if data.train_sets else \
        ([data], [data.name or data.dataset])


def test_sources(config: Config) -> tuple[list[DataSource], list[str]]:
    """The query/gallery sets a run is evaluated on and their labels: `eval.test_sets`, or the set of `data`."""
    tests = config.eval.test_sets
    return (tests, set_names(tests, "eval.test_sets")) if tests else ([config.data], [config.data.name or
                                                                                      config.data.dataset])


class DatasetLoader:
    """Loads each distinct data set once (a set listed for training and testing is read once)."""

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress
        self.loaded: dict[tuple, ReidDataset] = {}
        self.used: dict[str, ReidDataset] = {}  # every set handed out, by label, in order

    def __call__(self, source: DataSource, name: str) -> ReidDataset:
        key = tuple(getattr(source, f.name) for f in dataclasses.fields(DataSource) if f.name != "name")
        if key not in self.loaded:
            self.loaded[key] = build_dataset(source, self.progress)
        self.used[name] = dataclasses.replace(self.loaded[key], name=name)
        return self.used[name]


def build_training_set(data: DataConfig, load: DatasetLoader) -> TrainingSet:
    """The training set of `data`: the train splits of `data.train_sets` (or of `data`) joined, identities and
    cameras offset, with their query and gallery identities when `data.combineall`."""
    sources, names = train_sources(data)
    return combine_train_sets([load(source, name) for source, name in zip(sources, names)], names, data.combineall)


def build_test_sets(config: Config, load: DatasetLoader) -> list[ReidDataset]:
    """The query/gallery sets of `eval.test_sets` (or of `data`), each named by its label."""
    return [load(source, name) for source, name in zip(*test_sources(config))]
