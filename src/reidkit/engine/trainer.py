"""The training loop: PK batches → model → weighted objective → optimiser, with logging, evaluation,
checkpoints and exact resume.

`Trainer.run_step` is one optimisation step and the single place that touches autocast; `train` runs a
`TrainingRun`, which wires a whole run from a Config into a run folder (`config.yaml`, `metrics.jsonl`,
`checkpoints/`, `model.safetensors`, `metrics.json`, `plots/`, `ranked/`; its data comes from
`reidkit.engine.training_data`, its files are written by `reidkit.engine.run_writer`). A run resumed from its
last checkpoint continues bitwise identically on CPU: the checkpoint holds the model, objective, optimiser
(with each parameter group's base rate), random states and the position in the epoch, the learning rate is a
function of the position, and every image's augmentation is seeded by its position.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from reidkit import distributed
from reidkit.config import Config, resolve_protocol, save_config
from reidkit.config.differences import config_differences
from reidkit.data.attributes import attribute_classes, load_attributes
from reidkit.data.build import test_sources, train_sources
from reidkit.devices import autocast_context, resolve_device, uses_amp
from reidkit.engine.activation import activation_of_files
from reidkit.engine.checkpoint import CheckpointManager, capture_rng_state, load_into, restore_rng_state, save_weights
from reidkit.engine.evaluation import Evaluation, describe_metrics, eval_record, evaluate_model
from reidkit.engine.optim import BackboneFreeze, build_optimizer
from reidkit.engine.run_writer import MetricsLog, check_writable, finish_run, write_baselines
from reidkit.engine.saved_runs import model_metadata
from reidkit.engine.schedule import Schedule, schedule_from_config, set_learning_rates
from reidkit.engine.teacher import load_teacher, with_teacher
from reidkit.engine.tensorboard_events import TensorBoardEvents
from reidkit.engine.training_data import (cached_test_images, load_training_data, training_batches,
                                          training_set_fingerprint)
from reidkit.errors import ConfigError, ReidkitError
from reidkit.losses.objective import Objective, build_objective
from reidkit.losses.sharded import ShardedLinearCrossEntropy, gather_sharded_state, load_sharded_state
from reidkit.models.reid import build_model, model_kwargs
from reidkit.models.sync_batchnorm import convert_sync_batchnorm


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class StepReport:
    """What `Trainer.read` found since the previous read (host values).

    `last`: the total and each term of the newest step; `means`: their means over the finite steps since
    `Trainer.start_epoch`; `finite_steps`: those steps; `skipped_steps`: non-finite steps since the previous
    read (their updates were skipped); `first_nonfinite`: (global step, values) of the first of them.
    """

    last: dict[str, float]
    means: dict[str, float]
    finite_steps: int
    skipped_steps: int
    first_nonfinite: tuple[int, dict[str, float]] | None


class Trainer:
    """Runs optimisation steps of `model` under `objective`; knows nothing about data sets or files.

    A step never waits for the device: the loss values stay on it, and so does the non-finite guard. A step
    whose total or any term is NaN or infinite (on any rank) makes no update: the fused optimiser gets the
    flag as `found_inf`, as GradScaler hands it, and skips the parameters and its own state on the device.
    Such steps are counted on the device; `read` (every `train.log_every` steps, before checkpoints and at
    epoch ends) brings the values and counts to the host.

    `model` may be wrapped in DistributedDataParallel; the objective's own replicated parameters (class
    weights, centres) have their gradients averaged over ranks like DDP does for the model, except a
    class-sharded classifier, whose rows are not replicated.

    With a `schedule`, each step first sets the optimiser's rates for its number (`steps_per_epoch` steps make
    an epoch); with a `freeze`, the backbone trains only after the freeze's first steps. Image batches go in
    `memory_format`, which should be the model's (`TrainingRun` keeps it channels-last).

    Raises:
        ValueError: `optimizer` is not fused (it could not skip a non-finite step on the device).
    """

    def __init__(self, model: nn.Module, objective: Objective, optimizer: torch.optim.Optimizer,
                 device: torch.device, amp: bool = False, camids: bool = False, schedule: Schedule | None = None,
                 steps_per_epoch: int = 1, freeze: BackboneFreeze | None = None,
                 memory_format: torch.memory_format = torch.channels_last) -> None:
        if not all(group.get("fused") for group in optimizer.param_groups):
            raise ValueError("the trainer needs a fused optimiser (reidkit.engine.optim.build_optimizer) to skip "
                             "non-finite steps on the device")
        self.model, self.objective, self.optimizer = model, objective, optimizer
        self.device, self.amp = device, amp
        self.camids = camids  # the model takes the batch's camera ids (a camera embedding)
        self.schedule, self.steps_per_epoch, self.freeze = schedule, steps_per_epoch, freeze
        self.memory_format = memory_format
        sharded = [m for m in objective.modules() if isinstance(m, ShardedLinearCrossEntropy)]
        own = {id(p) for m in sharded for p in m.parameters()}
        self.replicated = [p for p in objective.parameters() if id(p) not in own]
        self.names = ["loss", *(f"loss/{name}" for name in objective.terms)]
        self._last = torch.zeros(len(self.names), device=device)
        self.start_epoch()
        self._clear_nonfinite()

    def start_epoch(self) -> None:
        """Start the sums behind `StepReport.means` afresh."""
        self._sums = torch.zeros(len(self.names), dtype=torch.float64, device=self.device)
        self._finite_steps = torch.zeros((), dtype=torch.int64, device=self.device)

    def _clear_nonfinite(self) -> None:
        self._skipped = torch.zeros((), dtype=torch.int64, device=self.device)
        self._first_bad_step = torch.full((), -1, dtype=torch.int64, device=self.device)
        self._first_bad_values = torch.zeros(len(self.names), device=self.device)

    def run_step(self, batch: dict, step: int = 0) -> torch.Tensor:
        """One forward/backward/update on a batch dict (`step`: its 1-based global number, for the schedule,
        the freeze and reports).

        Returns:
            `[1 + T]` float32 on the device: the total and each unweighted term, means over ranks.
        """
        done = step - 1  # steps before this one
        if self.schedule is not None:
            set_learning_rates(self.optimizer, self.schedule, done, self.steps_per_epoch)
        if self.freeze is not None:
            self.freeze.before_forward(done)
        images = batch["images"].to(self.device, non_blocking=True)
        labels = batch["pids"].to(self.device, non_blocking=True)
        if images.dim() == 4:
            images = images.contiguous(memory_format=self.memory_format)
        camids = (batch["camids"].to(self.device, non_blocking=True),) if self.camids else ()
        # tracklets [B, T, 3, H, W] of several lengths (data.frame_sampling=all) come with their frame mask
        mask = {"frame_mask": batch["frame_mask"].to(self.device)} if "frame_mask" in batch else {}
        with autocast_context(self.device, self.amp):
            outputs = self.model(images, *camids, **mask)
            total, terms = self.objective(outputs, labels)
        values = torch.stack([total.detach(), *(value.detach() for value in terms.values())]).float()
        values = distributed.mean_over_ranks(values)  # every rank takes the same skip decision
        finite = torch.isfinite(values).all()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        distributed.average_gradients(self.replicated)
        if self.freeze is not None:
            self.freeze.drop_gradients(done)
        self.optimizer.found_inf = (~finite).float()  # read by the fused kernels: no update where 1
        self.optimizer.step()
        self._last = values
        self._sums += torch.where(finite, values.double(), 0.0)
        self._finite_steps += finite
        first = (~finite) & (self._first_bad_step < 0)
        self._first_bad_step = torch.where(first, step, self._first_bad_step)
        self._first_bad_values = torch.where(first, values, self._first_bad_values)
        self._skipped += ~finite
        return values

    def read(self) -> StepReport:
        """Bring the step values to the host (waits for the device) and clear the non-finite record."""
        last, sums, finite_steps, skipped, first_step, first_values = (
            self._last.tolist(), self._sums.tolist(), int(self._finite_steps), int(self._skipped),
            int(self._first_bad_step), self._first_bad_values.tolist())
        self._clear_nonfinite()
        return StepReport(dict(zip(self.names, last)),
                          {name: total / max(finite_steps, 1) for name, total in zip(self.names, sums)},
                          finite_steps, skipped,
                          (first_step, dict(zip(self.names, first_values))) if first_step >= 0 else None)


@dataclass
class Position:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 1  # the epoch in progress
    step_in_epoch: int = 0  # batches of `epoch` already done
    global_step: int = 0
    best_map: float = -1.0
    skipped_images: int = 0
    skipped_batches: int = 0


def _log_line(epoch: int, epochs: int, values: dict[str, float], seconds: float, images: int) -> str:
    terms = "  ".join(f"{name}={value:.4f}" for name, value in values.items())
    return f"epoch {epoch}/{epochs}  {terms}  {images / max(seconds, 1e-9):.0f} img/s"


def train(config: Config, run_dir: str | Path, progress: bool = True, log=print, resume: bool = False,
          force: bool = False) -> dict:
    """Train a model as `config` says, writing the run folder; returns the final metrics summary.

    Args:
        resume: continue from the run folder's last checkpoint.
        force: with `resume`, accept a config that differs from the checkpoint's.

    Raises:
        ReidkitError: bad data, config, an unwritable folder, a diverging loss or a refused resume,
            with a message naming the fix.
    """
    if config.loss.cluster_memory.weight > 0:
        raise ConfigError("loss.cluster_memory trains on pseudo identities, which only `reidkit adapt` makes; set "
                          "loss.cluster_memory.weight=0 or adapt a trained run with `reidkit adapt --source RUN`")
    device = resolve_device(config.train.device)
    with distributed.process_group_from_environment(device, config.train.dist_timeout_minutes):
        return _train(config, Path(run_dir), device, progress, log, resume, force)


def _train(config: Config, run_dir: Path, device: torch.device, progress: bool, log, resume: bool,
           force: bool) -> dict:
    if not distributed.is_main_process():  # rank 0 logs, shows progress and writes the run folder
        progress, log = False, lambda *args: None
    run = TrainingRun(config, run_dir, device, progress, log, resume, force)
    while run.position.epoch <= config.train.epochs:
        run.train_epoch()
    return run.finish()


class TrainingRun:
    """One run of `train`, from its run folder and config: set up (or restored from the last checkpoint) on
    construction, then `train_epoch` until `position.epoch` passes `train.epochs`, then `finish`.

    Every rank builds the same run; rank 0 alone logs, evaluates and writes the run folder, while the others
    wait outside any collective.
    """

    def __init__(self, config: Config, run_dir: Path, device: torch.device, progress: bool, log, resume: bool,
                 force: bool) -> None:
        self.config, self.run_dir, self.device, self.progress, self.log = config, run_dir, device, progress, log
        self.main_process = distributed.is_main_process()
        # a teacher that does not load stops the run before its folder, data or model are touched
        self.teacher = load_teacher(config.model.teacher, device) if config.model.teacher else None
        restored = self._open_run_folder(resume, force)
        distributed.barrier()
        seed_everything(config.train.seed)
        self.amp = uses_amp(config.train, device)
        training, self.test_sets = load_training_data(config, progress, log)
        self.train_set = training_set_fingerprint(training.train)
        if restored and restored[1].get("train_set", self.train_set) != self.train_set and not force:
            raise ConfigError(f"the training set differs from the one the checkpoint was trained on "
                              f"({len(training.train)} images now; file names, identities or cameras changed), so "
                              "the resumed run would not continue the same training; restore the data, or pass "
                              "--force to resume anyway")
        self.loader = training_batches(config, training, device, progress, log)
        self.test_images = [cached_test_images(config, test_set, device, progress, log) for test_set in self.test_sets]
        self.test_attributes = [load_attributes(source.dataset, source.root, source.attributes)
                                if config.loss.attribute.weight else None for source in test_sources(config)[0]]
        self._build_model(training)
        self.position = Position()
        self.final: list[Evaluation] | None = None
        self.evaluated_last_epoch = False
        if restored:
            self._restore(*restored)
        elif config.eval.baselines:
            with distributed.wait_for_main_process():  # the other ranks wait for rank 0's baselines
                untrained = self.evaluate(0, 0)
                if self.main_process:
                    write_baselines(run_dir, self.test_sets[0], config, untrained[0].metrics, log)

    def _open_run_folder(self, resume: bool, force: bool):
        """Check the folder, open its checkpoints and metrics log; (weights, state) of the last checkpoint when
        resuming, else None."""
        config, run_dir = self.config, self.run_dir
        check_writable(run_dir)
        self.checkpoints = CheckpointManager(run_dir / "checkpoints", config.train.keep_checkpoints)
        restored = self.checkpoints.load_last() if resume else None
        if resume and restored is None:
            raise ReidkitError(f"nothing to resume in {run_dir}: no checkpoints/last.json; train without --resume")
        if not resume and (run_dir / "checkpoints" / "last.json").is_file():
            raise ReidkitError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")
        if restored:
            differences = config_differences(restored[1]["config"], config.to_dict())
            if differences and not force:
                raise ConfigError("the config differs from the checkpoint's: " + "; ".join(differences)
                                  + " (pass --force to resume anyway)")
        self.events = TensorBoardEvents(run_dir) if self.main_process and config.train.tensorboard else None
        self.metrics_log = MetricsLog(run_dir / "metrics.jsonl", self.events) if self.main_process else None
        if self.main_process:
            save_config(config, run_dir / "config.yaml")
            if restored:
                self.metrics_log.truncate_after(restored[1]["position"]["global_step"])
            else:
                self.metrics_log.path.unlink(missing_ok=True)
        return restored

    def _build_model(self, training) -> None:
        """The model, objective, optimiser (its parameter groups) and step runner (with the schedule)."""
        config, device, train_cfg = self.config, self.device, self.config.train
        table, classes = None, None
        if config.loss.attribute.weight:
            part_attributes = [load_attributes(source.dataset, source.root, source.attributes)
                               for source in train_sources(config.data)[0]]
            table = training.attribute_table(part_attributes)
            classes = attribute_classes({(i, pid): codes for i, rows in enumerate(part_attributes)
                                         for pid, codes in rows.items()})
        splits = [training.train, *(split for test_set in self.test_sets for split in (test_set.query, test_set.gallery))]
        cameras = 1 + max(max(s[2] for s in split) for split in splits if split) if config.model.camera_embedding else 0
        model = build_model(num_classes=training.num_train_pids, pair_head=config.loss.verification.weight > 0,
                            attributes=classes, cameras=cameras, **model_kwargs(config.model, config.data)).to(device)
        # channels-last on every device: on a CPU oneDNN trains OSNet x0.25 1.6× faster so, ResNet-18 as fast
        # (benchmarks/bench_train.py, its NCHW row); on a GPU it is what cuDNN's fast kernels want
        model = model.to(memory_format=torch.channels_last)
        self.objective = build_objective(config.loss, training.num_train_pids, model.feat_dim, table,
                                         model.pair_head).to(device)
        # Head layers whose outputs no loss term reads (the classifier without an ID loss or with the sharded
        # one, the BNNeck when only pre-BN features are trained) get no gradient. They are frozen rather than
        # left to DDP's find_unused_parameters, which would walk the autograd graph after every step; the
        # optimiser skipped them anyway (no gradient), so one process trains exactly as before.
        frozen = model.freeze_unused(self.objective.input_keys.values())
        if frozen:
            self.log(f"not trained (no loss term reads their outputs): {', '.join(frozen)}")
        if config.model.sync_bn and distributed.world_size() > 1:
            model = convert_sync_batchnorm(model, device)
        self.model = model
        self.optimizer = build_optimizer(model, self.objective, train_cfg)
        forward_model = model
        if distributed.is_distributed():
            forward_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        if train_cfg.compile:  # the training forward only; evaluation runs `model` as it is
            forward_model = torch.compile(forward_model)
        camids = model.uses_camids  # the batch's camera ids go to the model (a camera embedding)
        if self.teacher is not None:  # distillation: the frozen teacher's outputs join the student's
            forward_model = with_teacher(forward_model, self.teacher, config, training.num_train_pids)
            camids = camids or forward_model.teacher.uses_camids
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # training shapes are fixed: pick the fastest kernels once
        freeze = BackboneFreeze(model.backbone, train_cfg.freeze_iters) if train_cfg.freeze_iters else None
        self.trainer = Trainer(forward_model, self.objective, self.optimizer, device, self.amp,
                               camids=camids, schedule=schedule_from_config(train_cfg), freeze=freeze)
        self.metadata = model_metadata(model, config)

    def _restore(self, weights, state: dict) -> None:
        """Continue from a checkpoint: model, objective, optimiser, position and random states (the learning
        rate is a function of the position: `reidkit.engine.schedule`)."""
        load_into(self.model, weights, self.checkpoints.directory)
        try:
            load_sharded_state(self.objective, self.optimizer, state["objective"], state["optimizer"])
        except (ValueError, RuntimeError, KeyError) as error:  # another loss or head set, or an older layout
            raise ReidkitError(f"the checkpoint's loss or optimiser state does not fit this run ({error}); "
                               "resume with the config the run was trained with, or train a new run") from error
        self.position = Position(**state["position"])
        restore_rng_state(state["rng"])
        self.log(f"resumed from epoch {self.position.epoch}, step {self.position.global_step}")

    def evaluate(self, epoch: int, step: int) -> list[Evaluation] | None:
        """Every rank extracts its shard with rank 0's buffers; rank 0 gets the evaluation of each test set, the
        others None."""
        config = self.config
        distributed.broadcast_buffers(self.model)
        evaluations = [evaluate_model(self.model, test_set, config.eval, config.data.height, config.data.width,
                                      self.device, workers=config.data.workers, amp=self.amp, progress=self.progress,
                                      pair_feature=config.loss.verification.feature, attributes=attributes,
                                      protocol=resolve_protocol(config, source), cached=images,
                                      interpolation=config.data.interpolation, seq_len=config.data.seq_len)
                       for test_set, attributes, source, images in zip(self.test_sets, self.test_attributes,
                                                                       test_sources(config)[0], self.test_images)]
        if not self.main_process:
            return None
        several = len(self.test_sets) > 1
        for test_set, evaluation in zip(self.test_sets, evaluations):
            named = {"test_set": test_set.name} if several else {}
            self.metrics_log.write({"kind": "eval", "epoch": epoch, "step": step, **named,
                                    **eval_record(evaluation.metrics)})
            where = f" on {test_set.name}" if several else ""
            self.log(f"eval epoch {epoch}{where}: " + describe_metrics(evaluation.metrics))
        return evaluations

    def checkpoint(self, name: str) -> None:
        """Called on every rank: the class-sharded classifier is gathered (a collective); rank 0 writes."""
        objective_state, optimizer_state = gather_sharded_state(self.objective, self.optimizer)
        if not self.main_process:
            return
        self.checkpoints.save(name, self.model, self.metadata, {
            "position": asdict(self.position), "config": self.config.to_dict(), "rng": capture_rng_state(),
            "train_set": self.train_set, "objective": objective_state, "optimizer": optimizer_state,
            **self.extra_state()})

    def extra_state(self) -> dict:
        """What a subclass adds to every checkpoint's training state (plain values and tensors)."""
        return {}

    def read_steps(self, epoch: int) -> StepReport:
        """The trainer's step values on the host; counts skipped steps, and stops at a non-finite one if
        train.nonfinite=stop (its update was skipped; updates after it, until this read, were made)."""
        report = self.trainer.read()
        self.position.skipped_batches += report.skipped_steps
        if report.first_nonfinite and self.config.train.nonfinite == "stop":
            step, values = report.first_nonfinite
            bad = ", ".join(f"{name}={value}" for name, value in values.items() if not math.isfinite(value))
            raise ReidkitError(f"non-finite loss at epoch {epoch}, step {step}: {bad} (found at step "
                               f"{self.position.global_step}: the loss is read every train.log_every steps); the "
                               f"last checkpoint in {self.checkpoints.directory} is intact. Lower train.lr, check "
                               "the data, or set train.nonfinite=skip")
        return report

    def train_epoch(self) -> None:
        """Train the epoch in progress from where it stands, then evaluate and checkpoint as configured."""
        train_cfg, position, loader = self.config.train, self.position, self.loader
        epoch = position.epoch
        loader.batch_sampler.set_epoch(epoch)
        # the schedule counts epochs of this length (read before skipping; an adaptation round's loader has its own)
        steps = self.trainer.steps_per_epoch = len(loader)
        loader.batch_sampler.skip(position.step_in_epoch)
        start = time.perf_counter()
        self.trainer.start_epoch()
        bar = tqdm(loader, desc=f"epoch {epoch}/{train_cfg.epochs}", unit="batch", leave=False,
                   disable=None if self.progress else True)
        for batch in bar:
            position.skipped_images += batch.pop("skipped")
            position.step_in_epoch += 1
            position.global_step += 1
            if "images" in batch:  # else every image of the batch was unreadable
                done = epoch - 1 + (position.step_in_epoch - 1) / steps  # epochs before this step
                self.objective.set_progress(done / train_cfg.epochs)
                self.trainer.run_step(batch, step=(epoch - 1) * steps + position.step_in_epoch)
            else:
                position.skipped_batches += 1
            checkpoint_now = bool(train_cfg.checkpoint_every_steps) and \
                position.global_step % train_cfg.checkpoint_every_steps == 0
            if position.global_step % train_cfg.log_every == 0 or checkpoint_now:
                report = self.read_steps(epoch)
                bar.set_postfix({name.removeprefix("loss/"): f"{v:.3f}" for name, v in report.last.items()})
                if self.main_process and position.global_step % train_cfg.log_every == 0 and "images" in batch:
                    self.metrics_log.write({"kind": "train", "epoch": epoch, "step": position.global_step,
                                            "lr": self.optimizer.param_groups[0]["lr"], **report.last})
            if checkpoint_now:
                with distributed.wait_for_main_process():
                    self.checkpoint(f"step_{position.global_step:08d}")
        report = self.read_steps(epoch)
        self.log(_log_line(epoch, train_cfg.epochs, report.means, time.perf_counter() - start,
                           report.finite_steps * self.config.data.p * self.config.data.k))
        position.epoch, position.step_in_epoch = epoch + 1, 0
        # rank 0 evaluates and writes while the other ranks wait outside any collective (no timeout)
        with distributed.wait_for_main_process():
            if epoch % train_cfg.eval_every == 0 or epoch == train_cfg.epochs:
                self.final = self.evaluate(epoch, position.global_step)
                self.evaluated_last_epoch = epoch == train_cfg.epochs
                if self.main_process and self.final[0].metrics["mAP"] > position.best_map:  # the first set decides
                    position.best_map = self.final[0].metrics["mAP"]
                    self.checkpoints.save_best(self.model, self.metadata,
                                               {"epoch": epoch, **eval_record(self.final[0].metrics)})
            if epoch % train_cfg.checkpoint_every == 0 or epoch == train_cfg.epochs:
                self.checkpoint(f"epoch_{epoch:03d}")

    def finish(self) -> dict:
        """Write the final weights, metrics and pictures (rank 0); returns the final metrics ({} on other ranks)."""
        position, config = self.position, self.config
        if position.skipped_images or position.skipped_batches:
            self.log(f"skipped {position.skipped_images} unreadable images and {position.skipped_batches} batches")
        if not self.evaluated_last_epoch:  # resumed from the last epoch's checkpoint: nothing was trained here
            self.final = self.evaluate(config.train.epochs, position.global_step)
        if not self.main_process:
            return {}
        if self.events is not None:
            self.events.close()
        save_weights(self.model, self.run_dir / "model.safetensors", self.metadata)
        self.final[0].metrics.update(skipped_images=position.skipped_images, skipped_batches=position.skipped_batches)
        activation = activation_of_files(self.model, config.data.height, config.data.width, self.device,
                                         config.data.interpolation) \
            if config.eval.activation_maps else None
        return finish_run(self.run_dir, self.final, self.test_sets, config, activation)
