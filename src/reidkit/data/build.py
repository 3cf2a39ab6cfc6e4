"""Turn the `data` section of a config into a loaded ReidDataset (generating the synthetic set if absent)."""

from __future__ import annotations

from pathlib import Path

from reidkit.data.datasets import ReidDataset, load_dataset, load_market1501
from reidkit.data.synthetic import SyntheticSpec, generate_dataset


def build_dataset(data_config, progress: bool = True) -> ReidDataset:
    """Load `data_config.dataset` from `data_config.root`.

    For "synthetic", the set is generated at `root` first when `root/synthetic.json` is missing, with
    `synthetic_identities`, `synthetic_cameras` and `synthetic_seed`; it is then read by the Market-1501
    loader, since it is written in that layout.
    """
    if data_config.dataset != "synthetic":
        return load_dataset(data_config.dataset, data_config.root)
    root = Path(data_config.root)
    if not (root / "synthetic.json").is_file():
        spec = SyntheticSpec(identities=data_config.synthetic_identities, cameras=data_config.synthetic_cameras)
        generate_dataset(root, spec, seed=data_config.synthetic_seed, progress=progress)
    dataset = load_market1501(root)
    dataset.name = "synthetic"
    return dataset
