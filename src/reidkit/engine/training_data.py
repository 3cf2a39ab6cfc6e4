"""The data of a training run: the training and test sets loaded and checked, the training batches (PIL
workers, or decoded images augmented a batch at a time) and the test images decoded once per run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from reidkit import distributed
from reidkit.config import Config
from reidkit.data.batch_transforms import BatchAugmentation, RandomPatch
from reidkit.data.build import DatasetLoader, build_test_sets, build_training_set
from reidkit.data.cache import CachedTestImages, CachedTrainLoader, choose_cache, decode_images
from reidkit.data.loading import build_train_loader, seeded_pk_batches
from reidkit.data.samplers import DistributedPKSampler, PKSampler
from reidkit.data.tracklet_loading import build_tracklet_train_loader
from reidkit.data.tracklets import is_tracklet_split
from reidkit.data.transforms import build_train_transform, train_transform_kwargs
from reidkit.errors import ConfigError
from reidkit.losses.objective import METRIC_TERMS


def check_batch_config(config: Config, num_identities: int | None = None, num_images: int | None = None) -> None:
    """Refuse a batch layout that cannot be drawn or that silently breaks the configured loss terms.

    Raises:
        ConfigError: P or K below their minimum, P above the number of training identities, P×K above the
            number of training images, or a metric-learning term with K < 2 (no positive pair).
    """
    p, k = config.data.p, config.data.k
    if p < 2 or k < 1:
        raise ConfigError(f"data.p={p}, data.k={k}: a batch needs p >= 2 identities and k >= 1 images each")
    if num_identities is not None and p > num_identities:
        raise ConfigError(f"data.p={p} identities per batch, but the training set has only {num_identities}; "
                          f"lower data.p")
    if num_images is not None and p * k > num_images:
        raise ConfigError(f"a batch of data.p × data.k = {p * k} images is larger than the training set "
                          f"({num_images} images); lower data.p or data.k")
    metric_terms = [name for name in METRIC_TERMS if getattr(config.loss, name).weight > 0]
    if metric_terms and config.data.k < 2:
        raise ConfigError(f"loss terms {', '.join(metric_terms)} compare images of the same identity, but "
                          f"data.k={config.data.k} gives each identity one image per batch; set data.k >= 2 "
                          "or give those terms weight 0")


def training_set_fingerprint(samples) -> str:
    """SHA-256 of the training samples' file names (a tracklet's frame names), identities and cameras in order;
    the folder is left out, so a data set moved elsewhere is the same set."""
    digest = hashlib.sha256()
    for path, pid, camid in samples:
        name = ",".join(Path(frame).name for frame in path) if isinstance(path, tuple) else Path(path).name
        digest.update(f"{name}\t{pid}\t{camid}\n".encode())
    return digest.hexdigest()


def training_batches(config: Config, dataset, device: torch.device, progress: bool, log):
    """The training batches: from decoded images augmented a batch at a time (data.cache), or PIL workers."""
    data, seed = config.data, config.train.seed
    pids = [pid for _, pid, _ in dataset.train]
    sampler = DistributedPKSampler if distributed.is_distributed() else PKSampler
    pk_sampler = sampler(pids, data.p, data.k, seed, data.epoch_length)
    if is_tracklet_split(dataset.train):  # P identities × K tracklets of data.seq_len frames, PIL workers
        log(f"training tracklets: {data.seq_len} frames each, drawn {data.frame_sampling}, decoded by PIL workers")
        return build_tracklet_train_loader(dataset.train, build_train_transform(**train_transform_kwargs(data)), data.p,
                                           data.k, seed, data.workers, data.seq_len, data.frame_sampling,
                                           data.skip_bad_images, pk_sampler)
    per_image = data.pil_only_augmentations()
    if per_image:  # the config refuses them with cache memory/device
        cache, why = "none", f"not cached: data.{per_image[0]} augments PIL images one at a time; PIL workers"
    else:
        cache, why = choose_cache(data.cache, len(dataset.train), data.height, data.width, device)
    log(f"training images: {why}")
    if cache == "none":
        patch = RandomPatch(data.random_patch_prob) if data.random_patch_prob > 0 else None
        return build_train_loader(dataset.train, build_train_transform(**train_transform_kwargs(data)), p=data.p,
                                  k=data.k, seed=seed, workers=data.workers, skip_bad_images=data.skip_bad_images,
                                  batch_sampler=pk_sampler, batch_transform=patch)
    images, readable = decode_images(dataset.train, data.height, data.width, data.workers, data.skip_bad_images,
                                     progress, data.interpolation)
    augmentation = BatchAugmentation(data.height, data.width, data.flip_prob, data.pad, data.erasing_prob,
                                     erasing_fill=data.erasing_fill, random_patch_prob=data.random_patch_prob)
    return CachedTrainLoader(images.to(device) if cache == "device" else images, readable, pids,
                             seeded_pk_batches(dataset.train, data.p, data.k, seed, pk_sampler), augmentation, device,
                             camids=[camid for _, _, camid in dataset.train])


def cached_test_images(config: Config, dataset, device: torch.device, progress: bool,
                       log) -> tuple[CachedTestImages, CachedTestImages] | None:
    """The query and gallery images decoded once for all evaluations of the run (`data.cache`, chosen for
    them as for the training images), or None: each evaluation decodes them with the PIL test loader."""
    data = config.data
    if is_tracklet_split(dataset.gallery):
        return None  # tracklet frames are decoded at each evaluation
    cache, why = choose_cache(data.cache, len(dataset.query) + len(dataset.gallery), data.height, data.width,
                              device)
    log(f"test images: {why}")
    if cache == "none":
        return None
    where = device if cache == "device" else torch.device("cpu")
    return tuple(CachedTestImages.decode(samples, data.height, data.width, where, data.workers, progress,
                                         data.interpolation) for samples in (dataset.query, dataset.gallery))


def load_training_data(config: Config, progress: bool, log):
    """(training set, test sets) as `config.data` and `config.eval` say, summaries logged; a synthetic set is
    generated once, by rank 0, while the other ranks wait.

    Raises:
        ConfigError: a batch layout the training set cannot fill (`check_batch_config`).
    """
    load = DatasetLoader(progress=progress)
    with distributed.wait_for_main_process():
        if distributed.is_main_process():
            training, test_sets = build_training_set(config.data, load), build_test_sets(config, load)
    if not distributed.is_main_process():
        training, test_sets = build_training_set(config.data, load), build_test_sets(config, load)
    for dataset in load.used.values():
        log(dataset.summary())
    if len(training.parts) > 1 or config.data.combineall:
        log(training.summary())
    if config.data.combineall:
        trained_on = {part.name for part in training.parts} & {test_set.name for test_set in test_sets}
        if trained_on:
            log(f"note: data.combineall trains on the query and gallery identities of {', '.join(sorted(trained_on))}"
                ", so its evaluation is not a held-out measure")
    check_batch_config(config, training.num_train_pids, len(training.train))
    singletons = int((np.bincount([pid for _, pid, _ in training.train]) == 1).sum())
    if singletons:
        log(f"note: {singletons} training identities have a single image; the PK sampler repeats it to fill "
            f"K={config.data.k}, so their positive pairs are copies of one image")
    return training, test_sets
