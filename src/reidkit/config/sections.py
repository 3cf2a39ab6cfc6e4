"""The sections of a run config (data, model, loss, train, eval) and the `Config` that holds them."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reidkit.config.losses import LossConfig, teacher_terms
from reidkit.config.rules import (VIDEO_DATASETS, DatasetName, FrameSampling, Metric, SyntheticDomain, is_device,
                                  refuse_bad)
from reidkit.errors import ConfigError

CUHK03_CLASSIC_SPLITS = 20  # test splits of the CUHK03 release (`testsets` of cuhk-03.mat)
MIN_HEIGHT, MIN_WIDTH = 16, 8  # smallest input size accepted (the tests train at 32x16)
MAX_SIDE = 1024  # largest input side accepted (ReID trains at 256×128 to 384×192; vehicles at 320×320)
# Training augmentations that exist for PIL images only (no batched form for data.cache)
PIL_ONLY_AUGMENTATIONS = ("autoaugment_prob", "augmix_prob", "colour_jitter_prob", "translate_prob")
MAX_WORKERS = 128  # loader processes accepted (a fixed bound: a run's config must load on any machine)
MAX_LR = 10.0  # largest learning rate accepted (large-batch SGD uses up to a few; 1e300 is a typo)


@dataclass
class DataSource:
    """One data set on disk: its layout, its folder and the layout's own options. `DataConfig` is one (the
    single set of a run); `data.train_sets` and `eval.test_sets` list more."""

    dataset: DatasetName = "market1501"
    root: str = "data/market1501"
    # Label in tables, metrics.json and metrics.jsonl; empty: the dataset name, or the root folder's name when
    # two listed sets share a layout (e.g. two synthetic sets).
    name: str = ""
    # Used only when dataset == "synthetic" and `root` holds no data yet: the set is generated there. The domain
    # picks the family of camera styles and scenes: "a" (a sunlit campus) or "b" (dim, warm-lit indoor halls).
    synthetic_identities: int = 300
    synthetic_cameras: int = 6
    synthetic_seed: int = 0
    synthetic_domain: SyntheticDomain = "a"
    # Per-identity attributes for loss.attribute: a CSV (`pid,<name>,...`, Market-1501 codes) or the public
    # market_attribute.mat / duke_attribute.mat; empty: the synthetic set's own attributes.csv.
    attributes: str = ""
    # Used only when dataset == "cuhk03": hand-drawn ("labeled") or DPM ("detected") boxes, the new 767/700
    # protocol or the classic splits, and the classic split index (0..19; always 0 for the new protocol).
    cuhk03_variant: Literal["labeled", "detected"] = "labeled"
    cuhk03_protocol: Literal["new", "classic"] = "new"
    cuhk03_split: int = 0
    # Used only when dataset == "vehicleid": its small (800), medium (1600) or large (2400) test list.
    vehicleid_test_size: Literal[800, 1600, 2400] = 800
    # Used only when dataset == "ilidsvid" or "prid2011": the train/test split of the split file (0..9).
    video_split: int = 0

    def __post_init__(self) -> None:
        section = "data"
        if self.dataset in ("synthetic", "synthetic_video"):  # the synthetic_* keys are read only for those
            most = 9 if self.dataset == "synthetic" else 6
            refuse_bad(section, self, [
                ("synthetic_identities", 4 <= self.synthetic_identities <= 9999,
                 "identities must be in 4..9999 (4-digit pids)"),
                ("synthetic_cameras", 2 <= self.synthetic_cameras <= most,
                 f"cameras must be in 2..{most} (one digit in the file name{'; MARS has 6' if most == 6 else ''})"),
                ("synthetic_seed", self.synthetic_seed >= 0, "use 0 or more"),
            ])
        if self.video_split < 0:
            raise ConfigError(f"{section}.video_split: {self.video_split} is not allowed; use 0 or more")
        if self.dataset != "cuhk03":
            return
        if self.cuhk03_protocol == "classic" and not 0 <= self.cuhk03_split < CUHK03_CLASSIC_SPLITS:
            raise ConfigError(f"{section}.cuhk03_split: {self.cuhk03_split} is not allowed with "
                              f"{section}.cuhk03_protocol=classic; choose one of 0..{CUHK03_CLASSIC_SPLITS - 1}")
        if self.cuhk03_protocol == "new" and self.cuhk03_split != 0:
            raise ConfigError(f"{section}.cuhk03_split: {self.cuhk03_split} is not allowed with "
                              f"{section}.cuhk03_protocol=new, which has a single split; use 0 (or "
                              f"{section}.cuhk03_protocol=classic for the 20 classic splits)")


@dataclass
class DataConfig(DataSource):
    height: int = 256
    width: int = 128
    p: int = 16  # identities per batch
    k: int = 4  # images per identity in a batch (batch size = p * k)
    # What an epoch is: "pk" ends it when fewer than p identities have k unused images (Torchreid's and the
    # strong baseline's RandomIdentitySampler); "images" gives it ⌊training images / (p·k)⌋ batches, the
    # identities drawn again when they run out (fast-reid's iters_per_epoch with its endless sampler).
    epoch_length: Literal["pk", "images"] = "pk"
    workers: int = 4  # DataLoader worker processes
    flip_prob: float = 0.5  # random horizontal flip; 0 disables
    pad: int = 10  # zero padding before the random crop; 0 disables
    erasing_prob: float = 0.5  # random erasing (Zhong et al. 2020); 0 disables
    # The erased rectangle's value: "pixel_mean" paints the mean colour, 0 after normalisation (fast-reid's
    # INPUT.REA.VALUE = PIXEL_MEAN); "normalised_mean" writes the mean's numbers (0.485, 0.456, 0.406) into the
    # normalised image (Torchreid's RandomErasing(mean=norm_mean)).
    erasing_fill: Literal["pixel_mean", "normalised_mean"] = "pixel_mean"
    # Resize interpolation of training and test images (PIL's, antialiased): Torchreid resizes bilinearly,
    # fast-reid bicubically (`T.Resize(size, interpolation=3)`); `reidkit import` sets the checkpoint's.
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    # Further training augmentations, each off at 0 (the probability an image gets it). Per image on PIL images
    # only, so they need data.cache none or auto (auto then loads the training images with PIL workers):
    # torchvision's AutoAugment, ImageNet policy, before the resize (fast-reid's INPUT.AUTOAUG);
    autoaugment_prob: float = 0.0
    # torchvision's AugMix with fast-reid's settings: severity 1, 3 chains of depth 1, alpha 0.1, no colour
    # operations (fast-reid's INPUT.AUGMIX);
    augmix_prob: float = 0.0
    # torchvision's ColorJitter with these ranges (fast-reid's INPUT.CJ: prob 0.5 and these defaults;
    # Torchreid's "color_jitter": prob 1, brightness 0.2, contrast 0.15, saturation 0, hue 0);
    colour_jitter_prob: float = 0.0
    colour_jitter_brightness: float = 0.15
    colour_jitter_contrast: float = 0.15
    colour_jitter_saturation: float = 0.1
    colour_jitter_hue: float = 0.1
    # Torchreid's random 2-D translation ("random_crop"): enlarge by 1.125, crop back at a random offset.
    translate_prob: float = 0.0
    # Random patch (fast-reid's INPUT.RPT, Torchreid's "random_patch"): paste a rectangle cut from another image
    # of the batch; on either path, after random erasing.
    random_patch_prob: float = 0.0
    skip_bad_images: bool = False  # drop unreadable training images (counted, reported) instead of stopping
    # Training identities held out of training (those with the highest pids) as a validation split; its
    # pairs calibrate the open-set threshold when eval.open_set_pairs=holdout. 0: none.
    holdout_identities: int = 0
    # Training images decoded once to uint8 at the training size and augmented a batch at a time where they
    # are kept: "device" (the training GPU), "memory" (host), "none" (PIL in `workers` processes, each epoch);
    # "auto" picks device, then memory, when the images take at most a quarter of the free memory.
    cache: Literal["auto", "none", "memory", "device"] = "auto"
    # Several training sets in one run, e.g. [{dataset: market1501, root: data/market1501}, {dataset: msmt17,
    # root: data/msmt17}]: their train splits are joined, identities and cameras offset so that they never
    # collide. Empty: train on the set above (dataset, root, ...), which is also the default test set.
    train_sets: list[DataSource] = field(default_factory=list)
    # Also train on the query and gallery identities of every training set (Torchreid's "combineall"; pid 0
    # distractors and -1 junk left out), for a model deployed elsewhere; its own test set is then not held out.
    combineall: bool = False
    # Video data (tracklets): frames per training tracklet and how they are drawn (Torchreid's seq_len and
    # sample_method: "evenly" spaced, "random" sorted subset, "all": every frame, batches padded with a mask).
    seq_len: int = 4
    frame_sampling: FrameSampling = "random"

    def __post_init__(self) -> None:
        super().__post_init__()
        refuse_bad("data", self, [
            ("height", MIN_HEIGHT <= self.height <= MAX_SIDE,
             f"use {MIN_HEIGHT} to {MAX_SIDE} pixels (e.g. 256; 64 for quick runs)"),
            ("width", MIN_WIDTH <= self.width <= MAX_SIDE, f"use {MIN_WIDTH} to {MAX_SIDE} pixels (e.g. 128; 32 for "
                                                           "quick runs)"),
            ("p", self.p >= 2, "use 2 or more identities per batch"),
            ("k", self.k >= 1, "use 1 or more images per identity"),
            ("workers", 0 <= self.workers <= MAX_WORKERS, f"use 0 (load in the main process) to {MAX_WORKERS}; "
                                                             "about the number of CPU cores is plenty"),
            ("flip_prob", 0.0 <= self.flip_prob <= 1.0, "use a probability in [0, 1] (0 disables it)"),
            ("pad", self.pad >= 0, "use 0 or more pixels (0 disables it)"),
            ("erasing_prob", 0.0 <= self.erasing_prob <= 1.0, "use a probability in [0, 1] (0 disables it)"),
            *[(name, 0.0 <= getattr(self, name) <= 1.0, "use a probability in [0, 1] (0 disables it)")
              for name in (*PIL_ONLY_AUGMENTATIONS, "random_patch_prob")],
            *[(f"colour_jitter_{name}", 0.0 <= getattr(self, f"colour_jitter_{name}") < math.inf,
               "use a number >= 0 (0: no change; fast-reid: 0.15, 0.15, 0.1 for brightness, contrast, saturation)")
              for name in ("brightness", "contrast", "saturation")],
            ("colour_jitter_hue", 0.0 <= self.colour_jitter_hue <= 0.5, "use a hue shift in [0, 0.5] (fast-reid: 0.1)"),
            ("holdout_identities", self.holdout_identities >= 0, "use 0 (none) or more identities"),
            ("seq_len", 1 <= self.seq_len <= 1024, "use 1 or more frames per tracklet (e.g. 4 or 8)"),
        ])
        set_names(self.train_sets, "data.train_sets")
        per_image = self.pil_only_augmentations()
        if per_image and self.cache in ("memory", "device"):
            raise ConfigError(f"data.{per_image[0]}={getattr(self, per_image[0])} augments PIL images one at a time, "
                              f"which data.cache={self.cache} (whole batches of decoded images) cannot do; set "
                              "data.cache=none or auto (auto caches the test images and loads the training images "
                              f"with PIL workers), or data.{per_image[0]}=0")

    def pil_only_augmentations(self) -> list[str]:
        """The switched-on augmentations that only the PIL path has (`PIL_ONLY_AUGMENTATIONS`)."""
        return [name for name in PIL_ONLY_AUGMENTATIONS if getattr(self, name) > 0]


def set_names(sources: list[DataSource], key: str) -> list[str]:
    """The label of each listed set: its `name`, else its dataset name, else (when two sets share a layout) its
    root folder's name.

    Raises:
        ConfigError: two sets with the same label.
    """
    layouts = [source.dataset for source in sources]
    names = [source.name or (source.dataset if layouts.count(source.dataset) == 1 else Path(source.root).name)
             for source in sources]
    for index, name in enumerate(names):
        if not re.fullmatch(r"[\w.+-]+", name):
            raise ConfigError(f"{key}[{index}].name: {name!r} is not allowed; use letters, digits, _ . + - (it "
                              "names a folder of the run)")
        if names.index(name) != index:
            raise ConfigError(f"{key}: two sets are named {name!r}; give each a distinct name "
                              f"(e.g. {{dataset: {sources[index].dataset}, root: {sources[index].root}, "
                              f"name: {name}_2}})")
    return names


@dataclass
class ModelConfig:
    # resnet18/34/50 (torchvision), resnet50_ibn_a (Pan et al. 2018), osnet_x1_0/x0_75/x0_5/x0_25 (Zhou et
    # al. 2019), or timm/<any timm model> (the optional extra reidkit[timm])
    backbone: str = "resnet50"
    last_stride: int = 1  # 1 doubles the final feature map (BoT trick); 2 is torchvision's default
    pooling: Literal["avg", "gem"] = "avg"  # global average or generalised-mean pooling
    non_local: bool = False  # AGW's non-local blocks in stages 2 and 3 (Ye et al., TPAMI 2021)
    # Mancs (Wang et al., ECCV 2018): fully attentional blocks after ResNet stages 2 and 3 (identity at
    # insertion), and the attention-aware branch: output "att_features" = pooled, re-weighted last map
    attention_blocks: bool = False
    attention_branch: bool = False
    # Distributed runs: BatchNorm statistics over the global batch of all ranks, so W processes train as one
    # process on the same global batch (for small per-rank batches); no effect in one process.
    sync_bn: bool = False
    # "imagenet" (torchvision's download and cache; offline: the error names the file to place), a local
    # .safetensors/.pth of the backbone, "torchreid:PATH" / "fastreid:PATH" (a checkpoint of those toolkits,
    # also recognised from its keys: the whole network but the classifier; reidkit.models.peers), or empty:
    # random init
    weights: str = ""
    # Torchreid's embedding after pooling: Linear → BatchNorm1d → ReLU of this size (OSNet's 512); 0: none
    embedding_dim: int = 0
    # the ID head: "bnneck" (BoT: BatchNorm neck with frozen bias, then a bias-free classifier) or "linear"
    # (Torchreid: a classifier with a bias on the feature itself; bn_features are then the features)
    head: Literal["bnneck", "linear"] = "bnneck"
    # a ResNet's stem max pool: "pad" (padding 1: torchvision, Torchreid) or "ceil" (no padding, ceil mode:
    # fast-reid)
    stem_pool: Literal["pad", "ceil"] = "pad"
    # TransReID (He et al., ICCV 2021) on a timm ViT: patch embedding stride (0: the patch size; 12:
    # overlapping 16×16 patches), and a learnable embedding per camera of the training set (side
    # information) times camera_scale, added to every token
    patch_stride: int = 0
    camera_embedding: bool = False
    camera_scale: float = 3.0
    # TransReID's jigsaw patch module: k local features from shifted, shuffled groups of patch tokens through a
    # copy of the ViT's last layer (0: off; TransReID: 4 groups, shift 5, 2 shuffle groups); trained by
    # loss.jigsaw, retrieved with eval.feature=jigsaw_features or jigsaw_bn_features
    jigsaw_groups: int = 0
    jigsaw_shift: int = 5
    jigsaw_shuffle_groups: int = 2
    # Video data: how the frame features of a tracklet become one feature (reidkit.models.temporal): temporal
    # "avg" or "max" pooling, learned per-frame "attention" weights, or one "transformer" layer over the frames
    temporal: Literal["avg", "max", "attention", "transformer"] = "avg"
    # Knowledge distillation: a finished run folder (`reidkit train`, or `reidkit import` of a Torchreid /
    # fast-reid checkpoint) whose model, frozen, computes teacher_features / teacher_logits for the loss terms
    # that read them (loss.logit_kd, similarity_preserving, rkd_distance, rkd_angle); empty: no teacher
    teacher: str = ""

    def __post_init__(self) -> None:
        from reidkit.models.backbones import BACKBONES  # the names live with their builders

        names = list(BACKBONES)
        close = difflib.get_close_matches(self.backbone, names, n=3)
        refuse_bad("model", self, [
            ("backbone", self.backbone in BACKBONES or (self.backbone.startswith("timm/") and len(self.backbone) > 5),
             (f"did you mean {', '.join(close)}? " if close else "") + f"use one of {', '.join(names)}, or "
             "timm/<name> for a timm model"),
            ("last_stride", self.last_stride in (1, 2), "use 1 or 2"),
            ("embedding_dim", 0 <= self.embedding_dim <= 65536, "use 0 (none) or a size such as 512"),
            ("patch_stride", 0 <= self.patch_stride <= 64, "use 0 (the patch size) or a stride such as 12"),
            ("camera_scale", 0 <= self.camera_scale < math.inf, "use a number >= 0 (TransReID: 3.0)"),
            ("jigsaw_groups", 0 <= self.jigsaw_groups <= 64, "use 0 (off) or a few groups such as 4"),
            ("jigsaw_shift", 0 <= self.jigsaw_shift <= 4096, "use 0 or more patches (TransReID: 5)"),
            ("jigsaw_shuffle_groups", 1 <= self.jigsaw_shuffle_groups <= 64, "use 1 (no shuffle) or more (TransReID: 2)")])


@dataclass
class TrainConfig:
    # Each option that a peer toolkit has carries its name there: fast-reid's SOLVER.* keys, Torchreid's arguments.
    epochs: int = 120
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only: Nesterov momentum (fast-reid NESTEROV, Torchreid sgd_nesterov)
    # Adam only: its betas and epsilon, and the AMSGrad variant (Torchreid's optim "amsgrad"; Torchreid's
    # adam_beta2 default is 0.99, torch's and fast-reid's 0.999)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    amsgrad: bool = False
    # Parameter groups as fast-reid builds them: biases learn at lr × bias_lr_factor (BIAS_LR_FACTOR) with weight
    # decay weight_decay_bias (WEIGHT_DECAY_BIAS); the weights of normalisation layers decay by weight_decay_norm
    # (WEIGHT_DECAY_NORM); null: train.weight_decay. Everything but the backbone (necks, classifiers, the loss
    # terms' own parameters) learns at lr × heads_lr_factor (HEADS_LR_FACTOR; Torchreid's staged_lr with
    # base_lr_mult m is lr × m with heads_lr_factor 1/m).
    bias_lr_factor: float = 1.0
    weight_decay_bias: float | None = None
    weight_decay_norm: float | None = None
    heads_lr_factor: float = 1.0
    # fast-reid's FREEZE_ITERS with FREEZE_LAYERS [backbone]: the first freeze_iters steps train the heads only;
    # the backbone gets no update (nor optimiser state) and its BatchNorm layers keep their statistics.
    freeze_iters: int = 0
    # Warm-up from lr × warmup_factor: per epoch over warmup_epochs (BoT), or per step over warmup_iters
    # (fast-reid's WARMUP_ITERS; set warmup_epochs=0). warmup_method (WARMUP_METHOD): "linear" rises linearly to
    # lr, "constant" stays at lr × warmup_factor, "exp" rises as warmup_factor^(1 − progress).
    warmup_epochs: int = 10
    warmup_iters: int = 0
    warmup_method: Literal["linear", "constant", "exp"] = "linear"
    warmup_factor: float = 0.01
    # After warm-up: "step" multiplies lr by gamma at each of the milestones (epochs; Torchreid's multi_step,
    # fast-reid's MultiStepLR), "single_step" every stepsize epochs (Torchreid's single_step), "cosine" anneals to
    # eta_min_lr (fast-reid's ETA_MIN_LR; Torchreid: 0) by the last epoch. Milestones and stepsize count epochs
    # from the start of training, or, as fast-reid counts them, from where delay_epochs (DELAY_EPOCHS: lr held
    # before the schedule starts) or warmup_iters end; the cosine starts after the warm-up and the delay. See
    # reidkit.engine.schedule for the exact rule.
    scheduler: Literal["step", "single_step", "cosine"] = "step"
    milestones: list[int] = field(default_factory=lambda: [40, 70])  # step scheduler
    gamma: float = 0.1  # step and single_step decay
    stepsize: int = 20  # single_step: epochs between decays
    delay_epochs: int = 0
    eta_min_lr: float = 0.0
    amp: bool = True  # bfloat16 autocast on CUDA; on the CPU only with amp_cpu
    amp_cpu: bool = False  # bf16 autocast on the CPU too (with amp): bf16's effect on accuracy without a GPU
    compile: bool = False  # torch.compile the training forward (the first steps compile: minutes on a CPU)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    seed: int = 0
    eval_every: int = 40  # epochs; the last epoch is always evaluated
    checkpoint_every: int = 1  # epochs between *.safetensors checkpoints
    checkpoint_every_steps: int = 0  # also checkpoint every N optimiser steps mid-epoch (0: epoch ends only)
    keep_checkpoints: int = 3  # epoch checkpoints kept (plus best.safetensors and the run's model)
    nonfinite: Literal["stop", "skip"] = "stop"  # NaN/Inf loss: stop naming the term, or skip the batch
    log_every: int = 20  # steps between metrics.jsonl records
    # Also write every metrics.jsonl record (loss terms, learning rate, evaluation metrics) as TensorBoard scalars
    # into RUN/tensorboard/ (`tensorboard --logdir RUN`); needs the extra reidkit[tensorboard].
    tensorboard: bool = False
    # Distributed runs: minutes a collective may wait before the run fails (NCCL's watchdog, gloo). Rank 0's
    # evaluation and checkpoints never count against it: the other ranks wait for those outside collectives.
    dist_timeout_minutes: float = 30.0

    def __post_init__(self) -> None:
        steps = self.milestones
        refuse_bad("train", self, [
            ("epochs", self.epochs >= 1, "use 1 or more"),
            ("lr", 0 < self.lr <= MAX_LR, f"use a number > 0 and at most {MAX_LR:g} (e.g. 3.5e-4 for Adam)"),
            ("weight_decay", 0 <= self.weight_decay <= 1, "use a number in [0, 1] (0: none; e.g. 5e-4)"),
            ("momentum", 0 <= self.momentum < 1, "use a value in [0, 1)"),
            ("nesterov", not self.nesterov or (self.optimizer == "sgd" and self.momentum > 0),
             "Nesterov momentum needs train.optimizer=sgd and train.momentum > 0"),
            ("adam_beta1", 0 <= self.adam_beta1 < 1, "use a value in [0, 1) (e.g. 0.9)"),
            ("adam_beta2", 0 <= self.adam_beta2 < 1, "use a value in [0, 1) (e.g. 0.999; Torchreid: 0.99)"),
            ("adam_eps", 0 < self.adam_eps <= 1, "use a small number > 0 (e.g. 1e-8)"),
            ("bias_lr_factor", 0 <= self.bias_lr_factor <= 100, "use a number in [0, 100] (1: as the weights; "
                                                                "Detectron's and BoT's 2)"),
            ("weight_decay_bias", self.weight_decay_bias is None or 0 <= self.weight_decay_bias <= 1,
             "use null (train.weight_decay) or a number in [0, 1]"),
            ("weight_decay_norm", self.weight_decay_norm is None or 0 <= self.weight_decay_norm <= 1,
             "use null (train.weight_decay) or a number in [0, 1]"),
            ("heads_lr_factor", 0 < self.heads_lr_factor <= 1000, "use a number in (0, 1000] (1: as the backbone; "
                                                                  "e.g. 10 when fine-tuning a pretrained backbone)"),
            ("freeze_iters", self.freeze_iters >= 0, "use 0 (off) or more steps"),
            ("warmup_epochs", self.warmup_epochs >= 0, "use 0 or more (0: no warm-up)"),
            ("warmup_iters", self.warmup_iters >= 0, "use 0 (warm up by epochs, or not) or more steps"),
            ("warmup_iters", not (self.warmup_iters and self.warmup_epochs),
             f"warm up by epochs or by steps, not both: set train.warmup_epochs=0 (it is {self.warmup_epochs})"),
            ("warmup_factor", 0 < self.warmup_factor <= 1, "use a value in (0, 1] (the first epoch's share of lr)"),
            ("milestones", self.scheduler != "step" or all(a < b for a, b in zip([0, *steps], steps)),
             "use increasing epochs >= 1 for train.scheduler=step, e.g. [40, 70] (or [] for no decay)"),
            ("stepsize", self.stepsize >= 1, "use 1 or more epochs"),
            ("delay_epochs", 0 <= self.delay_epochs < self.epochs, "use 0 (none) or fewer epochs than train.epochs"),
            ("eta_min_lr", 0 <= self.eta_min_lr <= self.lr, "use a number in [0, train.lr] (fast-reid: 1e-7)"),
            ("gamma", 0 < self.gamma < math.inf, "use a number > 0 (e.g. 0.1: the rate is multiplied by it at "
                                                 "each milestone)"),
            ("device", is_device(self.device), "use auto, cpu, cuda or cuda:N"),
            ("seed", 0 <= self.seed < 2**32, "use a value in 0..2**32-1"),
            ("eval_every", self.eval_every >= 1, "use 1 or more epochs (the last epoch is always evaluated)"),
            ("checkpoint_every", self.checkpoint_every >= 1, "use 1 or more epochs"),
            ("checkpoint_every_steps", self.checkpoint_every_steps >= 0, "use 0 (epoch ends only) or more steps"),
            ("keep_checkpoints", self.keep_checkpoints >= 1, "use 1 or more"),
            ("log_every", self.log_every >= 1, "use 1 or more steps"),
            ("dist_timeout_minutes", 0 < self.dist_timeout_minutes < math.inf, "use a number of minutes > 0 "
                                                                               "(e.g. 30)"),
        ])


@dataclass
class EvalConfig:
    # BNNeck output, as in BoT; "att_features": Mancs's attention-aware branch (model.attention_branch);
    # "jigsaw_features" / "jigsaw_bn_features": TransReID's global + local features (model.jigsaw_groups)
    feature: Literal["bn_features", "features", "att_features", "jigsaw_features", "jigsaw_bn_features"] = \
        "bn_features"
    metric: Metric = "cosine"
    flip: bool = False  # average the features of the image and its mirror
    batch_size: int = 256
    max_rank: int = 50
    junk: Literal["market", "none"] = "market"  # "none" for single-camera custom data
    ranked_queries: int = 12  # ranked-list pictures written per evaluation
    # Draw under each image of the ranked lists (ranked/, report.html) where the feature comes from: the norm of
    # the backbone's last feature map at each position, over the image (BoT-style activation maps).
    activation_maps: bool = False
    baselines: bool = False  # also evaluate a colour histogram and the untrained network
    verify_topk: int = 0  # > 0: also report metrics with each query's top-k re-scored by the pair head
    # "all_gallery": each query ranks the whole gallery (Market-1501 rules); "single_gallery_shot": one drawn
    # gallery image per identity, mean over single_shot_repeats draws (CUHK03 classic); "vehicleid": one drawn
    # image per vehicle of the test list is the gallery, the others are queries, mean over single_shot_repeats
    # draws (VehicleID); "auto": see resolve_protocol.
    protocol: Literal["auto", "all_gallery", "single_gallery_shot", "vehicleid"] = "auto"
    single_shot_repeats: int = 10  # draws averaged by single_gallery_shot and vehicleid (seed 0)
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
    # Open-set matching (metrics "open_set"): the distance threshold is the one whose false positive rate on
    # impostor pairs is at most open_set_fpr; the pairs are the test split's query × gallery pairs ("test") or
    # the pairs of the identities held out of training ("holdout", needs data.holdout_identities >= 2).
    open_set_fpr: float = 1e-3
    open_set_pairs: Literal["test", "holdout"] = "test"
    # Evaluate the model on each of these query/gallery sets, reported separately (cross-domain testing), e.g.
    # [{dataset: dukemtmc, root: data/dukemtmc}]; the first one picks the best checkpoint and fills the top level
    # of metrics.json. Empty: the set of data.dataset / data.root.
    test_sets: list[DataSource] = field(default_factory=list)
    # Video data: the frames of each test tracklet (data.seq_len of them unless "all"), fed chunk_frames at a
    # time (0: a whole tracklet at once), the chunks' features averaged weighted by their frames; and which
    # side is a single frame (the tracklet's middle one): "video_to_video", "image_to_video" (image queries),
    # "video_to_image" (an image gallery).
    frame_sampling: FrameSampling = "all"
    chunk_frames: int = 32
    video_mode: Literal["video_to_video", "image_to_video", "video_to_image"] = "video_to_video"

    def __post_init__(self) -> None:
        set_names(self.test_sets, "eval.test_sets")
        refuse_bad("eval", self, [
            ("batch_size", self.batch_size >= 1, "use 1 or more"),
            ("max_rank", self.max_rank >= 1, "use 1 or more (the length of the CMC curve)"),
            ("ranked_queries", self.ranked_queries >= 0, "use 0 (none) or more"),
            ("verify_topk", self.verify_topk >= 0, "use 0 (off) or more"),
            ("open_set_fpr", 0.0 < self.open_set_fpr < 1.0, "use a false positive rate in (0, 1), e.g. 0.001"),
            ("chunk_frames", self.chunk_frames >= 0, "use 0 (whole tracklets) or more frames per chunk"),
        ])
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
    adapt: AdaptConfig = field(default_factory=lambda: AdaptConfig())  # read only by `reidkit adapt`

    def __post_init__(self) -> None:
        terms = {f.name: getattr(self.loss, f.name) for f in dataclasses.fields(self.loss)}
        readers = [f"loss.{name}.feature" for name, term in terms.items()
                   if term.weight > 0 and getattr(term, "feature", None) == "att_features"]
        readers += ["eval.feature"] if self.eval.feature == "att_features" else []
        if readers and not self.model.attention_branch:
            raise ConfigError(f"{readers[0]}=att_features reads Mancs's attention-aware branch, which this model "
                              "lacks; set model.attention_branch=true or read features/bn_features")
        jigsaw_readers = ["loss.jigsaw"] if self.loss.jigsaw.weight > 0 else []
        jigsaw_readers += ["eval.feature"] if self.eval.feature.startswith("jigsaw") else []
        if jigsaw_readers and not self.model.jigsaw_groups:
            raise ConfigError(f"{jigsaw_readers[0]} reads TransReID's jigsaw branch, which this model lacks; set "
                              "model.jigsaw_groups (e.g. 4, with a timm/vit_... backbone) or turn it off")
        teacher_readers = [f"loss.{name}" for name in teacher_terms(self.loss)]
        if teacher_readers and not self.model.teacher:
            raise ConfigError(f"{teacher_readers[0]} distils a teacher, but model.teacher is empty; set model.teacher="
                              f"RUN (a run folder of `reidkit train` or `reidkit import`) or {teacher_readers[0]}.weight=0")
        if self.model.teacher and not teacher_readers:
            raise ConfigError(f"model.teacher={self.model.teacher} is set but no loss term reads the teacher; give one of "
                              "loss.logit_kd, loss.similarity_preserving, loss.rkd_distance, loss.rkd_angle a weight > 0, "
                              "or set model.teacher=\"\"")
        if self.eval.verify_topk > 0 and not self.loss.verification.weight > 0:
            raise ConfigError(f"eval.verify_topk={self.eval.verify_topk} needs a pair head, which only "
                              "loss.verification trains; set loss.verification.weight > 0 or eval.verify_topk=0")
        if self.eval.open_set_pairs == "holdout" and self.data.holdout_identities < 2:
            raise ConfigError(f"eval.open_set_pairs=holdout needs identities held out of training, but "
                              f"data.holdout_identities={self.data.holdout_identities}; set data.holdout_identities "
                              "to 2 or more (e.g. 10% of the training identities) or eval.open_set_pairs=test")

        video = [source.dataset in VIDEO_DATASETS for source in self.data.train_sets or [self.data]]
        if self.model.temporal in ("attention", "transformer") and not any(video):
            raise ConfigError(f"model.temporal={self.model.temporal} aggregates the frames of tracklets, but "
                              f"data.dataset={self.data.dataset} holds images, so it would never train; use a video "
                              f"data set ({', '.join(VIDEO_DATASETS)}) or model.temporal=avg")
        if len(set(video)) > 1:
            raise ConfigError("data.train_sets mixes image and video (tracklet) data sets; train on one kind")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_protocol(config: Config, source: DataSource | None = None) -> str:
    """The evaluation protocol of `config` on the test set `source` (default: `config.data`): `eval.protocol`,
    where "auto" is "single_gallery_shot" for CUHK03's classic splits (cuhk03 with cuhk03_protocol=classic),
    "vehicleid" for VehicleID and "all_gallery" otherwise."""
    source = source or config.data
    if config.eval.protocol != "auto":
        return config.eval.protocol
    if source.dataset == "vehicleid":
        return "vehicleid"
    classic = source.dataset == "cuhk03" and source.cuhk03_protocol == "classic"
    return "single_gallery_shot" if classic else "all_gallery"


from reidkit.config.adapt import AdaptConfig  # noqa: E402  (last: that module imports DataSource from this one)
