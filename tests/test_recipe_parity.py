"""reidkit's training step against the peers' own training code, step by step: from the same initial weights and
the same fixed batches, the loss terms, every gradient and every weight after each optimiser step agree, under
the peer's optimiser, parameter groups and learning-rate schedule.

- fast-reid 1.4.0 BoT (configs/bot_r50_market.yaml, bot_r50_ibn_a_market.yaml): its model's `losses()` (CE with
  label smoothing + TriHard on the pre-BNNeck feature), its `build_optimizer` / `build_lr_scheduler` from a cfg
  with the values of its Base-bagtricks.yml, driven by its own `SimpleTrainer` and `LRScheduler` /
  `LayerFreeze` hooks; a ResNet-18 variant with its other solver features (bias lr factor, bias and norm
  decay, heads lr factor, backbone freeze, delayed cosine to a floor).
- Torchreid 0.2.5: `ImageSoftmaxEngine` with OSNet x0.25 and its 512-d head (configs/osnet_market.yaml: AMSGrad,
  cosine), `ImageTripletEngine` with a ResNet-18 (Adam, single_step), each with its optimiser and scheduler
  builders; the engines' `forward_backward` makes the step and `update_lr` ends each epoch.

The schedules are shortened (warm-up, milestones and epochs of a few steps) so that ≥ 20 steps pass through
warm-up, decay and the start of the main schedule; the learning rates, factors and methods are the recipes'.

Precision and tolerances. The peer's optimiser is stepped by torch's fused kernel as reidkit's is (`fused`).
The OSNet softmax comparison runs in float32, where both sides run the same operations and agree bitwise on
this machine for all 24 steps (in float64 they do not: Torchreid's cross-entropy builds its smoothed targets
in float32 whatever the input's type); the others run in float64. In float32, where an operation is ordered
differently (pooling, the
distance matrix) float32 rounding (u = 2^-24 ≈ 6e-8) gives relative gradient differences of 1e-6..2e-5, and
Adam's first steps move every coordinate by ±lr whatever its gradient's size, so a coordinate whose gradient
is rounding noise moves the opposite way; a near-tie in hard mining then flips (measured: loss differences
of 1e-3 after 8 steps of the Torchreid triplet engine). In float64 (u ≈ 1.1e-16) rounding stays below 1e-12
over 24 steps; what remains is definitional: reidkit's Euclidean distance keeps a finite gradient at 0 with a
small epsilon that the peers' clamp(1e-12) does not add, a relative difference of ~1e-7 in the triplet
term (measured ≤ 1e-7 in the loss, ≤ 6e-7 of a tensor's scale in gradients, ≤ 6e-7 in weights). The
tolerances: losses 1e-6 relative, gradients 1e-5 of each tensor's largest entry, weights 1e-5 absolute —
10× above those, and far below what a changed recipe detail gives (a factor on a group's rate moves its
weights by ~lr per step, ≥ 1e-5 after one step: `test_a_changed_recipe_detail_is_caught`).

Layout. Both sides run NCHW here. reidkit's runs train channels-last, whose convolutions sum in another order;
through a random-init OSNet's batch-normalised layers that rounding is amplified (measured against float64 at
128×64: gradients off by up to 0.2 of a tensor's scale in either layout), so a bitwise float32 comparison needs
the peer's layout, and the layout is not a recipe detail.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from _peer_training import import_fastreid, import_torchreid
from reidkit.config import load_config
from reidkit.engine.optim import BackboneFreeze, build_optimizer
from reidkit.engine.schedule import schedule_from_config
from reidkit.engine.trainer import Trainer
from reidkit.losses.objective import build_objective
from reidkit.models.peers import FASTREID_RESNET, TORCHREID_OSNET, TORCHREID_RESNET, map_peer_keys
from reidkit.models.reid import build_model, model_kwargs

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
HEIGHT, WIDTH, P, K, CLASSES = 64, 32, 4, 2, 6
STEPS_PER_EPOCH = 4
# fast-reid 1.4.0's configs/Base-bagtricks.yml, solver and loss part (BIAS_LR_FACTOR, WEIGHT_DECAY_BIAS,
# WEIGHT_DECAY_NORM, HEADS_LR_FACTOR at their defaults: 1, 5e-4, 5e-4, 1)
BAGTRICKS = {"SOLVER.OPT": "Adam", "SOLVER.BASE_LR": 0.00035, "SOLVER.WEIGHT_DECAY": 0.0005,
             "SOLVER.WEIGHT_DECAY_NORM": 0.0005, "SOLVER.WEIGHT_DECAY_BIAS": 0.0005, "SOLVER.BIAS_LR_FACTOR": 1.0,
             "SOLVER.HEADS_LR_FACTOR": 1.0, "SOLVER.SCHED": "MultiStepLR", "SOLVER.GAMMA": 0.1,
             "SOLVER.WARMUP_FACTOR": 0.1, "SOLVER.WARMUP_METHOD": "linear", "SOLVER.MAX_EPOCH": 120,
             "SOLVER.STEPS": [40, 90], "SOLVER.WARMUP_ITERS": 2000, "SOLVER.DELAY_EPOCHS": 0,
             "SOLVER.FREEZE_ITERS": 0, "MODEL.LOSSES.CE.EPSILON": 0.1, "MODEL.LOSSES.TRI.MARGIN": 0.3,
             "MODEL.LOSSES.TRI.HARD_MINING": True, "MODEL.LOSSES.TRI.NORM_FEAT": False,
             "MODEL.BACKBONE.LAST_STRIDE": 1, "MODEL.HEADS.NECK_FEAT": "before"}
# the same recipe in reidkit's keys (checked against the config files)
BAGTRICKS_IN_REIDKIT = {"train.optimizer": "adam", "train.lr": 0.00035, "train.weight_decay": 0.0005,
                        "train.weight_decay_norm": None, "train.weight_decay_bias": None, "train.bias_lr_factor": 1.0,
                        "train.heads_lr_factor": 1.0, "train.scheduler": "step", "train.gamma": 0.1,
                        "train.warmup_factor": 0.1, "train.warmup_method": "linear", "train.epochs": 120,
                        "train.milestones": [40, 90], "train.warmup_iters": 2000, "train.warmup_epochs": 0,
                        "train.delay_epochs": 0, "train.freeze_iters": 0, "train.amsgrad": False,
                        "train.adam_beta1": 0.9, "train.adam_beta2": 0.999, "loss.id.label_smoothing": 0.1,
                        "loss.trihard.margin": 0.3, "loss.trihard.metric": "euclidean",
                        "loss.trihard.feature": "features", "model.last_stride": 1, "model.stem_pool": "ceil",
                        "model.head": "bnneck", "model.pooling": "avg"}
# a short schedule of fast-reid's shape: warm-up ends inside epoch 2, decay 2 epochs later, 6 epochs of 4 steps
SHORT_REIDKIT = ["train.warmup_iters=10", "train.milestones=[2]", "train.epochs=6"]
# for ResNet-50 (-IBN), 12 steps: warm-up ends inside epoch 1, decay at epoch 2
SHORTER_FASTREID = {"SOLVER.WARMUP_ITERS": 5, "SOLVER.STEPS": [1], "SOLVER.MAX_EPOCH": 3}
SHORTER_REIDKIT = ["train.warmup_iters=5", "train.milestones=[1]", "train.epochs=3"]


def value(config, key: str):
    section, *rest = key.split(".")
    node = getattr(config, section)
    for name in rest:
        node = getattr(node, name)
    return node


def batches(count: int, dtype: torch.dtype, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed P×K batches of random 0..255 pixels [P·K, 3, H, W] and their identities (P of CLASSES)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        pids = torch.randperm(CLASSES, generator=generator)[:P].repeat_interleave(K)
        out.append((torch.randint(0, 256, (P * K, 3, HEIGHT, WIDTH), generator=generator).to(dtype), pids))
    return out


def reidkit_parts(config, state: dict[str, torch.Tensor]):
    """reidkit's model, objective, optimiser and step runner built from `config` as the trainer builds them,
    initialised with `state` (reidkit's key names)."""
    dtype = next(iter(state.values())).dtype
    model = build_model(num_classes=CLASSES, **model_kwargs(config.model, config.data)).to(dtype)
    objective = build_objective(config.loss, CLASSES, model.feat_dim).to(dtype)
    model.freeze_unused(objective.input_keys.values())
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(key.endswith("num_batches_tracked") for key in missing), (missing, unexpected)
    optimizer = build_optimizer(model, objective, config.train)
    freeze = BackboneFreeze(model.backbone, config.train.freeze_iters) if config.train.freeze_iters else None
    # the peers' layout (NCHW): the same kernels on both sides (reidkit's runs train channels-last, which orders
    # the convolutions' sums differently: see the module docstring)
    trainer = Trainer(model.train(), objective, optimizer, torch.device("cpu"),
                      schedule=schedule_from_config(config.train), steps_per_epoch=STEPS_PER_EPOCH, freeze=freeze,
                      memory_format=torch.contiguous_format)
    return model, trainer


def assert_close(name: str, ours: torch.Tensor, theirs: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
    scale = theirs.abs().max().item()
    error = (ours - theirs).abs().max().item()
    assert error <= atol + rtol * scale, f"{name}: max |Δ| {error:.3g} > {atol:.3g} + {rtol:g}·{scale:.3g}"


class Comparison:
    """Pairs of (their parameter, our parameter, name) compared after each step: gradients within 1e-5 of their
    largest entry plus 1e-7 of the network's largest gradient (a tensor of tiny gradients, such as OSNet's channel
    gates, carries the rounding of the layers around it), weights within 1e-5 (see the module docstring).

    Parameters named in `before_batchnorm` (a bias followed by BatchNorm in training mode) have a gradient that is
    zero in exact arithmetic: Adam normalises their rounding noise into updates of size lr, and they change no
    output in training, so only their gradients are checked to be noise (below 1000 units of rounding of the
    largest gradient).
    """

    def __init__(self, theirs: torch.nn.Module, ours: torch.nn.Module, table: dict, extra: dict | None = None,
                 before_batchnorm: tuple[str, ...] = ()):
        self.before_batchnorm = before_batchnorm
        mapping = {key: ours_key for key, ours_key in zip(*_mapped_names(theirs, table))}
        mapping.update(extra or {})
        our_parameters = dict(ours.named_parameters())
        self.pairs = [(parameter, our_parameters[mapping[name]], name) for name, parameter in theirs.named_parameters()
                      if parameter.requires_grad and mapping.get(name) is not None]
        assert len(self.pairs) == sum(p.requires_grad for p in ours.parameters())  # every trained parameter

    def check(self, step: int) -> None:
        largest = max(theirs.grad.abs().max().item() for theirs, _, _ in self.pairs if theirs.grad is not None)
        for theirs, ours, name in self.pairs:
            if name in self.before_batchnorm:
                noise = 1e3 * torch.finfo(theirs.dtype).eps * largest
                assert max(theirs.grad.abs().max(), ours.grad.abs().max()) <= noise, (step, name)
                continue
            if theirs.grad is not None and ours.grad is not None:  # reidkit drops a frozen backbone's gradients
                assert_close(f"step {step} grad {name}", ours.grad, theirs.grad, atol=1e-7 * largest, rtol=1e-5)
            assert_close(f"step {step} weight {name}", ours.detach(), theirs.detach(), atol=1e-5)


def fused(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The peer's optimiser (its class, groups and settings) stepped by torch's fused kernel, as reidkit's is:
    torch's default (foreach) kernel rounds differently (≤ 1 ulp per update), and Adam turns such rounding noise
    on a gradient that is mathematically zero (a bias before BatchNorm) into an update of size lr."""
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, False
    return optimizer


def _mapped_names(module: torch.nn.Module, table: dict) -> tuple[list[str], list[str]]:
    state = {name: parameter for name, parameter in module.named_parameters()}
    mapped, _ = map_peer_keys(state, table)
    back = {id(tensor): name for name, tensor in mapped.items()}
    theirs = [name for name, parameter in module.named_parameters() if id(parameter) in back]
    return theirs, [back[id(state[name])] for name in theirs]


# fast-reid -------------------------------------------------------------------------------------------------------


def fastreid_cfg(fastreid, settings: dict, backbone_depth: str, with_ibn: bool):
    cfg = fastreid.get_cfg()
    for key, setting in settings.items():
        node = cfg
        *path, last = key.split(".")
        for name in path:
            node = getattr(node, name)
        setattr(node, last, setting)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.BACKBONE.DEPTH = backbone_depth
    cfg.MODEL.BACKBONE.FEAT_DIM = 512 if backbone_depth == "18x" else 2048
    cfg.MODEL.BACKBONE.WITH_IBN = with_ibn
    cfg.MODEL.HEADS.NUM_CLASSES = CLASSES
    cfg.MODEL.HEADS.WITH_BNNECK, cfg.MODEL.HEADS.POOL_LAYER, cfg.MODEL.HEADS.CLS_LAYER = True, "GlobalAvgPool", "Linear"
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "TripletLoss")
    return cfg


def run_fastreid_parity(cfg, config) -> None:
    """fast-reid's SimpleTrainer with its LRScheduler (and LayerFreeze) hooks trains on fixed batches; after each
    of its steps a hook runs reidkit's step on the same batch and compares."""
    fastreid = import_fastreid()
    torch.manual_seed(0)
    theirs = fastreid.build_model(cfg).double()  # float64: see the module docstring
    mapped, unmapped = map_peer_keys(theirs.state_dict(), FASTREID_RESNET)
    assert not unmapped
    steps = cfg.SOLVER.MAX_EPOCH * STEPS_PER_EPOCH
    model, trainer = reidkit_parts(config, mapped)
    comparison = Comparison(theirs, model, FASTREID_RESNET)
    data = batches(steps, torch.float64)
    mean, std = theirs.pixel_mean.clone(), theirs.pixel_std.clone()

    class Compare(fastreid.train_loop.HookBase):
        def after_step(self):
            step = self.trainer.iter
            images, pids = data[step]
            ours = trainer.run_step({"images": (images - mean) / std, "pids": pids}, step=step + 1)
            storage = self.trainer.storage
            for ours_value, key in zip(ours[1:].tolist(), ("loss_cls", "loss_triplet")):
                assert ours_value == pytest.approx(storage.history(key).latest(), rel=1e-6), (step, key)
            comparison.check(step)

    # contiguous=False: fast-reid's default flat parameter buffers (ContiguousParams) train nothing under torch >=
    # 2.0, whose zero_grad() sets the buffers' gradients to None, so its optimiser skips every parameter; the same
    # groups without the buffers
    optimizer, param_wrapper = fastreid.build_optimizer(cfg, theirs, contiguous=False)
    fused(optimizer)
    loader = iter([{"images": images.clone(), "targets": pids} for images, pids in data])
    loop = fastreid.train_loop.SimpleTrainer(theirs, loader, optimizer, param_wrapper)
    loop.grad_scaler, loop.warmup_iters, loop.delay_epochs = None, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.DELAY_EPOCHS
    hooks = [fastreid.hooks.LRScheduler(optimizer, fastreid.build_lr_scheduler(cfg, optimizer, STEPS_PER_EPOCH))]
    if cfg.SOLVER.FREEZE_ITERS:
        hooks.append(fastreid.hooks.LayerFreeze(theirs, cfg.MODEL.FREEZE_LAYERS, cfg.SOLVER.FREEZE_ITERS))
    loop.register_hooks([*hooks, Compare()])
    loop.train(0, cfg.SOLVER.MAX_EPOCH, STEPS_PER_EPOCH)
    assert loop.iter == steps


def bagtricks_config(name: str, overrides: list[str] = ()):
    config = load_config(CONFIGS / name, [])
    for key, expected in BAGTRICKS_IN_REIDKIT.items():  # the file is fast-reid's recipe
        assert value(config, key) == expected, key
    smoothing = 0.1 * CLASSES / (CLASSES - 1)  # fast-reid spreads ε over the C − 1 other classes, reidkit over C
    return load_config(CONFIGS / name, [f"data.height={HEIGHT}", f"data.width={WIDTH}", f"data.p={P}", f"data.k={K}",
                                        "model.weights=", "train.device=cpu", f"loss.id.label_smoothing={smoothing}",
                                        *overrides])


@pytest.mark.slow  # ResNet-50 (-IBN) in float64, 12 steps: minutes each on 2 cores
@pytest.mark.parametrize("name, with_ibn", [("bot_r50_market.yaml", False), ("bot_r50_ibn_a_market.yaml", True)])
def test_fastreid_bagtricks(name, with_ibn):
    fastreid = import_fastreid()
    cfg = fastreid_cfg(fastreid, {**BAGTRICKS, **SHORTER_FASTREID}, "50x", with_ibn)
    run_fastreid_parity(cfg, bagtricks_config(name, SHORTER_REIDKIT))


# fast-reid's other solver features on a ResNet-18: bias lr ×2 and no bias decay (Detectron's and BoT's), no decay
# on norm layers, heads at 10× the backbone's rate, backbone frozen for the first 6 steps, cosine after 2 delay
# epoch to a floor, exponential warm-up
SOLVER_FEATURES = {"SOLVER.BIAS_LR_FACTOR": 2.0, "SOLVER.WEIGHT_DECAY_BIAS": 0.0, "SOLVER.WEIGHT_DECAY_NORM": 0.0,
                   "SOLVER.HEADS_LR_FACTOR": 10.0, "SOLVER.FREEZE_ITERS": 6, "MODEL.FREEZE_LAYERS": ["backbone"],
                   "SOLVER.SCHED": "CosineAnnealingLR", "SOLVER.DELAY_EPOCHS": 2, "SOLVER.ETA_MIN_LR": 1e-5,
                   "SOLVER.WARMUP_METHOD": "exp", "SOLVER.WARMUP_ITERS": 5, "SOLVER.MAX_EPOCH": 6,
                   "SOLVER.BASE_LR": 1e-3}
SOLVER_FEATURES_IN_REIDKIT = ["model.backbone=resnet18", "train.bias_lr_factor=2.0", "train.weight_decay_bias=0.0",
                              "train.weight_decay_norm=0.0", "train.heads_lr_factor=10.0", "train.freeze_iters=6",
                              "train.scheduler=cosine", "train.delay_epochs=2", "train.eta_min_lr=1e-5",
                              "train.warmup_method=exp", "train.warmup_iters=5", "train.lr=1e-3"]


@pytest.mark.slow  # ResNet-18 in float64, 24 steps: ~1 min on 2 cores
def test_fastreid_solver_features_on_resnet18():
    fastreid = import_fastreid()
    cfg = fastreid_cfg(fastreid, {**BAGTRICKS, **SOLVER_FEATURES}, "18x", False)
    config = bagtricks_config("bot_r50_market.yaml", [*SHORT_REIDKIT, *SOLVER_FEATURES_IN_REIDKIT])
    run_fastreid_parity(cfg, config)


@pytest.mark.slow  # ResNet-18 in float64, until the first difference: 10 s to 1 min each on 2 cores
@pytest.mark.parametrize("detail", ["train.bias_lr_factor=1.0", "train.heads_lr_factor=1.0", "train.freeze_iters=0",
                                    "train.delay_epochs=0", "train.warmup_method=linear"])
def test_a_changed_recipe_detail_is_caught(detail):
    """The ResNet-18 comparison with one of reidkit's solver settings changed fails within its 24 steps."""
    fastreid = import_fastreid()
    cfg = fastreid_cfg(fastreid, {**BAGTRICKS, **SOLVER_FEATURES}, "18x", False)
    config = bagtricks_config("bot_r50_market.yaml", [*SHORT_REIDKIT, *SOLVER_FEATURES_IN_REIDKIT, detail])
    with pytest.raises(AssertionError):
        run_fastreid_parity(cfg, config)


# Torchreid -------------------------------------------------------------------------------------------------------


def run_torchreid_parity(engine_class, theirs, optimizer, scheduler, config, table, dtype, **engine_kwargs) -> None:
    """Torchreid's engine makes each step (`forward_backward`) and ends each epoch (`update_lr`); reidkit's step
    on the same batch follows and is compared. Torchreid's classifier (a biased Linear) is reidkit's
    `model.head: linear`."""
    mapped, unmapped = map_peer_keys(theirs.state_dict(), table)
    assert not unmapped
    mapped.update({"head.classifier.weight": theirs.classifier.weight.detach(),
                   "head.classifier.bias": theirs.classifier.bias.detach()})
    steps = config.train.epochs * STEPS_PER_EPOCH
    model, trainer = reidkit_parts(config, mapped)
    assert steps >= 20
    comparison = Comparison(theirs, model, table, {"classifier.weight": "head.classifier.weight",
                                                  "classifier.bias": "head.classifier.bias"},
                            before_batchnorm=tuple(name for name in ("fc.0.bias",) if hasattr(theirs, "fc")))
    data = batches(steps, dtype, seed=1)
    manager = types.SimpleNamespace(train_loader=None, test_loader=None, num_train_pids=CLASSES)
    engine = engine_class(manager, theirs, fused(optimizer), scheduler=scheduler, use_gpu=False, **engine_kwargs)
    theirs.train()
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=dtype).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], dtype=dtype).view(1, 3, 1, 1) * 255
    for step, (images, pids) in enumerate(data):
        inputs = (images - mean) / std
        summary = engine.forward_backward({"img": inputs.clone(), "pid": pids})
        ours = dict(zip(trainer.names, trainer.run_step({"images": inputs, "pids": pids}, step=step + 1).tolist()))
        for key, their_key in (("loss/id", "loss_x"), ("loss/trihard", "loss_t"), ("loss", "loss")):
            if their_key in summary:
                assert ours[key] == pytest.approx(summary[their_key], rel=1e-6), (step, key)
        comparison.check(step)
        if (step + 1) % STEPS_PER_EPOCH == 0:
            engine.update_lr()


def test_torchreid_softmax_osnet():
    """configs/osnet_market.yaml against Torchreid's OSNet recipe: AMSGrad lr 0.0015 (β2 0.99), cosine,
    label-smoothed softmax, the 512-d embedding and a biased classifier."""
    torchreid = import_torchreid()
    config = load_config(CONFIGS / "osnet_market.yaml", [])
    expected = {"train.optimizer": "adam", "train.amsgrad": True, "train.lr": 0.0015, "train.adam_beta1": 0.9,
                "train.adam_beta2": 0.99, "train.weight_decay": 5e-4, "train.scheduler": "cosine",
                "train.warmup_epochs": 0, "train.eta_min_lr": 0.0, "model.embedding_dim": 512, "model.head": "linear",
                "loss.id.label_smoothing": 0.1, "loss.trihard.weight": 0.0, "model.stem_pool": "pad"}
    for key, setting in expected.items():
        assert value(config, key) == setting, key
    config = load_config(CONFIGS / "osnet_market.yaml", [
        "model.backbone=osnet_x0_25", "model.weights=", "train.epochs=6", "train.device=cpu",
        f"data.height={HEIGHT}", f"data.width={WIDTH}", f"data.p={P}", f"data.k={K}"])
    torch.manual_seed(0)
    theirs = torchreid.models.build_model("osnet_x0_25", num_classes=CLASSES, loss="softmax", pretrained=False)
    optimizer = torchreid.optim.build_optimizer(theirs, optim="amsgrad", lr=0.0015, weight_decay=5e-4,
                                                adam_beta1=0.9, adam_beta2=0.99)
    scheduler = torchreid.optim.build_lr_scheduler(optimizer, lr_scheduler="cosine", max_epoch=config.train.epochs)
    run_torchreid_parity(torchreid.engine.ImageSoftmaxEngine, theirs, optimizer, scheduler, config, TORCHREID_OSNET,
                         torch.float32, label_smooth=True)


@pytest.mark.slow  # ResNet-18 in float64, 24 steps: ~1 min on 2 cores
def test_torchreid_triplet_resnet18():
    """Torchreid's ImageTripletEngine (margin 0.3, weights 1 and 1, label smoothing) with its resnet18, Adam at its
    defaults (lr 3e-4, β2 0.99) and single_step every 2 epochs."""
    torchreid = import_torchreid()
    config = load_config(CONFIGS / "tiny.yaml", [
        "model.backbone=resnet18", "model.last_stride=2", "model.head=linear", "model.weights=", "train.epochs=6",
        "train.optimizer=adam", "train.lr=3e-4", "train.adam_beta2=0.99", "train.weight_decay=5e-4",
        "train.warmup_epochs=0", "train.scheduler=single_step", "train.stepsize=2", "train.gamma=0.1",
        "loss.id.weight=1", "loss.id.label_smoothing=0.1", "loss.trihard.weight=1", "loss.trihard.margin=0.3",
        "loss.trihard.feature=features", "train.device=cpu", f"data.height={HEIGHT}", f"data.width={WIDTH}",
        f"data.p={P}", f"data.k={K}"])
    torch.manual_seed(0)
    theirs = torchreid.models.build_model("resnet18", num_classes=CLASSES, loss="triplet", pretrained=False)
    theirs.double()  # float64: see the module docstring
    optimizer = torchreid.optim.build_optimizer(theirs, optim="adam", lr=3e-4, weight_decay=5e-4)
    scheduler = torchreid.optim.build_lr_scheduler(optimizer, lr_scheduler="single_step", stepsize=2, gamma=0.1)
    run_torchreid_parity(torchreid.engine.ImageTripletEngine, theirs, optimizer, scheduler, config, TORCHREID_RESNET,
                         torch.float64, margin=0.3, weight_t=1, weight_x=1, label_smooth=True)
