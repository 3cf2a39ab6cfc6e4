"""Typed run configuration: nested dataclasses, YAML files and ``key=value`` overrides.

Defaults are the BoT recipe (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person
Re-identification", CVPRW 2019), so a YAML file only lists what it changes and reads as an ablation row.
Loading rejects unknown keys (with a "did you mean" hint), values of the wrong type and out-of-range
values (e.g. a CUHK03 split that its protocol lacks).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from reidkit.errors import ConfigError

DatasetName = Literal["synthetic", "market1501", "dukemtmc", "msmt17", "folder", "cuhk03"]
Metric = Literal["euclidean", "cosine"]
CUHK03_CLASSIC_SPLITS = 20  # test splits of the CUHK03 release (`testsets` of cuhk-03.mat)


@dataclass
class DataConfig:
    dataset: DatasetName = "market1501"
    root: str = "data/market1501"
    height: int = 256
    width: int = 128
    p: int = 16  # identities per batch
    k: int = 4  # images per identity in a batch (batch size = p * k)
    workers: int = 4  # DataLoader worker processes
    flip_prob: float = 0.5  # random horizontal flip; 0 disables
    pad: int = 10  # zero padding before the random crop; 0 disables
    erasing_prob: float = 0.5  # random erasing (Zhong et al. 2020); 0 disables
    # Used only when dataset == "synthetic" and `root` holds no data yet: the set is generated there.
    synthetic_identities: int = 300
    synthetic_cameras: int = 6
    synthetic_seed: int = 0
    # Per-identity attributes for loss.attribute: a CSV (`pid,<name>,...`, Market-1501 codes) or the public
    # market_attribute.mat / duke_attribute.mat; empty: the synthetic set's own attributes.csv.
    attributes: str = ""
    skip_bad_images: bool = False  # drop unreadable training images (counted, reported) instead of stopping
    # Used only when dataset == "cuhk03": hand-drawn ("labeled") or DPM ("detected") boxes, the new 767/700
    # protocol or the classic splits, and the classic split index (0..19; always 0 for the new protocol).
    cuhk03_variant: Literal["labeled", "detected"] = "labeled"
    cuhk03_protocol: Literal["new", "classic"] = "new"
    cuhk03_split: int = 0

    def __post_init__(self) -> None:
        if self.dataset != "cuhk03":
            return
        if self.cuhk03_protocol == "classic" and not 0 <= self.cuhk03_split < CUHK03_CLASSIC_SPLITS:
            raise ConfigError(f"data.cuhk03_split: {self.cuhk03_split} is not allowed with "
                              f"data.cuhk03_protocol=classic; choose one of 0..{CUHK03_CLASSIC_SPLITS - 1}")
        if self.cuhk03_protocol == "new" and self.cuhk03_split != 0:
            raise ConfigError(f"data.cuhk03_split: {self.cuhk03_split} is not allowed with "
                              "data.cuhk03_protocol=new, which has a single split; use 0 (or "
                              "data.cuhk03_protocol=classic for the 20 classic splits)")


@dataclass
class ModelConfig:
    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet50"
    last_stride: int = 1  # 1 doubles the final feature map (BoT trick); 2 is torchvision's default
    pooling: Literal["avg", "gem"] = "avg"  # global average or generalised-mean pooling
    non_local: bool = False  # AGW's non-local blocks in stages 2 and 3 (Ye et al., TPAMI 2021)
    weights: str = ""  # local .safetensors/.pth of an ImageNet backbone; empty = random init (no downloads)


FeatureKey = Literal["features", "bn_features"]  # before or after the BNNeck
PairStrategy = Literal["all", "random", "hard"]
TripletStrategy = Literal["all", "random", "hard", "adaptive"]


@dataclass
class IdLossConfig:
    weight: float = 1.0  # every term: 0 disables it
    label_smoothing: float = 0.1  # epsilon of label-smoothed cross-entropy on the classifier logits
    # Split the classifier by class over the ranks of a distributed run (exact softmax through
    # all-reduces) for data sets with very many identities; reads bn_features instead of the model's logits.
    sharded: bool = False


@dataclass
class AttributeLossConfig:
    weight: float = 0.0  # mean cross-entropy of the attribute heads (needs data.attributes)


@dataclass
class EmbeddingTermConfig:
    weight: float = 0.0
    feature: FeatureKey = "features"  # BoT: metric losses on the feature before the BNNeck


@dataclass
class PairwiseTermConfig(EmbeddingTermConfig):
    cross_rank: bool = False  # distributed runs: mine pairs over the global batch of all ranks


@dataclass
class MetricTermConfig(PairwiseTermConfig):
    metric: Metric = "euclidean"


@dataclass
class TriHardLossConfig(MetricTermConfig):
    weight: float = 1.0
    margin: float | None = 0.3  # null = soft margin log(1 + exp(d_ap - d_an))


@dataclass
class AdaptiveTripletLossConfig(MetricTermConfig):
    margin: float | None = None  # softmax(d)-weighted positives, softmax(-d)-weighted negatives


@dataclass
class ContrastiveLossConfig(MetricTermConfig):
    margin: float = 1.0
    strategy: PairStrategy = "hard"  # which pairs of the PK batch count


@dataclass
class TripletLossConfig(MetricTermConfig):
    margin: float | None = 0.3
    strategy: TripletStrategy = "random"  # "hard" is TriHard; "adaptive" = adaptive hard sample mining


@dataclass
class ImprovedTripletLossConfig(MetricTermConfig):
    margin: float = 0.3
    strategy: TripletStrategy = "random"


@dataclass
class QuadrupletLossConfig(MetricTermConfig):
    alpha: float = 0.3  # margin of the triplet term
    beta: float = 0.15  # margin of the weaker term against a pair of two other identities
    strategy: PairStrategy = "hard"


@dataclass
class LiftedLossConfig(MetricTermConfig):
    margin: float = 1.0


@dataclass
class HAP2SLossConfig(MetricTermConfig):
    margin: float = 0.5
    sigma: float = 0.5  # temperature of the hard-aware point-to-set weights


@dataclass
class CirclePairLossConfig(PairwiseTermConfig):
    margin: float = 0.25
    gamma: float = 128.0


@dataclass
class NormSoftmaxLossConfig(EmbeddingTermConfig):
    feature: FeatureKey = "bn_features"
    temperature: float = 0.05


@dataclass
class CosFaceLossConfig(EmbeddingTermConfig):
    feature: FeatureKey = "bn_features"
    scale: float = 30.0
    margin: float = 0.35  # subtracted from the target cosine


@dataclass
class ArcFaceLossConfig(EmbeddingTermConfig):
    feature: FeatureKey = "bn_features"
    scale: float = 30.0
    margin_rad: float = 0.5  # added to the target angle, in radians


@dataclass
class CircleClassLossConfig(EmbeddingTermConfig):
    feature: FeatureKey = "bn_features"
    scale: float = 64.0
    margin: float = 0.25


@dataclass
class LossConfig:
    """One entry per loss term; the objective is the sum of weight × term over terms with weight > 0."""

    id: IdLossConfig = field(default_factory=IdLossConfig)
    trihard: TriHardLossConfig = field(default_factory=TriHardLossConfig)
    adaptive_triplet: AdaptiveTripletLossConfig = field(default_factory=AdaptiveTripletLossConfig)
    contrastive: ContrastiveLossConfig = field(default_factory=ContrastiveLossConfig)
    triplet: TripletLossConfig = field(default_factory=TripletLossConfig)
    improved_triplet: ImprovedTripletLossConfig = field(default_factory=ImprovedTripletLossConfig)
    quadruplet: QuadrupletLossConfig = field(default_factory=QuadrupletLossConfig)
    lifted: LiftedLossConfig = field(default_factory=LiftedLossConfig)
    hap2s: HAP2SLossConfig = field(default_factory=HAP2SLossConfig)
    circle_pair: CirclePairLossConfig = field(default_factory=CirclePairLossConfig)
    norm_softmax: NormSoftmaxLossConfig = field(default_factory=NormSoftmaxLossConfig)
    cosface: CosFaceLossConfig = field(default_factory=CosFaceLossConfig)
    arcface: ArcFaceLossConfig = field(default_factory=ArcFaceLossConfig)
    circle: CircleClassLossConfig = field(default_factory=CircleClassLossConfig)
    center: EmbeddingTermConfig = field(default_factory=EmbeddingTermConfig)  # BoT: weight 0.001 here
    attribute: AttributeLossConfig = field(default_factory=AttributeLossConfig)
    verification: PairwiseTermConfig = field(default_factory=PairwiseTermConfig)  # Siamese pair head


@dataclass
class TrainConfig:
    epochs: int = 120
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9  # SGD only
    warmup_epochs: int = 10  # linear warm-up from lr * warmup_factor
    warmup_factor: float = 0.01
    scheduler: Literal["step", "cosine"] = "step"
    milestones: list[int] = field(default_factory=lambda: [40, 70])  # step scheduler
    gamma: float = 0.1  # step scheduler decay
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    seed: int = 0
    eval_every: int = 40  # epochs; the last epoch is always evaluated
    checkpoint_every: int = 1  # epochs between *.safetensors checkpoints
    checkpoint_every_steps: int = 0  # also checkpoint every N optimiser steps mid-epoch (0: epoch ends only)
    keep_checkpoints: int = 3  # epoch checkpoints kept (plus best.safetensors and the run's model)
    nonfinite: Literal["stop", "skip"] = "stop"  # NaN/Inf loss: stop naming the term, or skip the batch
    log_every: int = 20  # steps between metrics.jsonl records


@dataclass
class EvalConfig:
    feature: Literal["bn_features", "features"] = "bn_features"  # BNNeck output, as in BoT
    metric: Metric = "cosine"
    flip: bool = False  # average the features of the image and its mirror
    batch_size: int = 256
    max_rank: int = 50
    junk: Literal["market", "none"] = "market"  # "none" for single-camera custom data
    ranked_queries: int = 12  # ranked-list pictures written per evaluation
    baselines: bool = False  # also evaluate a colour histogram and the untrained network
    verify_topk: int = 0  # > 0: also report metrics with each query's top-k re-scored by the pair head
    # "all_gallery": each query ranks the whole gallery (Market-1501 rules); "single_gallery_shot": one drawn
    # gallery image per identity, mean over single_shot_repeats draws (CUHK03 classic); "auto": see
    # resolve_protocol.
    protocol: Literal["auto", "all_gallery", "single_gallery_shot"] = "auto"
    single_shot_repeats: int = 10  # draws averaged by single_gallery_shot (seed 0)
    # Also report the metrics after k-reciprocal re-ranking (Zhong et al., CVPR 2017) of the eval.metric
    # distances, with its neighbourhood sizes k1, k2 and the weight λ of the original distance.
    rerank: bool = False
    rerank_k1: int = 20
    rerank_k2: int = 6
    rerank_lambda: float = 0.3
    # Also report the metrics after query expansion of query and gallery features: "average" (Chum et al.,
    # ICCV 2007) or "alpha" (αQE, Radenović et al., TPAMI 2018), over each feature's qe_top_k nearest
    # gallery features, weighted by similarity^qe_alpha for "alpha".
    query_expansion: Literal["none", "average", "alpha"] = "none"
    qe_top_k: int = 5
    qe_alpha: float = 3.0

    def __post_init__(self) -> None:
        if self.single_shot_repeats < 1:
            raise ConfigError(f"eval.single_shot_repeats: {self.single_shot_repeats} is not allowed; use 1 or more")
        if self.rerank_k1 < 1 or self.rerank_k2 < 1:
            raise ConfigError(f"eval.rerank_k1 and eval.rerank_k2 must be 1 or more, got {self.rerank_k1} and "
                              f"{self.rerank_k2}")
        if not 0.0 <= self.rerank_lambda <= 1.0:
            raise ConfigError(f"eval.rerank_lambda: {self.rerank_lambda} is not allowed; use a value in [0, 1]")
        if self.qe_top_k < 0 or self.qe_alpha < 0:
            raise ConfigError(f"eval.qe_top_k and eval.qe_alpha must be 0 or more, got {self.qe_top_k} and "
                              f"{self.qe_alpha}")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_protocol(config: Config) -> str:
    """The evaluation protocol of `config`: `eval.protocol`, where "auto" is "single_gallery_shot" for
    CUHK03's classic splits (data.dataset=cuhk03, data.cuhk03_protocol=classic) and "all_gallery" otherwise."""
    if config.eval.protocol != "auto":
        return config.eval.protocol
    classic = config.data.dataset == "cuhk03" and config.data.cuhk03_protocol == "classic"
    return "single_gallery_shot" if classic else "all_gallery"


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Return `value` converted to the annotated type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            allowed = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {allowed}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_value(value, arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(tp)
        return [_check_value(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _unknown_key(key: str, allowed: list[str]) -> ConfigError:
    hint = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
    suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
    return ConfigError(f"unknown config key '{key}'{suggestion} (allowed: {', '.join(allowed)})")


def _from_dict(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise _unknown_key(f"{prefix}{key}", names)
        if _is_dataclass_type(hints[key]):
            kwargs[key] = _from_dict(hints[key], value, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_value(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build a Config from nested plain values, checking every key and type."""
    return _from_dict(Config, values or {})


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value, e.g. train.epochs=10")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # bare words such as resnet18 or cosine are strings
    if raw in ("null", "None"):
        value = None
    if raw in ("true", "false"):
        value = raw == "true"
    return key.strip().split("."), value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``a.b.c=value`` of `overrides` in the nested dict `values` (returned; input unchanged)."""
    values = yaml.safe_load(yaml.safe_dump(values or {}))
    for text in overrides:
        path, value = _parse_override(text)
        cls: type = Config
        node = values
        for depth, part in enumerate(path):
            hints = typing.get_type_hints(cls)
            if part not in hints:
                raise _unknown_key(".".join(path[: depth + 1]), list(hints))
            if depth == len(path) - 1:
                if _is_dataclass_type(hints[part]):
                    raise ConfigError(f"override '{text}' names a section; set one of its keys instead")
                node[part] = value
            else:
                if not _is_dataclass_type(hints[part]):
                    raise ConfigError(f"override '{text}': '{part}' is not a section")
                cls = hints[part]
                node = node.setdefault(part, {})
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when `path` is None) and apply ``key=value`` overrides.

    Raises:
        ConfigError: missing file, invalid YAML, unknown key, wrong type, a disallowed choice or an
            out-of-range value.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; see configs/ for examples")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from error
    return config_from_dict(apply_overrides(values, overrides or []))


def save_config(config: Config, path: str | Path) -> None:
    """Write `config` as YAML with every field, so a run folder records exactly what ran."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
