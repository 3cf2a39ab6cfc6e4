"""Shared by the recipe tests: train a config file from the command line on a tiny synthetic set."""

from pathlib import Path

from _cli import reidkit

# 16 identities × 3 cameras at 64×32, P×K = 4×4, one CPU epoch from random init, evaluated at its end
TINY_RUN = ["data.dataset=synthetic", "data.synthetic_identities=16", "data.synthetic_cameras=3", "data.height=64",
            "data.width=32", "data.p=4", "data.k=4", "data.workers=0", "model.weights=", "train.epochs=1",
            "train.warmup_epochs=0", "train.device=cpu", "train.eval_every=1"]


def train_recipe(config: Path, tmp_path: Path, *overrides: str) -> Path:
    """`reidkit --quiet train --config CONFIG` with `TINY_RUN` and `overrides` into `tmp_path/run`, which it
    returns; asserts the command succeeded."""
    run = tmp_path / "run"
    result = reidkit("train", "--config", str(config), "--out", str(run), f"data.root={tmp_path / 'data'}",
                     *TINY_RUN, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return run
