"""The training loop: PK batches → model → weighted objective → optimiser, with logging and evaluation.

`Trainer.run_step` is one optimisation step and the single place that touches autocast; `fit` is the
epoch loop (schedule, checkpoints, evaluation). `train` wires a whole run from a Config into a run folder:
`config.yaml`, `metrics.jsonl`, `checkpoints/epoch_NNN.safetensors`, `model.safetensors`, `metrics.json`,
`plots/`, `ranked/`.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from reidkit.config import Config, save_config
from reidkit.data.attributes import attribute_classes, attribute_table, load_attributes
from reidkit.data.build import build_dataset
from reidkit.data.datasets import ReidDataset
from reidkit.data.loading import build_train_loader
from reidkit.data.transforms import build_train_transform
from reidkit.engine.checkpoint import save_weights
from reidkit.engine.evaluator import autocast_context, evaluate_model, write_pictures
from reidkit.engine.optim import build_optimizer, build_scheduler
from reidkit.errors import ConfigError, ReidkitError
from reidkit.losses.objective import METRIC_TERMS, Objective, build_objective
from reidkit.engine.runs import model_metadata
from reidkit.models.reid import build_model, model_kwargs


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """"auto" → CUDA when available, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ReidkitError(f"train.device={name} but CUDA is not available; use train.device=cpu")
    return device


def check_batch_config(config: Config) -> None:
    """Refuse a batch layout that silently breaks the configured loss terms.

    Raises:
        ConfigError: a metric-learning term with fewer than 2 images per identity (no positive pair).
    """
    metric_terms = [name for name in METRIC_TERMS if getattr(config.loss, name).weight > 0]
    if metric_terms and config.data.k < 2:
        raise ConfigError(f"loss terms {', '.join(metric_terms)} compare images of the same identity, but "
                          f"data.k={config.data.k} gives each identity one image per batch; set data.k >= 2 "
                          "or give those terms weight 0")


class MetricsLog:
    """Append-only JSON lines file (`metrics.jsonl`): one record per logged step or evaluation."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


class Trainer:
    """Runs optimisation steps of `model` under `objective`; knows nothing about data sets or files."""

    def __init__(self, model: nn.Module, objective: Objective, optimizer: torch.optim.Optimizer,
                 device: torch.device, amp: bool = False) -> None:
        self.model, self.objective, self.optimizer = model, objective, optimizer
        self.device, self.amp = device, amp

    def run_step(self, batch: dict) -> dict[str, float]:
        """One forward/backward/update on a batch dict; returns the total and every term as floats.

        Raises:
            ReidkitError: the loss is NaN or infinite (names the offending term).
        """
        images = batch["images"].to(self.device, non_blocking=True)
        labels = batch["pids"].to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_context(self.device, self.amp):
            outputs = self.model(images)
            total, terms = self.objective(outputs, labels)
        values = {"loss": total.item(), **{f"loss/{name}": value.item() for name, value in terms.items()}}
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            raise ReidkitError(f"non-finite loss ({', '.join(f'{n}={values[n]}' for n in bad)}); "
                               "lower train.lr or check the inputs")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return values


def eval_record(metrics: dict) -> dict:
    """The scalars of a metrics summary for metrics.jsonl (the CMC curve stays in metrics.json)."""
    record = {k: v for k, v in metrics.items() if k in ("rank1", "rank5", "rank10", "mAP", "mINP",
                                                         "num_valid_queries", "attribute_accuracy")}
    if "verification_rescored" in metrics:
        record.update({f"verified_{k}": metrics["verification_rescored"][k] for k in ("rank1", "mAP", "mINP")})
    return record


def describe_metrics(metrics: dict) -> str:
    """One line: rank-1, mAP, mINP, and what pair-head re-scoring and attribute heads give when present."""
    text = f"rank-1 {metrics['rank1']:.2%}  mAP {metrics['mAP']:.2%}  mINP {metrics['mINP']:.2%}"
    if "verification_rescored" in metrics:
        verified = metrics["verification_rescored"]
        text += f"  | top-k re-scored by the pair head: rank-1 {verified['rank1']:.2%}  mAP {verified['mAP']:.2%}"
    if metrics.get("attribute_accuracy"):
        accuracy = metrics["attribute_accuracy"]
        text += f"  | mean attribute accuracy {sum(accuracy.values()) / len(accuracy):.2%}"
    return text


def _log_line(epoch: int, epochs: int, values: dict[str, float], seconds: float, images: int) -> str:
    terms = "  ".join(f"{name}={value:.4f}" for name, value in values.items())
    return f"epoch {epoch}/{epochs}  {terms}  {images / max(seconds, 1e-9):.0f} img/s"


def train(config: Config, run_dir: str | Path, progress: bool = True, log=print) -> dict:
    """Train a model as `config` says, writing the run folder; returns the final metrics summary.

    Raises:
        ReidkitError: bad data, config or a diverging loss, with a message naming the fix.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    metrics_log = MetricsLog(run_dir / "metrics.jsonl")
    seed_everything(config.train.seed)
    device = resolve_device(config.train.device)
    amp = config.train.amp and device.type == "cuda"

    dataset = build_dataset(config.data, progress=progress)
    log(dataset.summary())
    check_batch_config(config)
    data, train_cfg = config.data, config.train
    loader = build_train_loader(
        dataset.train, build_train_transform(data.height, data.width, flip_prob=data.flip_prob, pad=data.pad,
                                             erasing_prob=data.erasing_prob),
        p=data.p, k=data.k, seed=train_cfg.seed, workers=data.workers)
    attributes = load_attributes(data.dataset, data.root, data.attributes) if config.loss.attribute.weight else None
    classes = attribute_classes(attributes) if attributes else None
    model = build_model(num_classes=dataset.num_train_pids, attributes=classes,
                        pair_head=config.loss.verification.weight > 0, **model_kwargs(config.model)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    table = attribute_table(attributes, dataset.train_raw_pids) if attributes else None
    objective = build_objective(config.loss, dataset.num_train_pids, model.feat_dim, table,
                                model.pair_head).to(device)
    optimizer = build_optimizer(nn.ModuleList([model, objective]), train_cfg.optimizer, train_cfg.lr, train_cfg.weight_decay,
                                train_cfg.momentum)
    scheduler = build_scheduler(optimizer, train_cfg.epochs, train_cfg.warmup_epochs, train_cfg.warmup_factor,
                                train_cfg.scheduler, train_cfg.milestones, train_cfg.gamma)
    trainer = Trainer(model, objective, optimizer, device, amp)
    metadata = model_metadata(model, config)

    def evaluate(epoch: int) -> tuple[dict, np.ndarray]:
        metrics, distmat = evaluate_model(model, dataset, config.eval, data.height, data.width, device,
                                          workers=data.workers, amp=amp, progress=progress,
                                          pair_feature=config.loss.verification.feature, attributes=attributes)
        metrics_log.write({"kind": "eval", "epoch": epoch, **eval_record(metrics)})
        log(f"eval epoch {epoch}: " + describe_metrics(metrics))
        return metrics, distmat

    if config.eval.baselines:
        write_baselines(run_dir, dataset, config, evaluate(0)[0], log)

    step = 0
    for epoch in range(1, train_cfg.epochs + 1):
        loader.batch_sampler.set_epoch(epoch)
        start, sums, count = time.perf_counter(), {}, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{train_cfg.epochs}", unit="batch", leave=False,
                   disable=None if progress else True)
        for batch in bar:
            values = trainer.run_step(batch)
            step += 1
            count += 1
            sums = {name: sums.get(name, 0.0) + value for name, value in values.items()}
            bar.set_postfix({name.removeprefix("loss/"): f"{v:.3f}" for name, v in values.items()})
            if step % train_cfg.log_every == 0:
                metrics_log.write({"kind": "train", "epoch": epoch, "step": step,
                                   "lr": optimizer.param_groups[0]["lr"], **values})
        scheduler.step()
        means = {name: total / max(count, 1) for name, total in sums.items()}
        log(_log_line(epoch, train_cfg.epochs, means, time.perf_counter() - start, count * data.p * data.k))
        if epoch % train_cfg.checkpoint_every == 0 or epoch == train_cfg.epochs:
            save_weights(model, run_dir / "checkpoints" / f"epoch_{epoch:03d}.safetensors", metadata)
        if epoch % train_cfg.eval_every == 0 and epoch != train_cfg.epochs:
            evaluate(epoch)

    save_weights(model, run_dir / "model.safetensors", metadata)
    metrics, distmat = evaluate(train_cfg.epochs)
    finish_run(run_dir, metrics, distmat, dataset, config)
    return metrics


def finish_run(run_dir: Path, metrics: dict, distmat: np.ndarray, dataset: ReidDataset, config: Config) -> None:
    """Write `metrics.json`, the CMC curve, training curves and ranked lists of a finished run."""
    from reidkit.viz.curves import plot_training_curves

    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_pictures(run_dir, metrics, distmat, dataset, config.eval)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    plot_training_curves(records, run_dir / "plots" / "training_curves.png")


def write_baselines(run_dir: Path, dataset: ReidDataset, config: Config, untrained: dict, log=print) -> None:
    """Write `baselines.json`: a colour-histogram baseline and the untrained network, same protocol."""
    from reidkit.engine.baselines import colour_histogram_features
    from reidkit.engine.evaluator import distance_matrix, evaluate_distances

    query = torch.from_numpy(colour_histogram_features([s[0] for s in dataset.query]))
    gallery = torch.from_numpy(colour_histogram_features([s[0] for s in dataset.gallery]))
    histogram = evaluate_distances(distance_matrix(query, gallery, "euclidean"), dataset.query, dataset.gallery,
                                   config.eval.max_rank, config.eval.junk)
    baselines = {"colour_histogram": histogram, "untrained_network": untrained}
    (run_dir / "baselines.json").write_text(json.dumps(baselines, indent=2))
    log(f"colour-histogram baseline: rank-1 {histogram['rank1']:.2%}  mAP {histogram['mAP']:.2%}")
