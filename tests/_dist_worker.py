"""Helpers for tests/test_distributed.py: the shared toy problem and the body of each spawned rank.

A spawned process imports this module by name, so it holds everything a rank needs. The same
`train` function gives the distributed run (one rank, DDP, DistributedPKSampler) and the single-process
reference (the concatenated global batches of PKSampler), both in float64.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from reidkit import distributed
from reidkit.data.samplers import DistributedPKSampler, PKSampler
from reidkit.losses import TriHardLoss, cross_entropy_label_smooth, trihard_loss
from reidkit.losses.cross_rank import CrossRankLoss
from reidkit.losses.sharded import ShardedLinearCrossEntropy, gather_sharded_state, load_sharded_state
from reidkit.models.sync_batchnorm import convert_sync_batchnorm

WORLD_SIZE = 2
IN_DIM, EMBEDDING_DIM = 10, 8
NUM_IDENTITIES, IMAGES_PER_IDENTITY = 13, 6  # 13 classes: unequal shards of 7 and 6
P, K, SEED, STEPS = 4, 3, 0, 4
LABEL_SMOOTHING = 0.1
CLASSIFIER_SEED = 3
MODES = ("local", "cross_rank", "sharded", "combined", "sync_bn")
TIMEOUT = timedelta(seconds=60)


def spawn_ranks(function, args: tuple, nprocs: int = WORLD_SIZE, deadline_s: float = 120.0) -> None:
    """Run `function(rank, *args)` on `nprocs` spawned processes; kill them and fail the test (never hang)
    past `deadline_s`."""
    import time

    import pytest
    import torch.multiprocessing as mp

    context = mp.start_processes(function, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + deadline_s
    while not context.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail(f"spawned ranks did not finish within {deadline_s} s")


def make_data() -> tuple[Tensor, list[int]]:
    """Random inputs `[78, IN_DIM]` (identity-dependent mean) and their identity labels, shuffled."""
    generator = torch.Generator().manual_seed(1)
    pids = torch.arange(NUM_IDENTITIES).repeat_interleave(IMAGES_PER_IDENTITY)
    pids = pids[torch.randperm(len(pids), generator=generator)]
    centres = torch.randn(NUM_IDENTITIES, IN_DIM, generator=generator)
    inputs = centres[pids] + 0.7 * torch.randn(len(pids), IN_DIM, generator=generator)
    return inputs, pids.tolist()


def make_model(batch_norm: bool = False) -> nn.Module:
    """A small MLP; with `batch_norm`, BatchNorm over [N, 4, 4] (statistics over batch and length, as a
    BatchNorm2d's over batch and pixels) and over [N, 16]."""
    torch.manual_seed(2)
    if not batch_norm:
        return nn.Sequential(nn.Linear(IN_DIM, 16), nn.Tanh(), nn.Linear(16, EMBEDDING_DIM))
    return nn.Sequential(nn.Linear(IN_DIM, 16), nn.Unflatten(1, (4, 4)), nn.BatchNorm1d(4), nn.Flatten(),
                         nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, EMBEDDING_DIM))


def _reference_loss(mode: str, embeddings: Tensor, labels: Tensor, weight: Tensor) -> Tensor:
    """Single-process loss on the global batch; "local" terms average per-rank halves."""
    chunks = zip(embeddings.chunk(WORLD_SIZE), labels.chunk(WORLD_SIZE))
    local = torch.stack([trihard_loss(e, y) for e, y in chunks]).mean()
    cross_rank = trihard_loss(embeddings, labels)
    classification = cross_entropy_label_smooth(embeddings @ weight.T, labels, LABEL_SMOOTHING)
    return {
        "local": local,
        "cross_rank": cross_rank,
        "sharded": classification,
        "combined": local + cross_rank + classification,
        "sync_bn": cross_rank,  # BatchNorm over the whole global batch
    }[mode]


def _model_and_classifier(mode: str) -> tuple[nn.Module, ShardedLinearCrossEntropy, torch.optim.Optimizer]:
    model = make_model(batch_norm=mode == "sync_bn")
    classifier = ShardedLinearCrossEntropy(NUM_IDENTITIES, EMBEDDING_DIM, LABEL_SMOOTHING, seed=CLASSIFIER_SEED)
    optimizer = torch.optim.SGD(
        [*model.parameters(), *classifier.parameters()], lr=0.2, momentum=0.9, weight_decay=5e-4
    )
    return model, classifier, optimizer


def train(mode: str, reference: bool) -> dict:
    """STEPS of SGD on the toy problem; records losses, embedding gradients and the final weights, and
    for "sharded" the checkpoint state of `gather_sharded_state`."""
    inputs, pids = make_data()
    labels_of = torch.tensor(pids)
    model, classifier, optimizer = _model_and_classifier(mode)
    if reference:
        sampler = PKSampler(pids, P, K, SEED)
        network = model
    else:
        sampler = DistributedPKSampler(pids, P, K, SEED)  # rank and world size from the process group
        if mode == "sync_bn":
            model = convert_sync_batchnorm(model, torch.device("cpu"))
        network = DistributedDataParallel(model)
    cross_rank_trihard = CrossRankLoss(TriHardLoss())
    record = {"losses": [], "embedding_grads": [], "batches": []}
    for step, batch in enumerate(sampler):
        if step == STEPS:
            break
        labels = labels_of[batch]
        embeddings = network(inputs[batch])
        embeddings.retain_grad()
        if reference:
            loss = _reference_loss(mode, embeddings, labels, classifier.weight)
        else:
            terms = {
                "local": lambda: trihard_loss(embeddings, labels),
                "cross_rank": lambda: cross_rank_trihard(embeddings, labels),
                "sharded": lambda: classifier(embeddings, labels),
            }
            names = {"combined": ("local", "cross_rank", "sharded"), "sync_bn": ("cross_rank",)}.get(mode, (mode,))
            loss = sum(terms[name]() for name in names)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        record["losses"].append(loss.item())
        record["embedding_grads"].append(embeddings.grad.clone())
        record["batches"].append(list(batch))
    record["model"] = {name: value.clone() for name, value in model.state_dict().items()}
    record["classifier"] = classifier.weight.detach().clone()
    record["classifier_range"] = (classifier.start, classifier.end)
    record["full_classifier"] = classifier.full_weight()
    if mode == "sharded":
        record["gathered"] = gather_sharded_state(classifier, optimizer)
    return record


def load_sharded(states: tuple[dict, dict]) -> dict:
    """A fresh classifier and optimiser of this world size loaded with `load_sharded_state(states)`: its
    rows and its momentum of the classifier."""
    model, classifier, optimizer = _model_and_classifier("sharded")
    load_sharded_state(classifier, optimizer, *states)
    index = len(list(model.parameters()))  # the classifier's place in the optimiser
    return {"weight": classifier.weight.detach().clone(), "range": (classifier.start, classifier.end),
            "momentum": optimizer.state[optimizer.param_groups[0]["params"][index]]["momentum_buffer"].clone()}


def _helper_results() -> dict:
    """Outputs of the reidkit.distributed helpers on this rank."""
    rank, world_size = distributed.rank(), distributed.world_size()
    distributed.barrier()
    results = {
        "rank": rank,
        "world_size": world_size,
        "is_distributed": distributed.is_distributed(),
        "is_main_process": distributed.is_main_process(),
    }
    uneven = torch.full((rank + 1, 2), float(rank))  # rank r contributes r + 1 rows
    results["all_gather_tensors"] = distributed.all_gather_tensors(uneven)
    results["gather_to_main"] = distributed.gather_to_main(uneven)
    local = (torch.arange(2.0 * (rank + 1)).reshape(rank + 1, 2) + 10 * rank).requires_grad_()
    gathered = distributed.all_gather_with_grad(local)
    weights = torch.arange(float(gathered.numel())).reshape(gathered.shape)  # same on every rank
    (weights * gathered).sum().backward()
    results["all_gather_with_grad"] = gathered.detach()
    results["all_gather_with_grad_grad"] = local.grad
    value = torch.tensor([rank + 1.0], requires_grad=True)
    total = distributed.all_reduce_with_grad(value)
    (3.0 * total).sum().backward()
    results["all_reduce_with_grad"] = total.detach()
    results["all_reduce_with_grad_grad"] = value.grad
    return results


def worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """Body of one spawned rank: gloo on CPU, float64; writes `rank{r}.pt` into `out_dir`."""
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback even if the hostname resolves elsewhere
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size, timeout=TIMEOUT
    )
    try:
        torch.set_default_dtype(torch.float64)
        results = {"helpers": _helper_results()}
        for mode in MODES:
            results[mode] = train(mode, reference=False)
        # checkpoints of the sharded classifier between world sizes: this run's (2 ranks), one process's
        results["load_own"] = load_sharded(results["sharded"]["gathered"])
        results["load_single"] = load_sharded(torch.load(Path(out_dir) / "single_process_state.pt"))
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def train_runs(rank: int, world_size: int, init_file: str, out_dir: str, jobs: list[tuple[str, str, list[str]]]) -> None:
    """Body of one spawned rank for `reidkit.engine.trainer.train` runs in one gloo group: each job is
    (name, config file, overrides) trained into `out_dir/name`; writes `train_rank{r}.pt` with each job's
    metrics (rank 0) or the error that stopped it."""
    import traceback

    from reidkit.config import load_config
    from reidkit.engine.trainer import train as train_run

    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=120))
    results = {}
    try:
        for name, config_file, overrides in jobs:
            try:
                config = load_config(config_file, overrides)
                results[name] = {"metrics": train_run(config, Path(out_dir) / name, progress=False, log=lambda *a: None)}
            except Exception:  # recorded for the test to show; the other jobs still run
                results[name] = {"error": traceback.format_exc()}
                break  # a failed collective leaves the ranks out of step: stop here
    finally:
        torch.save(results, Path(out_dir) / f"train_rank{rank}.pt")
        dist.destroy_process_group()


def waiting_worker(rank: int, world_size: int, init_file: str, out_dir: str, timeout_s: float, work_s: float) -> None:
    """Rank 0 works `work_s` seconds alone, longer than the group's collective timeout `timeout_s`, while
    rank 1 waits: in `wait_for_main_process` (then both meet in an all-reduce), after a failure of rank 0
    in the block, and, last, in a plain barrier. Writes `wait_rank{r}.pt` with what each rank saw."""
    import time

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))
    seen = {}
    try:
        with distributed.wait_for_main_process(poll_seconds=0.05):
            if rank == 0:
                time.sleep(work_s)
        total = torch.tensor([rank + 1.0])
        dist.all_reduce(total)
        seen["after_wait"] = total.item()
        try:
            with distributed.wait_for_main_process(poll_seconds=0.05):
                if rank == 0:
                    raise ValueError("rank 0's evaluation failed")
        except (ValueError, RuntimeError) as error:
            seen["failure"] = str(error)
        try:
            if rank == 0:
                time.sleep(work_s)
            dist.barrier()
            seen["barrier"] = "passed"
        except RuntimeError as error:
            seen["barrier"] = f"failed: {error}"
    finally:
        torch.save(seen, Path(out_dir) / f"wait_rank{rank}.pt")
        dist.destroy_process_group()
