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
from reidkit.losses.sharded import ShardedLinearCrossEntropy

WORLD_SIZE = 2
IN_DIM, EMBEDDING_DIM = 10, 8
NUM_IDENTITIES, IMAGES_PER_IDENTITY = 13, 6  # 13 classes: unequal shards of 7 and 6
P, K, SEED, STEPS = 4, 3, 0, 4
LABEL_SMOOTHING = 0.1
CLASSIFIER_SEED = 3
MODES = ("local", "cross_rank", "sharded", "combined")
TIMEOUT = timedelta(seconds=60)


def make_data() -> tuple[Tensor, list[int]]:
    """Random inputs `[78, IN_DIM]` (identity-dependent mean) and their identity labels, shuffled."""
    generator = torch.Generator().manual_seed(1)
    pids = torch.arange(NUM_IDENTITIES).repeat_interleave(IMAGES_PER_IDENTITY)
    pids = pids[torch.randperm(len(pids), generator=generator)]
    centres = torch.randn(NUM_IDENTITIES, IN_DIM, generator=generator)
    inputs = centres[pids] + 0.7 * torch.randn(len(pids), IN_DIM, generator=generator)
    return inputs, pids.tolist()


def make_model() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(IN_DIM, 16), nn.Tanh(), nn.Linear(16, EMBEDDING_DIM))


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
    }[mode]


def train(mode: str, reference: bool) -> dict:
    """STEPS of SGD on the toy problem; records losses, embedding gradients and the final weights."""
    inputs, pids = make_data()
    labels_of = torch.tensor(pids)
    model = make_model()
    classifier = ShardedLinearCrossEntropy(NUM_IDENTITIES, EMBEDDING_DIM, LABEL_SMOOTHING, seed=CLASSIFIER_SEED)
    if reference:
        sampler = PKSampler(pids, P, K, SEED)
        network = model
    else:
        sampler = DistributedPKSampler(pids, P, K, SEED)  # rank and world size from the process group
        network = DistributedDataParallel(model)
    cross_rank_trihard = CrossRankLoss(TriHardLoss())
    optimizer = torch.optim.SGD(
        [*model.parameters(), *classifier.parameters()], lr=0.2, momentum=0.9, weight_decay=5e-4
    )
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
            names = ("local", "cross_rank", "sharded") if mode == "combined" else (mode,)
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
    return record


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
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
