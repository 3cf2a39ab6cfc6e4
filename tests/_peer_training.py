"""The peers' own training code on the CPU, for tests/test_recipe_parity.py: fast-reid 1.4.0 and Torchreid 0.2.5
as installed (`pip install --no-deps`), with the import shims they need on Python >= 3.10 / torch 2 / NumPy 2.

fast-reid: `torch._six` (gone from torch; only `string_classes` is read), `collections.Mapping` (now
`collections.abc.Mapping`), `np.bool` (gone from NumPy 1.24 to 1.26); its engine package also imports scikit-learn and
tabulate for evaluation code that these tests never run: empty stand-ins exist only while it is imported.
Torchreid's package imports OpenCV and gdown for data code never run here, stood in for the same way.
`src/` never imports either peer.
"""

from __future__ import annotations

import collections
import collections.abc
import contextlib
import importlib.machinery
import importlib.util
import sys
import types

import numpy as np
import pytest


@contextlib.contextmanager
def absent_modules(*names: str):
    """Empty modules under `names` (those not installed; "module:name" also defines `name` in it, as None)
    during an import, removed afterwards so that no other code finds them."""
    wanted = dict(name.partition(":")[::2] for name in names)
    added = [name for name in wanted if importlib.util.find_spec(name.split(".")[0]) is None]
    for name in added:
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__spec__ = importlib.machinery.ModuleSpec(name, None)
        if wanted[name]:
            setattr(sys.modules[name], wanted[name], None)
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, sys.modules[name])
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def import_fastreid():
    """fast-reid's model builder, solver, config and engine (train loop and hooks), shims in place."""
    pytest.importorskip("fastreid", reason="pip install --no-deps fastreid==1.4.0 (and yacs, termcolor)")
    if "torch._six" not in sys.modules:
        six = types.ModuleType("torch._six")
        six.string_classes = (str, bytes)
        sys.modules["torch._six"] = six
    if not hasattr(collections, "Mapping"):
        collections.Mapping = collections.abc.Mapping
    if not hasattr(np, "bool"):  # NumPy 1.24-1.26; NumPy 2 has it again, as np.bool_
        np.bool = np.bool_
    with absent_modules("sklearn", "sklearn.metrics", "tabulate:tabulate"):
        from fastreid.config import get_cfg
        from fastreid.engine import hooks, train_loop
        from fastreid.modeling.meta_arch import build_model
        from fastreid.solver import build_lr_scheduler, build_optimizer
    return types.SimpleNamespace(get_cfg=get_cfg, hooks=hooks, train_loop=train_loop, build_model=build_model,
                                 build_optimizer=build_optimizer, build_lr_scheduler=build_lr_scheduler)


def import_torchreid():
    """Torchreid's models, optimiser and scheduler builders, losses and image engines."""
    if importlib.util.find_spec("torchreid") is None:  # importorskip would import it without the stand-ins
        pytest.skip("torchreid is not installed (pip install --no-deps torchreid==0.2.5)")
    with absent_modules("cv2", "gdown"):
        from torchreid.reid import engine, models, optim
    return types.SimpleNamespace(engine=engine, models=models, optim=optim)
