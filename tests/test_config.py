"""Config loading: defaults, YAML, overrides, and the errors a typo or wrong type must produce."""

import pytest
import yaml

from reidkit.config import Config, load_config, save_config
from reidkit.errors import ConfigError


def test_defaults_are_the_bot_recipe():
    config = Config()
    assert (config.model.backbone, config.model.last_stride) == ("resnet50", 1)
    assert (config.data.p, config.data.k, config.data.height, config.data.width) == (16, 4, 256, 128)
    assert config.loss.id.label_smoothing == 0.1 and config.loss.trihard.margin == 0.3
    assert (config.train.lr, config.train.warmup_epochs, config.train.milestones) == (3.5e-4, 10, [40, 70])


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {backbone: resnet18}\ntrain: {epochs: 5}\n")
    config = load_config(path, ["train.epochs=7", "loss.trihard.margin=null", "eval.flip=true",
                                "train.lr=1", "data.dataset=synthetic", "train.milestones=[2, 4]"])
    assert config.model.backbone == "resnet18"
    assert config.train.epochs == 7
    assert config.loss.trihard.margin is None
    assert config.eval.flip is True
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.data.dataset == "synthetic"
    assert config.train.milestones == [2, 4]


def test_round_trip(tmp_path):
    config = load_config(None, ["model.pooling=gem", "loss.id.weight=0.5"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "did you mean 'epochs'"),
    ("trian.epochs=3", "did you mean 'train'"),
    ("train.epochs=3.5", "expected int"),
    ("train.epochs=abc", "expected int"),
    ("eval.flip=1", "expected bool"),
    ("model.backbone=resnet9", "choose one of"),
    ("loss.trihard.metric=manhattan", "choose one of"),
    ("train=3", "names a section"),
    ("train.epochs", "section.key=value"),
    ("train.milestones=5", "expected a list"),
])
def test_bad_overrides_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  backbone: resnet18\n  lastt_stride: 1\n")
    with pytest.raises(ConfigError, match="model.lastt_stride.*did you mean 'last_stride'"):
        load_config(path)
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))
    assert {p.name for p in configs} >= {"demo.yaml", "tiny.yaml", "bot_r50_market.yaml"}
    for path in configs:
        assert isinstance(load_config(path), Config)
        assert yaml.safe_load(path.read_text())  # not empty
