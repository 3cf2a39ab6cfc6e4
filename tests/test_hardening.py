"""Faults found by an adversarial probe (issue 15), each with the test that failed before: ceilings on
sizes and workers, decompression bombs, weights headers checked against their tensors, and resuming on a
training set that changed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from reidkit.config import load_config
from reidkit.data.images import read_rgb
from reidkit.data.loading import ImageDataset
from reidkit.data.transforms import build_test_transform
from reidkit.errors import ConfigError, DatasetError, ReidkitError

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")


@pytest.mark.parametrize("override, message", [
    ("data.height=100000", r"data.height: 100000 is not allowed; use 16 to 1024 pixels"),
    ("data.width=5000", r"data.width: 5000 is not allowed; use 8 to 1024 pixels"),
    ("data.workers=100000", r"data.workers: 100000 is not allowed; use 0 .* to 128"),
])
def test_sizes_and_workers_have_ceilings(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])


def test_a_decompression_bomb_is_an_unreadable_image_named_or_skipped(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 10,000 pixels > 2 × the limit: PIL refuses it
    with pytest.raises(ValueError, match="decompression bomb.*MAX_IMAGE_PIXELS"):
        read_rgb(path)
    samples = [(str(path), 0, 1)]
    with pytest.raises(DatasetError, match=r"cannot read image .*bomb.png .*decompression bomb"):
        ImageDataset(samples, build_test_transform(32, 16))[0]
    assert ImageDataset(samples, build_test_transform(32, 16), skip_bad_images=True)[0] is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from reidkit.cli import main

    root = tmp_path_factory.mktemp("hardening")
    run = root / "run"
    assert main(["--quiet", "train", "--config", TINY, "--out", str(run), f"data.root={root / 'data'}",
                 "train.epochs=1", "eval.ranked_queries=0"]) == 0
    return run


@pytest.mark.parametrize("header, problem", [
    ({"num_classes": "abc"}, "num_classes 'abc'"),
    ({"num_classes": "-5"}, "num_classes '-5'"),
    ({"num_classes": "10000000"}, "num_classes '10000000' for a classifier of shape (8, 512)"),
    ({"attributes": "{not json"}, "attributes"),
    ({"attributes": json.dumps({"gender": 2})}, "attributes"),
    ({"attributes": json.dumps(["gender"])}, "attributes"),
    ({"pair_head": "true"}, "pair_head 'true'"),
])
def test_a_weights_header_is_checked_against_its_tensors_before_building(trained, tmp_path, header, problem):
    from safetensors.torch import save_file

    from reidkit.engine.checkpoint import load_weights
    from reidkit.engine.runs import load_run_config, load_run_model

    state, metadata = load_weights(trained / "model.safetensors")
    edited = tmp_path / "edited.safetensors"
    save_file(state, str(edited), metadata={**metadata, **header})
    with pytest.raises(ReidkitError, match=re.escape(f"damaged header ({problem}")):
        load_run_model(trained, load_run_config(trained), edited)
    assert load_run_model(trained, load_run_config(trained)).num_classes == 8  # the real header loads


def test_resuming_after_the_training_set_changed_is_refused_without_force(tmp_path, capsys):
    from reidkit.cli import main

    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["--quiet", "train", "--config", TINY, "--out", str(run), f"data.root={data}", "train.epochs=1",
                 "eval.ranked_queries=0"]) == 0
    state = torch.load(run / "checkpoints" / "epoch_001.state.pt", weights_only=True)
    assert len(state["train_set"]) == 64  # a SHA-256 of names, identities and cameras
    assert main(["--quiet", "train", "--resume", str(run)]) == 0  # the same set: resumes (nothing left to train)
    victim = next(path for path in sorted((data / "bounding_box_train").glob("*.jpg")) if "_c1s" in path.name)
    victim.rename(victim.with_name(victim.name.replace("_c1s", "_c2s")))  # another camera now
    capsys.readouterr()
    assert main(["--quiet", "train", "--resume", str(run)]) == 2
    assert "the training set differs from the one the checkpoint was trained on" in capsys.readouterr().err
    assert main(["--quiet", "train", "--resume", str(run), "--force"]) == 0  # the user's call
    other = next(path for path in sorted((data / "bounding_box_train").glob("*.jpg")) if path != victim)
    other.rename(other.with_name("0999" + other.name[4:]))  # a ninth identity: the classifier cannot fit
    assert main(["--quiet", "train", "--resume", str(run), "--force"]) == 2
    assert "does not fit this model" in capsys.readouterr().err
