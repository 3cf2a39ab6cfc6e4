"""Types shared by the config sections and the range check each section's `__post_init__` applies."""

from __future__ import annotations

import re
from typing import Any, Literal

from reidkit.errors import ConfigError

DatasetName = Literal["synthetic", "market1501", "dukemtmc", "msmt17", "folder", "cuhk03", "veri776", "vehicleid",
                      "synthetic_video", "mars", "ilidsvid", "prid2011", "dukemtmc_video"]
VIDEO_DATASETS = ("synthetic_video", "mars", "ilidsvid", "prid2011", "dukemtmc_video")  # samples are tracklets
FrameSampling = Literal["evenly", "random", "all"]  # frames of a tracklet (Torchreid's sample_method)
SyntheticDomain = Literal["a", "b"]  # camera/scene families of the synthetic generator
Metric = Literal["euclidean", "cosine"]
# before or after the BNNeck, or Mancs's attention-aware branch (needs model.attention_branch)
FeatureKey = Literal["features", "bn_features", "att_features"]
PairStrategy = Literal["all", "random", "hard"]
TripletStrategy = Literal["all", "random", "hard", "nn_adaptive"]
# Choices renamed since: the old value gets one error naming the new one.
RENAMED_CHOICES = {TripletStrategy: {
    "adaptive": "nn_adaptive (renamed: a distance-based variant; the classifier-based adaptive hard sample mining "
                "of Chen et al. 2018 is loss.id.mining=ahsm)"}}


def refuse_bad(section: str, obj: Any, rules: list[tuple[str, bool, str]]) -> None:
    """Raise ConfigError "section.key: VALUE is not allowed; FIX" for the first rule (key, ok, fix) whose `ok`
    is false. Write each rule so that NaN fails it (x >= 0, not `not x < 0`)."""
    for key, ok, fix in rules:
        if not ok:
            raise ConfigError(f"{section}.{key}: {getattr(obj, key)!r} is not allowed; {fix}")


def is_device(name: str) -> bool:
    """Whether `name` is "auto" or a device string torch.device accepts (torch imported only for rare ones)."""
    if re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        return True
    import torch

    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True


