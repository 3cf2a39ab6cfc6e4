"""Config loading: defaults, YAML, overrides, and the errors a typo or wrong type must produce."""

import typing

import pytest
import yaml

from reidkit.config import Config, DatasetName, load_config, resolve_protocol, save_config
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
    assert {p.name for p in configs} >= {"demo.yaml", "tiny.yaml", "bot_r50_market.yaml", "agw_r50_market.yaml"}
    for path in configs:
        assert isinstance(load_config(path), Config)
        assert yaml.safe_load(path.read_text())  # not empty


def test_cuhk03_and_protocol_keys(tmp_path):
    defaults = Config()
    data = defaults.data
    assert (data.cuhk03_variant, data.cuhk03_protocol, data.cuhk03_split) == ("labeled", "new", 0)
    assert (defaults.eval.protocol, defaults.eval.single_shot_repeats) == ("auto", 10)
    path = tmp_path / "cuhk03.yaml"
    path.write_text("data: {dataset: cuhk03, root: data/cuhk03, cuhk03_variant: detected, cuhk03_protocol: classic}\n"
                    "eval: {protocol: all_gallery}\n")
    config = load_config(path, ["data.cuhk03_split=19", "eval.single_shot_repeats=3"])
    assert (config.data.dataset, config.data.cuhk03_variant, config.data.cuhk03_protocol, config.data.cuhk03_split) \
        == ("cuhk03", "detected", "classic", 19)
    assert (config.eval.protocol, config.eval.single_shot_repeats) == ("all_gallery", 3)
    # The cuhk03_* keys are read only for data.dataset=cuhk03, so other data sets do not check them.
    assert load_config(None, ["data.cuhk03_split=7"]).data.cuhk03_split == 7


@pytest.mark.parametrize("overrides, message", [
    (["data.cuhk03_protocol=classic", "data.cuhk03_split=20"],
     r"data\.cuhk03_split: 20 is not allowed with data\.cuhk03_protocol=classic; choose one of 0\.\.19$"),
    (["data.cuhk03_protocol=classic", "data.cuhk03_split=-1"], r"data\.cuhk03_split: -1 .* one of 0\.\.19$"),
    (["data.cuhk03_split=1"], r"data\.cuhk03_split: 1 is not allowed with data\.cuhk03_protocol=new.*use 0"),
    (["data.cuhk03_split=1.5"], "data.cuhk03_split: expected int"),
    (["data.cuhk03_protocl=classic"], "did you mean 'cuhk03_protocol'"),
    (["data.cuhk03_variant=hand"], "data.cuhk03_variant: 'hand' is not allowed; choose one of 'labeled', 'detected'"),
    (["eval.protocol=single_shot"], "choose one of 'auto', 'all_gallery', 'single_gallery_shot'"),
    (["eval.single_shot_repeat=3"], "did you mean 'single_shot_repeats'"),
    (["eval.single_shot_repeats=0"], "eval.single_shot_repeats: 0 is not allowed; use 1 or more"),
])
def test_bad_cuhk03_and_protocol_values_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["data.dataset=cuhk03", *overrides])


def test_bad_cuhk03_split_in_a_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {dataset: cuhk03, cuhk03_protocol: classic, cuhk03_split: 20}\n")
    with pytest.raises(ConfigError, match="data.cuhk03_split: 20"):
        load_config(path)
    assert load_config(path, ["data.cuhk03_split=0"]).data.cuhk03_split == 0


@pytest.mark.parametrize("dataset", typing.get_args(DatasetName))
@pytest.mark.parametrize("cuhk03_protocol", ["new", "classic"])
@pytest.mark.parametrize("protocol", ["auto", "all_gallery", "single_gallery_shot"])
def test_resolve_protocol(dataset, cuhk03_protocol, protocol):
    config = load_config(None, [f"data.dataset={dataset}", f"data.cuhk03_protocol={cuhk03_protocol}",
                                f"eval.protocol={protocol}"])
    if protocol != "auto":
        expected = protocol  # an explicit choice always wins
    elif (dataset, cuhk03_protocol) == ("cuhk03", "classic"):
        expected = "single_gallery_shot"
    else:
        expected = "all_gallery"
    assert resolve_protocol(config) == expected


def test_config_differences_skip_keys_added_since_the_checkpoint_while_at_their_default():
    from reidkit.engine.run_folder import config_differences

    saved, current = Config().to_dict(), Config().to_dict()
    del saved["eval"]["protocol"]  # a checkpoint written before eval.protocol existed
    saved["train"]["lr"] = 0.5
    saved["data"]["retired_key"] = 1
    assert config_differences(saved, current) == ["data.retired_key: 1 -> None",
                                                  f"train.lr: 0.5 -> {current['train']['lr']!r}"]
    current["eval"]["protocol"] = "single_gallery_shot"  # a non-default value of the new key does count
    assert "eval.protocol: None -> 'single_gallery_shot'" in config_differences(saved, current)


def test_re_ranking_keys_are_checked():
    config = load_config(None, ["eval.rerank=true", "eval.rerank_k1=10", "eval.rerank_lambda=0.5"])
    assert (config.eval.rerank, config.eval.rerank_k1, config.eval.rerank_k2, config.eval.rerank_lambda) == \
        (True, 10, 6, 0.5)
    with pytest.raises(ConfigError, match="eval.rerank_lambda: 1.5 is not allowed"):
        load_config(None, ["eval.rerank_lambda=1.5"])
    with pytest.raises(ConfigError, match="must be 1 or more"):
        load_config(None, ["eval.rerank_k2=0"])
    with pytest.raises(ConfigError, match="eval.qe_top_k and eval.qe_alpha must be 0 or more"):
        load_config(None, ["eval.query_expansion=alpha", "eval.qe_alpha=-1"])
    with pytest.raises(ConfigError, match="query_expansion"):
        load_config(None, ["eval.query_expansion=median"])
