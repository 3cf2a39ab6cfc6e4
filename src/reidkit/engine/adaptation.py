"""Unsupervised domain adaptation by clustering (`reidkit adapt`): a source run's model trained on unlabelled
target images under pseudo labels that are rebuilt as it learns.

References: Ge et al., "Self-paced Contrastive Learning with Hybrid Memory", NeurIPS 2020 (SpCL); Dai et al.,
"Cluster Contrast for Unsupervised Person Re-Identification", 2021.

The source model's BatchNorm statistics are first re-estimated on the unlabelled images (`adapt.target_bn`,
AdaBN). Every `adapt.every` epochs a round starts: the unlabelled images' flip-averaged features are extracted
(each rank its share, gathered), rank 0 clusters them (`reidkit.engine.clustering`: k-reciprocal Jaccard distance, DBSCAN)
and broadcasts the labels; every rank then rebuilds the P×K sampler over the clusters (outliers left out) and
resets the cluster memory (`loss.cluster_memory`) to the cluster means. Between rounds the run is an ordinary
`TrainingRun` with the pseudo labels as identities: same steps, evaluation, checkpoints and report. A checkpoint
also holds the round's labels (the memory is in the objective's state), so a killed run resumes exactly; a run
resumed where a round is due clusters again, as the uninterrupted run did.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from reidkit import distributed
from reidkit.config import Config
from reidkit.config.sections import set_names
from reidkit.data.build import DatasetLoader, build_test_sets
from reidkit.data.cache import CachedTestImages, choose_cache
from reidkit.data.loading import build_test_loader
from reidkit.data.transforms import build_test_transform
from reidkit.data.unlabeled import load_unlabeled_folder
from reidkit.devices import resolve_device, uses_amp
from reidkit.engine.batchnorm_statistics import reestimate_batchnorm
from reidkit.engine.checkpoint import load_weights
from reidkit.engine.clustering import cluster_means, pseudo_labels
from reidkit.engine.evaluation import eval_record
from reidkit.engine.extraction import extract_outputs
from reidkit.engine.saved_runs import load_run_config
from reidkit.engine.trainer import Position, TrainingRun, seed_everything
from reidkit.engine.training_data import cached_test_images, training_batches, training_set_fingerprint
from reidkit.errors import ConfigError, ReidkitError
from reidkit.losses.cluster_memory import ClusterMemoryLoss
from reidkit.metrics.pseudo_labels import pseudo_label_quality
from reidkit.models.weights import state_mismatch
from reidkit.outputs import write_text

# Terms with one weight vector per identity: the pseudo identities change in number every round.
CLASS_TERMS = ("id", "norm_softmax", "cosface", "arcface", "circle", "center", "attribute", "jigsaw", "verification")


def adaptation_config(config: Config, source: str | Path) -> Config:
    """`config` for adapting the run `source`: its model section (weights cleared: the source run's weights are
    loaded instead), input size and resize interpolation (bicubic for an imported fast-reid checkpoint), and
    `adapt.source`.

    Raises:
        ReidkitError: `source` is not a run folder.
    """
    source_config = load_run_config(source)
    return dataclasses.replace(
        config, model=dataclasses.replace(source_config.model, weights=""),
        data=dataclasses.replace(config.data, height=source_config.data.height, width=source_config.data.width,
                                 interpolation=source_config.data.interpolation),
        adapt=dataclasses.replace(config.adapt, source=str(source)))


def check_adaptation_config(config: Config) -> None:
    """Refuse what adaptation cannot train: no source run, or a loss term with per-identity weights.

    Raises:
        ConfigError: naming the key to change.
    """
    if not config.adapt.source:
        raise ConfigError("adapt.source is empty: name the run to adapt (`reidkit adapt --source RUN_DIR`)")
    classes = [name for name in CLASS_TERMS if getattr(config.loss, name).weight > 0]
    if classes:
        raise ConfigError(f"loss.{classes[0]} has one weight per identity, but the pseudo identities change in "
                          f"number every round; set loss.{classes[0]}.weight=0 and train with loss.cluster_memory "
                          "and/or a metric term such as loss.trihard")


def adapt(config: Config, run_dir: str | Path, progress: bool = True, log=print, resume: bool = False,
          force: bool = False) -> dict:
    """Adapt `config.adapt.source` to the unlabelled images of `config.adapt`, writing the run folder `run_dir`;
    returns the final metrics summary (with `direct_transfer`: the source model's, before adaptation, and with
    `adapt.target_bn` `target_bn`: the source model's after AdaBN, before training).

    Raises:
        ReidkitError: bad data, config, source run or folder, a round with fewer clusters than data.p, a
            diverging loss or a refused resume, with a message naming the fix.
    """
    check_adaptation_config(config)
    device = resolve_device(config.train.device)
    with distributed.process_group_from_environment(device, config.train.dist_timeout_minutes):
        if not distributed.is_main_process():
            progress, log = False, lambda *args: None
        run = AdaptationRun(config, Path(run_dir), device, progress, log, resume, force)
        while run.position.epoch <= config.train.epochs:
            run.train_epoch()
        return run.finish()


def load_unlabeled_data(config: Config, progress: bool, log) -> tuple[list, list]:
    """(unlabelled samples `(path, true identity or −1, camid)`, test sets): the train splits of
    `adapt.unlabeled_sets` (or of data.* when no set or folder is listed) with their raw identities, then the
    images of `adapt.unlabeled_folders`; identities and cameras offset so that parts never collide. Rank 0
    generates a synthetic set while the others wait."""
    adapt_config = config.adapt
    sets = adapt_config.unlabeled_sets or ([] if adapt_config.unlabeled_folders else [config.data])
    names = set_names(sets, "adapt.unlabeled_sets") if adapt_config.unlabeled_sets else \
        [config.data.name or config.data.dataset] * len(sets)
    load = DatasetLoader(progress=progress)

    def read() -> tuple[list, list]:
        parts = [[(path, dataset.train_raw_pids[label], camid) for path, label, camid in dataset.train]
                 for dataset in (load(source, name) for source, name in zip(sets, names))]
        return parts + [load_unlabeled_folder(folder) for folder in adapt_config.unlabeled_folders], \
            build_test_sets(config, load)

    with distributed.wait_for_main_process():
        if distributed.is_main_process():
            parts, test_sets = read()
    if not distributed.is_main_process():
        parts, test_sets = read()
    samples, pid_offset, camera_offset = [], 0, 0
    for part in parts:
        samples += [(path, pid + pid_offset if pid >= 0 else -1, camid + camera_offset) for path, pid, camid in part]
        pid_offset += 1 + max(pid for _, pid, _ in part)
        camera_offset += 1 + max(camid for _, _, camid in part)
    log(f"unlabelled training images: {len(samples)} from {len(parts)} set(s) and folder(s)")
    return samples, test_sets


class AdaptationRun(TrainingRun):
    """A `TrainingRun` over unlabelled images whose identities are the clusters of the latest round."""

    def __init__(self, config: Config, run_dir: Path, device: torch.device, progress: bool, log, resume: bool,
                 force: bool) -> None:
        self.config, self.run_dir, self.device, self.progress, self.log = config, run_dir, device, progress, log
        self.main_process = distributed.is_main_process()
        restored = self._open_run_folder(resume, force)
        distributed.barrier()
        seed_everything(config.train.seed)
        self.amp = uses_amp(config.train, device)
        self.teacher = None  # TrainingRun's distillation teacher: adaptation trains without one
        self.samples, self.test_sets = load_unlabeled_data(config, progress, log)
        self.train_set = training_set_fingerprint(self.samples)
        if restored and restored[1].get("train_set") != self.train_set and not force:
            raise ConfigError(f"the unlabelled images differ from those the checkpoint was trained on ({len(self.samples)} "
                              "now); restore them, or pass --force to resume anyway")
        self.test_images = [cached_test_images(config, test_set, device, progress, log) for test_set in self.test_sets]
        self.test_attributes = [None] * len(self.test_sets)
        self._build_source_model()
        self.memory = next((m for m in self.objective.modules() if isinstance(m, ClusterMemoryLoss)), None)
        self.unlabeled_images = self._decode_unlabeled()
        self.labels: np.ndarray | None = None
        self.position = Position()
        self.final = None
        self.evaluated_last_epoch = False
        if restored:
            self._restore(*restored)
        else:  # the source model on the target test set: what adaptation has to beat
            self.direct_transfer = self._evaluate_before_training()
            self.target_bn = {}
            if config.adapt.target_bn:  # AdaBN, then the same model again: what the statistics alone give
                self._target_batchnorm()
                self.target_bn = self._evaluate_before_training()

    def _evaluate_before_training(self) -> dict:
        """The model as it is on the target test set (an epoch-0 record), on rank 0; {} on the others."""
        with distributed.wait_for_main_process():
            evaluations = self.evaluate(0, 0)
        return eval_record(evaluations[0].metrics) if evaluations else {}

    def _build_source_model(self) -> None:
        """The model, objective, optimiser and trainer (`TrainingRun._build_model`), with the source run's weights
        (heads that adaptation does not build, such as attribute heads, left out)."""
        path = Path(self.config.adapt.source) / "model.safetensors"
        state, metadata = load_weights(path)
        self._build_model(SimpleNamespace(num_train_pids=int(metadata.get("num_classes", 0)), train=self.samples))
        expected = self.model.state_dict()
        state = {key: value for key, value in state.items() if key in expected}
        mismatch = state_mismatch(expected, state)
        if mismatch:
            raise ReidkitError(f"{path} does not fit the model of its own config.yaml: {mismatch}; adapt a run "
                               "written by `reidkit train` or `reidkit import`")
        self.model.load_state_dict(state)
        self.log(f"adapting {self.config.adapt.source} ({self.config.model.backbone})")

    def _decode_unlabeled(self) -> CachedTestImages | None:
        """The unlabelled images decoded once for every round's extraction (data.cache), or None (PIL loader)."""
        data = self.config.data
        cache, why = choose_cache(data.cache, len(self.samples), data.height, data.width, self.device)
        self.log(f"unlabelled images for clustering: {why}")
        if cache == "none":
            return None
        where = self.device if cache == "device" else torch.device("cpu")
        return CachedTestImages.decode(self.samples, data.height, data.width, where, data.workers, self.progress,
                                       data.interpolation)

    def _unlabeled_batches(self, start: int, stop: int):
        """Test-time batches (`{"images": ...}`) of unlabelled images start..stop−1, in order."""
        config = self.config
        if self.unlabeled_images is not None:
            return self.unlabeled_images.batches(start, stop, config.eval.batch_size, self.device)
        transform = build_test_transform(config.data.height, config.data.width,
                                         interpolation=config.data.interpolation)
        return build_test_loader(self.samples[start:stop], transform, batch_size=config.eval.batch_size,
                                 workers=config.data.workers)

    def _target_batchnorm(self) -> None:
        """AdaBN (`adapt.target_bn`, `reestimate_batchnorm`) on the unlabelled images, test-time preprocessing, in
        order. Every rank passes every image, so all ranks get the same statistics without a collective (and
        synchronised BatchNorm, whose training-mode forward is one, is called by all of them)."""
        layers = reestimate_batchnorm(self.model, self._unlabeled_batches(0, len(self.samples)), self.device, self.amp)
        self.log(f"BatchNorm statistics of {layers} layers re-estimated on the {len(self.samples)} unlabelled images "
                 "(adapt.target_bn)")

    def extra_state(self) -> dict:
        return {"pseudo_labels": torch.from_numpy(self.labels), "direct_transfer": self.direct_transfer,
                "target_bn": self.target_bn}

    def _restore(self, weights, state: dict) -> None:
        super()._restore(weights, state)
        self.direct_transfer, self.target_bn = state["direct_transfer"], state.get("target_bn", {})
        if self.position.step_in_epoch == 0 and self._round_due(self.position.epoch):
            if self.main_process:  # the round is redone: its record is written again
                kept = [record for record in self.metrics_log.records()
                        if not (record.get("kind") == "cluster" and record["epoch"] >= self.position.epoch)]
                write_text(self.metrics_log.path, "".join(json.dumps(record) + "\n" for record in kept))
            return
        self._start_round(state["pseudo_labels"].numpy(), features=None)

    def _round_due(self, epoch: int) -> bool:
        return (epoch - 1) % self.config.adapt.every == 0

    def train_epoch(self) -> None:
        """Cluster when a round is due (or none is loaded), then train the epoch (`TrainingRun.train_epoch`)."""
        epoch = self.position.epoch
        if self.labels is None or (self.position.step_in_epoch == 0 and self._round_due(epoch)):
            self.cluster(epoch)
        super().train_epoch()

    def _extract(self) -> dict[str, torch.Tensor]:
        """Flip-averaged eval-mode outputs of every unlabelled image (the clustering feature, eval.feature, and
        the memory's): each rank extracts a contiguous share, all gathered in order on every rank."""
        config, samples = self.config, self.samples
        keys = tuple(dict.fromkeys([config.eval.feature, config.loss.cluster_memory.feature]))
        start = len(samples) * distributed.rank() // distributed.world_size()
        stop = len(samples) * (distributed.rank() + 1) // distributed.world_size()
        loader = self._unlabeled_batches(start, stop)
        distributed.broadcast_buffers(self.model)
        local = extract_outputs(self.model, loader, keys, flip=True, device=self.device, amp=self.amp,
                                progress=self.progress, on_device=True)
        return {key: distributed.all_gather_tensors(value).cpu() for key, value in local.items()}

    def cluster(self, epoch: int) -> None:
        """One round: extract, cluster on rank 0, broadcast the labels, rebuild sampler and memory, log the round."""
        config, started = self.config, time.perf_counter()
        features = self._extract()
        labels = torch.zeros(len(self.samples), dtype=torch.int64)
        if self.main_process:
            labels = torch.from_numpy(pseudo_labels(features[config.eval.feature], config.adapt.k1, config.adapt.k2,
                                                    config.adapt.eps, config.adapt.min_samples, self.progress))
        if distributed.is_distributed():
            on_device = labels.to(self.device)  # NCCL broadcasts device tensors only
            torch.distributed.broadcast(on_device, 0)
            labels = on_device.cpu()
        labels = labels.numpy()
        clusters = int(labels.max()) + 1
        if clusters < config.data.p:
            raise ReidkitError(f"the clustering at epoch {epoch} found {clusters} clusters ({int((labels < 0).sum())} "
                               f"of {len(labels)} images outliers), fewer than data.p={config.data.p} identities per "
                               "batch; raise adapt.eps, lower adapt.min_samples or data.p")
        self._start_round(labels, features[config.loss.cluster_memory.feature])
        true = np.array([pid for _, pid, _ in self.samples])
        scores = pseudo_label_quality(labels, true) if (true >= 0).all() else \
            {"clusters": clusters, "outliers": int((labels < 0).sum())}
        self.log(f"epoch {epoch}: clustering round: " + "  ".join(f"{name}={value:.3f}" if isinstance(value, float)
                                                                  else f"{name}={value}" for name, value in scores.items()))
        if self.main_process:
            self.metrics_log.write({"kind": "cluster", "epoch": epoch, "step": self.position.global_step,
                                    **{f"cluster/{name}": value for name, value in scores.items()},
                                    "cluster/seconds": time.perf_counter() - started})

    def _start_round(self, labels: np.ndarray, features: torch.Tensor | None) -> None:
        """Train on `labels` (outliers, −1, left out); with `features`, reset the memory to the cluster means."""
        self.labels = labels
        kept = np.flatnonzero(labels >= 0)
        round_samples = [(self.samples[i][0], int(labels[i]), self.samples[i][2]) for i in kept]
        self.loader = training_batches(self.config, SimpleNamespace(train=round_samples), self.device, False, self.log)
        if self.memory is not None and features is not None:
            self.memory.reset(torch.from_numpy(cluster_means(features.numpy(), labels)).float())

    def finish(self) -> dict:
        if not self.evaluated_last_epoch:
            self.final = self.evaluate(self.config.train.epochs, self.position.global_step)
            self.evaluated_last_epoch = True
        if self.main_process:
            self.final[0].metrics["direct_transfer"] = self.direct_transfer
            if self.target_bn:
                self.final[0].metrics["target_bn"] = self.target_bn
        return super().finish()

