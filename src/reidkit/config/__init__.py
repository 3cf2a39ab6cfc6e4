"""Typed run configuration: nested dataclasses, YAML files and ``key=value`` overrides.

Defaults are the BoT recipe (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person
Re-identification", CVPRW 2019), so a YAML file only lists what it changes and reads as an ablation row.
Loading rejects unknown keys (with a "did you mean" hint), values of the wrong type and out-of-range
values (e.g. a CUHK03 split that its protocol lacks).
"""

from reidkit.config.loading import apply_overrides, config_from_dict, load_config, read_yaml, save_config
from reidkit.config.losses import LossConfig
from reidkit.config.rules import DatasetName, Metric
from reidkit.config.sections import (CUHK03_CLASSIC_SPLITS, Config, DataConfig, EvalConfig, ModelConfig, TrainConfig,
                                     resolve_protocol)

__all__ = ["CUHK03_CLASSIC_SPLITS", "Config", "DataConfig", "DatasetName", "EvalConfig", "LossConfig", "Metric",
           "ModelConfig", "TrainConfig", "apply_overrides", "config_from_dict", "load_config", "read_yaml",
           "resolve_protocol", "save_config"]
