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
    ("model.backbone=resnet9", "use one of resnet18, .*timm/<name>"),
    ("loss.trihard.metric=manhattan", "choose one of"),
    ("train=3", "names a section"),
    ("train.epochs", "section.key=value"),
    ("train.milestones=5", "expected a list"),
])
def test_bad_overrides_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize("raw", ["1_0", "0x10", "0o7", "0b11", "1:30", "\u0967\u0966", "1" * 19])
def test_numbers_are_plain_ascii_decimals_in_overrides_and_files(raw, tmp_path):
    """YAML 1.1 and Python literals read 1_0 as 10, 0x10 as 16, 0o7 as 7, 0b11 as 3, 1:30 as 90; other scripts'
    digits pass str.isdigit; 19 digits are past any count (a float): each is refused by the key's type, in an override and in a file."""
    with pytest.raises(ConfigError, match="train.epochs: expected int, got (str|float)"):
        load_config(None, [f"train.epochs={raw}"])
    path = tmp_path / "c.yaml"
    path.write_text(f"train: {{epochs: {raw}}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="train.epochs: expected int, got (str|float)"):
        load_config(path)


def test_plain_numbers_read_alike_in_overrides_and_files(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 010, lr: 1e-4, weight_decay: +5.0E-4}\neval: {flip: True}\n")
    overrides = ["train.epochs=010", "train.lr=1e-4", "train.weight_decay=+5.0E-4", "eval.flip=True"]
    for config in (load_config(path), load_config(None, overrides)):
        assert (config.train.epochs, config.train.lr, config.train.weight_decay, config.eval.flip) == \
            (10, 1e-4, 5e-4, True)
    for word in ("yes", "on", "off"):  # YAML 1.1 booleans: strings here, refused by a bool key
        with pytest.raises(ConfigError, match="eval.flip: expected bool, got str"):
            load_config(None, [f"eval.flip={word}"])
    with pytest.raises(ConfigError, match="train.lr: .*finite"):
        load_config(None, ["train.lr=.inf"])


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
@pytest.mark.parametrize("protocol", ["auto", "all_gallery", "single_gallery_shot", "vehicleid"])
def test_resolve_protocol(dataset, cuhk03_protocol, protocol):
    config = load_config(None, [f"data.dataset={dataset}", f"data.cuhk03_protocol={cuhk03_protocol}",
                                f"eval.protocol={protocol}"])
    if protocol != "auto":
        expected = protocol  # an explicit choice always wins
    elif (dataset, cuhk03_protocol) == ("cuhk03", "classic"):
        expected = "single_gallery_shot"
    elif dataset == "vehicleid":
        expected = "vehicleid"
    else:
        expected = "all_gallery"
    assert resolve_protocol(config) == expected


def test_config_differences_skip_keys_added_since_the_checkpoint_while_at_their_default():
    from reidkit.config.differences import config_differences

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


# Out-of-range values are refused at load, naming the key, the value and the allowed range, before any work.
@pytest.mark.parametrize("overrides, message", [
    (["train.epochs=0"], r"train\.epochs: 0 is not allowed; use 1 or more"),
    (["train.lr=0"], r"train\.lr: 0\.0 is not allowed; use a number > 0"),
    (["train.lr=-1e-3"], r"train\.lr: -0\.001 is not allowed"),
    (["train.weight_decay=-1e-4"], r"train\.weight_decay: -0\.0001 is not allowed; use a number in \[0, 1\]"),
    (["train.momentum=-0.1"], r"train\.momentum: -0\.1 is not allowed; use a value in \[0, 1\)"),
    (["train.momentum=1"], r"train\.momentum: 1\.0 is not allowed"),
    (["train.warmup_epochs=-1"], r"train\.warmup_epochs: -1 is not allowed; use 0 or more"),
    (["train.warmup_factor=0"], r"train\.warmup_factor: 0\.0 is not allowed; use a value in \(0, 1\]"),
    (["train.warmup_iters=2000"], r"train\.warmup_iters: 2000 is not allowed; warm up by epochs or by steps, "
                                  r"not both: set train\.warmup_epochs=0 \(it is 10\)"),
    (["train.warmup_iters=-1", "train.warmup_epochs=0"], r"train\.warmup_iters: -1 is not allowed; use 0"),
    (["train.nesterov=true"], r"train\.nesterov: True is not allowed; Nesterov momentum needs train\.optimizer=sgd"),
    (["train.optimizer=sgd", "train.momentum=0", "train.nesterov=true"], r"and train\.momentum > 0"),
    (["train.adam_beta2=1"], r"train\.adam_beta2: 1\.0 is not allowed; use a value in \[0, 1\)"),
    (["train.adam_eps=0"], r"train\.adam_eps: 0\.0 is not allowed; use a small number > 0"),
    (["train.bias_lr_factor=-2"], r"train\.bias_lr_factor: -2\.0 is not allowed"),
    (["train.weight_decay_norm=2"], r"train\.weight_decay_norm: 2\.0 is not allowed; use null"),
    (["train.heads_lr_factor=0"], r"train\.heads_lr_factor: 0\.0 is not allowed"),
    (["train.freeze_iters=-1"], r"train\.freeze_iters: -1 is not allowed; use 0 \(off\) or more steps"),
    (["train.stepsize=0"], r"train\.stepsize: 0 is not allowed; use 1 or more epochs"),
    (["train.epochs=5", "train.delay_epochs=5"], r"train\.delay_epochs: 5 is not allowed; use 0 \(none\) or fewer"),
    (["train.eta_min_lr=1"], r"train\.eta_min_lr: 1\.0 is not allowed; use a number in \[0, train\.lr\]"),
    (["train.warmup_method=cos"], r"train\.warmup_method: 'cos' is not allowed; choose one of 'linear', 'constant', "
                                  r"'exp'"),
    (["train.warmup_factor=1.5"], r"train\.warmup_factor: 1\.5 is not allowed"),
    (["train.milestones=[70, 40]"], r"train\.milestones: \[70, 40\] is not allowed; use increasing epochs >= 1"),
    (["train.milestones=[40, 40]"], r"train\.milestones: \[40, 40\] is not allowed"),
    (["train.milestones=[0, 40]"], r"train\.milestones: \[0, 40\] is not allowed"),
    (["train.gamma=0"], r"train\.gamma: 0\.0 is not allowed; use a number > 0"),
    (["train.gamma=-0.1"], r"train\.gamma: -0\.1 is not allowed"),
    (["train.device=gpu"], r"train\.device: 'gpu' is not allowed; use auto, cpu, cuda or cuda:N"),
    (["train.device=cuda:x"], r"train\.device: 'cuda:x' is not allowed"),
    (["train.seed=-1"], r"train\.seed: -1 is not allowed"),
    (["train.eval_every=0"], r"train\.eval_every: 0 is not allowed; use 1 or more"),
    (["train.checkpoint_every=0"], r"train\.checkpoint_every: 0 is not allowed; use 1 or more"),
    (["train.checkpoint_every_steps=-1"], r"train\.checkpoint_every_steps: -1 is not allowed; use 0"),
    (["train.keep_checkpoints=0"], r"train\.keep_checkpoints: 0 is not allowed; use 1 or more"),
    (["train.log_every=0"], r"train\.log_every: 0 is not allowed; use 1 or more"),
    (["data.height=15"], r"data\.height: 15 is not allowed; use 16 to 1024 pixels"),
    (["data.width=0"], r"data\.width: 0 is not allowed; use 8 to 1024 pixels"),
    (["data.p=1"], r"data\.p: 1 is not allowed; use 2 or more"),
    (["data.k=0"], r"data\.k: 0 is not allowed; use 1 or more"),
    (["data.workers=-1"], r"data\.workers: -1 is not allowed; use 0 \(load in the main process\) to 128"),
    (["data.flip_prob=1.5"], r"data\.flip_prob: 1\.5 is not allowed; use a probability in \[0, 1\]"),
    (["data.flip_prob=-0.5"], r"data\.flip_prob: -0\.5 is not allowed"),
    (["data.pad=-1"], r"data\.pad: -1 is not allowed; use 0 or more"),
    (["data.erasing_prob=2"], r"data\.erasing_prob: 2\.0 is not allowed; use a probability in \[0, 1\]"),
    (["data.dataset=synthetic", "data.synthetic_identities=3"],
     r"data\.synthetic_identities: 3 is not allowed; identities must be in 4\.\.9999"),
    (["data.dataset=synthetic", "data.synthetic_identities=10000"], r"data\.synthetic_identities: 10000"),
    (["data.dataset=synthetic", "data.synthetic_cameras=1"],
     r"data\.synthetic_cameras: 1 is not allowed; cameras must be in 2\.\.9"),
    (["data.dataset=synthetic", "data.synthetic_cameras=10"], r"data\.synthetic_cameras: 10 is not allowed"),
    (["data.dataset=synthetic", "data.synthetic_seed=-1"], r"data\.synthetic_seed: -1 is not allowed"),
    (["model.last_stride=3"], r"model\.last_stride: 3 is not allowed; use 1 or 2"),
    (["eval.batch_size=0"], r"eval\.batch_size: 0 is not allowed; use 1 or more"),
    (["eval.max_rank=0"], r"eval\.max_rank: 0 is not allowed; use 1 or more"),
    (["eval.ranked_queries=-1"], r"eval\.ranked_queries: -1 is not allowed; use 0"),
    (["eval.verify_topk=-1"], r"eval\.verify_topk: -1 is not allowed; use 0"),
    (["eval.verify_topk=5"], r"eval\.verify_topk=5 needs a pair head.*loss\.verification\.weight > 0"),
    (["eval.single_shot_repeats=0"], r"eval\.single_shot_repeats: 0 is not allowed"),
    (["eval.rerank_k1=0"], r"eval\.rerank_k1 and eval\.rerank_k2 must be 1 or more"),
    (["eval.qe_top_k=-1"], r"eval\.qe_top_k and eval\.qe_alpha must be 0 or more"),
    (["eval.open_set_fpr=0"], r"eval\.open_set_fpr: 0\.0 is not allowed; use a false positive rate in \(0, 1\)"),
    (["eval.open_set_fpr=1"], r"eval\.open_set_fpr: 1\.0 is not allowed"),
    (["eval.open_set_fpr=-1e-3"], r"eval\.open_set_fpr: -0\.001 is not allowed"),
    (["eval.open_set_pairs=val"], r"open_set_pairs"),
    (["eval.open_set_pairs=holdout"], r"eval\.open_set_pairs=holdout needs.*data\.holdout_identities=0"),
    (["eval.open_set_pairs=holdout", "data.holdout_identities=1"], r"data\.holdout_identities to 2 or more"),
    (["data.holdout_identities=-1"], r"data\.holdout_identities: -1 is not allowed; use 0"),
    (["loss.id.weight=-1"], r"loss\.id\.weight: -1\.0 is not allowed; use 0 or more \(0 disables the term\)"),
    (["loss.center.weight=-0.001"], r"loss\.center\.weight: -0\.001 is not allowed"),
    (["loss.id.label_smoothing=1"], r"loss\.id\.label_smoothing: 1\.0 is not allowed; use a value in \[0, 1\)"),
    (["loss.id.label_smoothing=-0.1"], r"loss\.id\.label_smoothing: -0\.1 is not allowed"),
    (["loss.trihard.margin=-0.3"], r"loss\.trihard\.margin: -0\.3 is not allowed; use a number >= 0, or null"),
    (["loss.adaptive_triplet.weight=1", "loss.adaptive_triplet.margin=-1"], r"loss\.adaptive_triplet\.margin: -1"),
    (["loss.triplet.weight=1", "loss.triplet.margin=-1"], r"loss\.triplet\.margin: -1\.0 is not allowed"),
    (["loss.contrastive.weight=1", "loss.contrastive.margin=-1"], r"loss\.contrastive\.margin: -1\.0 is not allowed"),
    (["loss.improved_triplet.weight=1", "loss.improved_triplet.margin=-1"], r"loss\.improved_triplet\.margin: -1"),
    (["loss.quadruplet.weight=1", "loss.quadruplet.alpha=-1"], r"loss\.quadruplet\.alpha: -1\.0 is not allowed"),
    (["loss.quadruplet.weight=1", "loss.quadruplet.beta=-1"], r"loss\.quadruplet\.beta: -1\.0 is not allowed"),
    (["loss.lifted.weight=1", "loss.lifted.margin=-1"], r"loss\.lifted\.margin: -1\.0 is not allowed"),
    (["loss.hap2s.weight=1", "loss.hap2s.margin=-1"], r"loss\.hap2s\.margin: -1\.0 is not allowed"),
    (["loss.hap2s.weight=1", "loss.hap2s.sigma=0"], r"loss\.hap2s\.sigma: 0\.0 is not allowed; use a number > 0"),
    (["loss.circle_pair.weight=1", "loss.circle_pair.margin=1"], r"loss\.circle_pair\.margin: 1\.0 is not allowed"),
    (["loss.circle_pair.weight=1", "loss.circle_pair.gamma=0"], r"loss\.circle_pair\.gamma: 0\.0 is not allowed"),
    (["loss.norm_softmax.weight=1", "loss.norm_softmax.temperature=0"],
     r"loss\.norm_softmax\.temperature: 0\.0 is not allowed; use a number > 0"),
    (["loss.cosface.weight=1", "loss.cosface.scale=0"], r"loss\.cosface\.scale: 0\.0 is not allowed; use a number > 0"),
    (["loss.cosface.weight=1", "loss.cosface.margin=-0.1"], r"loss\.cosface\.margin: -0\.1 is not allowed; use a "
                                                            r"value in \[0, 2\]"),
    (["loss.arcface.weight=1", "loss.arcface.scale=-30"], r"loss\.arcface\.scale: -30\.0 is not allowed"),
    (["loss.arcface.weight=1", "loss.arcface.margin_rad=2"], r"loss\.arcface\.margin_rad: 2\.0 is not allowed; use a "
                                                             r"value in \[0, pi/2\]"),
    (["loss.circle.weight=1", "loss.circle.scale=0"], r"loss\.circle\.scale: 0\.0 is not allowed"),
    (["loss.circle.weight=1", "loss.circle.margin=-0.25"], r"loss\.circle\.margin: -0\.25 is not allowed"),
])
def test_out_of_range_values_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_values_at_the_edges_of_their_ranges_load():
    config = load_config(None, [
        "train.epochs=1", "train.warmup_epochs=0", "train.warmup_factor=1", "train.momentum=0", "train.weight_decay=0",
        "train.milestones=[]", "train.gamma=1", "train.checkpoint_every_steps=0", "train.keep_checkpoints=1",
        "train.adam_beta1=0", "train.bias_lr_factor=0", "train.weight_decay_bias=0", "train.weight_decay_norm=null",
        "train.eta_min_lr=3.5e-4", "train.delay_epochs=0", "train.freeze_iters=0", "train.stepsize=1",
        "train.device=cuda:1", "data.height=16", "data.width=8", "data.p=2", "data.k=1", "data.workers=0",
        "data.flip_prob=0", "data.pad=0", "data.erasing_prob=1", "eval.ranked_queries=0", "eval.qe_top_k=0",
        "loss.id.label_smoothing=0", "loss.trihard.margin=0", "loss.arcface.weight=1", "loss.arcface.margin_rad=0"])
    assert (config.train.epochs, config.data.height, config.data.width) == (1, 16, 8)
    assert load_config(None, ["loss.trihard.margin=null"]).loss.trihard.margin is None  # soft margin
    assert load_config(None, ["train.device=mps"]).train.device == "mps"  # any device string torch accepts
    # Milestones are read only by the step scheduler; the settings of a term with weight 0 are not read.
    assert load_config(None, ["train.scheduler=cosine", "train.milestones=[0]"]).train.milestones == [0]
    assert load_config(None, ["loss.cosface.scale=0"]).loss.cosface.scale == 0
    # The synthetic_* keys are checked only for data.dataset=synthetic, like the cuhk03_* keys.
    assert load_config(None, ["data.synthetic_cameras=1"]).data.synthetic_cameras == 1
    config = load_config(None, ["loss.verification.weight=1", "eval.verify_topk=5"])
    assert config.eval.verify_topk == 5


def test_out_of_range_value_in_a_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 5, log_every: 0}\n")
    with pytest.raises(ConfigError, match=r"train\.log_every: 0 is not allowed; use 1 or more"):
        load_config(path)
    assert load_config(path, ["train.log_every=1"]).train.log_every == 1


@pytest.mark.parametrize("text, overrides, message", [
    ("- model\n- train\n", [], r"c\.yaml: the top level must be a mapping of sections .* got list"),
    ("3\n", ["train.epochs=1"], r"c\.yaml: the top level must be a mapping of sections .* got int 3"),
    ("train: 5\n", [], r"^train: expected a mapping of keys, got 5"),
    ("train: 5\n", ["train.epochs=1"], r"^train: expected a mapping of keys, got 5"),
    ("train:\n", ["train.epochs=1"], r"^train: expected a mapping of keys, got None"),
    ("loss: {trihard: 0.3}\n", ["loss.trihard.margin=0.2"], r"^loss\.trihard: expected a mapping of keys, got 0\.3"),
    ("", [], r"c\.yaml is empty; list the keys it changes"),
    ("# only a comment\n", [], r"c\.yaml is empty"),
])
def test_yaml_that_is_not_a_mapping_is_refused(tmp_path, text, overrides, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, overrides)


def test_evaluate_model_refuses_verify_topk_without_a_pair_head():
    from reidkit.engine.evaluation import evaluate_model
    from reidkit.errors import ReidkitError
    from reidkit.models.reid import build_model

    config = load_config(None, ["loss.verification.weight=1", "eval.verify_topk=5"])  # but the model has no head
    model = build_model(num_classes=4, backbone="resnet18")
    with pytest.raises(ReidkitError, match=r"eval\.verify_topk=5 needs a pair head: .* set eval\.verify_topk=0"):
        evaluate_model(model, None, config.eval, 32, 16, progress=False, protocol="all_gallery")


def test_cli_refuses_an_out_of_range_value_in_one_line_before_any_work(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    tiny = Path(__file__).parent.parent / "configs" / "tiny.yaml"
    result = subprocess.run([sys.executable, "-m", "reidkit", "train", "--config", str(tiny), "--out",
                             str(tmp_path / "run"), f"data.root={tmp_path / 'data'}", "train.epochs=0"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["reidkit: error: train.epochs: 0 is not allowed; use 1 or more"]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()  # nothing was started
