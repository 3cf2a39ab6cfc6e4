"""Torchreid 0.2.5's video data set parsers and ranking, loaded from its source files without importing its
package (whose __init__ needs gdown, tensorboard and more): the two modules they import are stubbed, and the
stubs are removed again when the fixture ends."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import pytest


@functools.lru_cache(maxsize=1)
def _installed_root() -> Path | None:
    spec = importlib.util.find_spec("torchreid")  # looked up once, before any stub stands in for the package
    return Path(spec.submodule_search_locations[0]) / "reid" if spec is not None else None


def torchreid_root() -> Path:
    if _installed_root() is None:
        pytest.skip("torchreid is not installed (pip install --no-deps torchreid==0.2.5)")
    return _installed_root()


class _VideoDataset:
    """What the parsers need of Torchreid's VideoDataset: the three lists they build, and two checks."""

    def __init__(self, train, query, gallery, **kwargs):
        self.train, self.query, self.gallery = train, query, gallery

    def download_dataset(self, dataset_dir, dataset_url):
        assert os.path.isdir(dataset_dir), dataset_dir

    def check_before_run(self, required_files):
        for path in required_files:
            assert os.path.exists(path), path


def _read_json(path):
    with open(path) as handle:
        return json.load(handle)


def _write_json(values, path):
    with open(path, "w") as handle:
        json.dump(values, handle)


def load_torchreid_module(monkeypatch, relative: str):
    """The Torchreid module at `reid/<relative>` with `torchreid.reid.data.datasets.dataset` and
    `torchreid.reid.utils` stubbed for the duration of the test."""
    root = torchreid_root()
    dataset_module = types.ModuleType("torchreid.reid.data.datasets.dataset")
    dataset_module.VideoDataset = _VideoDataset
    utils = types.ModuleType("torchreid.reid.utils")
    utils.read_json, utils.write_json = _read_json, _write_json
    for name in ("torchreid", "torchreid.reid", "torchreid.reid.data", "torchreid.reid.data.datasets",
                 "torchreid.reid.metrics"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "torchreid.reid.data.datasets.dataset", dataset_module)
    monkeypatch.setitem(sys.modules, "torchreid.reid.utils", utils)
    spec = importlib.util.spec_from_file_location(f"torchreid_{Path(relative).stem}", root / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
