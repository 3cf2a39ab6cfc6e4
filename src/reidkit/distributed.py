"""Process-group helpers and collectives for data-parallel metric learning.

Every function is a no-op (or returns single-process values) when `torch.distributed` is not
initialised, so library code calls them unconditionally.

Gradient convention (used by `global_batch_loss`, `reidkit.losses.cross_rank` and
`reidkit.losses.sharded`). With W ranks, DistributedDataParallel (DDP) AVERAGES the parameter
gradients of the W ranks. Each rank returns a loss ℓ_r chosen so that (1/W)·Σ_r ℓ_r is the
single-process loss L on the concatenated global batch: a loss on the local batch alone returns its
local mean; a loss on the gathered global batch returns L itself, unscaled, on every rank. The
autograd collectives (`all_gather_with_grad`, `all_reduce_with_grad`) make each rank's backward
produce its own share of ∇(Σ_r ℓ_r): the backward of the all-gather sums, for each rank's slice, the
gradients of all W identical copies of L, so a rank's local embedding gradient is W·∂L/∂e_local, and
DDP's averaging (1/W)·Σ_r turns the parameter gradients into exactly ∂L/∂θ of single-process training
on the global batch. No loss is multiplied or divided by W. Parameters that are not replicated (a
class-sharded classifier, which lives outside DDP) are not averaged, so they scale their own
gradient by 1/W (see `reidkit.losses.sharded`).
"""

from __future__ import annotations

import itertools
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

# torch >= 2.5 marks torch.distributed.nn.functional as deprecated and warns on every call; the
# autograd behaviour documented above is the one we rely on, so the warning is silenced locally.
_DEPRECATION_MESSAGE = r"torch\.distributed\.nn\.functional\.\w+ is deprecated"


def is_distributed() -> bool:
    """True when a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Rank of this process in the default group; 0 in a single process."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes W in the default group; 1 in a single process."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the process that logs, evaluates and saves."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank reaches this point; nothing in a single process."""
    if is_distributed():
        dist.barrier()


@contextmanager
def _quiet_autograd_collectives() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION_MESSAGE, category=FutureWarning)
        yield


def _check_batched(x: Tensor) -> None:
    if x.dim() < 1:
        raise ValueError(f"expected a tensor with a leading batch dimension, got shape {tuple(x.shape)}")


def _gather_sizes(x: Tensor) -> list[int]:
    """Leading sizes of `x` on every rank, in rank order; exchanged as CPU tensors (gloo), so a CUDA `x`
    is not waited for."""
    size = torch.tensor([x.shape[0]], dtype=torch.int64)
    sizes = [torch.empty_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def _pad_rows(x: Tensor, rows: int) -> Tensor:
    if x.shape[0] == rows:
        return x
    return torch.cat([x, x.new_zeros((rows - x.shape[0], *x.shape[1:]))])


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate `x` of every rank in rank order, keeping the gradient path to every rank.

    Built on `torch.distributed.nn.functional.all_gather`, whose backward SUMS over ranks the
    gradients that all ranks computed for each rank's slice. If every rank computes the same loss L
    from the result, the gradient reaching the local `x` is therefore W·∂L/∂x; DDP's averaging turns
    this into the single-process parameter gradient (see the module docstring). The leading sizes
    may differ between ranks (rows are padded for the transfer and dropped again).

    Args:
        x: Local tensor `[n_local, ...]`; the trailing dimensions must agree on all ranks.

    Returns:
        `[n_global, ...]` with n_global = Σ_r n_r; `x` itself in a single process.

    Raises:
        ValueError: If `x` has no leading dimension.
    """
    _check_batched(x)
    if not is_distributed() or world_size() == 1:
        return x
    sizes = _gather_sizes(x)
    with _quiet_autograd_collectives():
        from torch.distributed.nn.functional import all_gather

        pieces = all_gather(_pad_rows(x, max(sizes)))
    return torch.cat([piece[:size] for piece, size in zip(pieces, sizes)])


def all_gather_tensors(x: Tensor) -> Tensor:
    """Concatenate `x` of every rank in rank order, without gradient (labels, evaluation features).

    Args:
        x: Local tensor `[n_local, ...]`; leading sizes may differ between ranks.

    Returns:
        Detached `[n_global, ...]` on every rank; `x.detach()` in a single process.

    Raises:
        ValueError: If `x` has no leading dimension.
    """
    _check_batched(x)
    x = x.detach()
    if not is_distributed() or world_size() == 1:
        return x
    sizes = _gather_sizes(x)
    padded = _pad_rows(x, max(sizes)).contiguous()
    pieces = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(pieces, padded)
    return torch.cat([piece[:size] for piece, size in zip(pieces, sizes)])


def gather_to_main(x: Tensor, dst: int = 0) -> Tensor | None:
    """Concatenate `x` of every rank in rank order on rank `dst` only, without gradient.

    Meant for distributed evaluation: each rank extracts features for its share of the data; the
    main process receives them all. Gather the dataset indices the same way to restore the order
    (and drop duplicates a padding sampler adds).

    Args:
        x: Local tensor `[n_local, ...]`; leading sizes may differ between ranks.
        dst: Receiving rank.

    Returns:
        `[n_global, ...]` on rank `dst`, None on the other ranks; `x.detach()` in a single process.

    Raises:
        ValueError: If `x` has no leading dimension or `dst` is not a rank.
    """
    _check_batched(x)
    if not 0 <= dst < world_size():
        raise ValueError(f"dst must be a rank in [0, {world_size()}), got {dst}")
    x = x.detach()
    if not is_distributed() or world_size() == 1:
        return x
    sizes = _gather_sizes(x)
    padded = _pad_rows(x, max(sizes)).contiguous()
    pieces = [torch.empty_like(padded) for _ in sizes] if rank() == dst else None
    dist.gather(padded, gather_list=pieces, dst=dst)
    if pieces is None:
        return None
    return torch.cat([piece[:size] for piece, size in zip(pieces, sizes)])


def all_reduce_with_grad(x: Tensor) -> Tensor:
    """Element-wise sum of `x` over ranks, differentiable.

    Built on `torch.distributed.nn.functional.all_reduce`: its backward all-reduces (sums) the
    incoming gradients too, so with the same loss L on every rank the local `x` receives W·∂L/∂x,
    the same convention as `all_gather_with_grad`.

    Args:
        x: Tensor of the same shape on every rank.

    Returns:
        Σ_r x_r; `x` itself in a single process.
    """
    if not is_distributed() or world_size() == 1:
        return x
    with _quiet_autograd_collectives():
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(x)


def global_batch_loss(
    loss_fn: Callable[[Tensor, Tensor], Tensor], embeddings: Tensor, labels: Tensor
) -> Tensor:
    """Apply a batch loss to the global batch gathered from all ranks (cross-rank mining).

    Gathers `embeddings` with gradient and `labels` without, computes L = loss_fn(E, Y) on the
    concatenated global batch, and returns L UNSCALED: every rank returns the same value, the
    all-gather backward hands each rank W·∂L/∂e_local, and DDP's averaging over W ranks gives the
    model exactly the gradient of single-process training on the global batch with loss L (see the
    module docstring). Adding it to local-batch losses (their local means) keeps this property.

    Args:
        loss_fn: Batch loss `(embeddings [N, D], labels [N]) -> scalar`, e.g. `reidkit.losses.trihard_loss`.
        embeddings: Local embeddings `[n_local, D]`.
        labels: Local identity labels `[n_local]`.

    Returns:
        Scalar L on the global batch, identical on every rank; `loss_fn(embeddings, labels)` in a
        single process.

    Raises:
        ValueError: If `labels` is not `[n_local]`.
    """
    if labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"expected embeddings [n, D] and labels [n], got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )
    return loss_fn(all_gather_with_grad(embeddings), all_gather_tensors(labels))


# The collective library for tensors of each accelerator type. CPU tensors (counters, sizes, anything a
# rank keeps on the host) always go through gloo, so a CUDA run's group serves both kinds of tensor: a
# plain "nccl" group refuses every collective on a CPU tensor.
ACCELERATOR_BACKENDS = {"cuda": "nccl"}


def process_group_backend(device_type: str) -> str:
    """The backend string of a process group training on `device_type`: "gloo" for CPU training, else
    "cpu:gloo,<type>:<library>" (e.g. "cpu:gloo,cuda:nccl")."""
    if device_type == "cpu":
        return "gloo"
    if device_type not in ACCELERATOR_BACKENDS:
        raise ValueError(f"no collective library known for device type {device_type!r}; "
                         f"known: cpu, {', '.join(ACCELERATOR_BACKENDS)}")
    return f"cpu:gloo,{device_type}:{ACCELERATOR_BACKENDS[device_type]}"


@contextmanager
def process_group_from_environment(device: torch.device, timeout_minutes: float = 30.0) -> Iterator[bool]:
    """Join the process group described by torchrun's environment (WORLD_SIZE > 1) for the block and leave
    it afterwards; yields whether this process is part of a multi-process group.

    The group serves CPU tensors and tensors of `device` (`process_group_backend`); `timeout_minutes` is
    the collective timeout (NCCL's watchdog and gloo's), which long work of rank 0 alone never meets
    because the other ranks wait for it in `wait_for_main_process`. A group that already exists (made by
    the caller) is used as it is and left alone.
    """
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield is_distributed()
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(process_group_backend(device.type), timeout=timedelta(minutes=timeout_minutes))
    try:
        yield True
    finally:
        dist.destroy_process_group()


_waits = itertools.count()  # the same sequence on every rank: the n-th wait of each rank meets the others'


@contextmanager
def wait_for_main_process(poll_seconds: float = 0.2) -> Iterator[None]:
    """Every rank runs the block (collectives included), then the other ranks wait until rank 0 has left it.

    Rank 0's long work in the block (evaluation, re-ranking, checkpoints, the report) would make ranks
    that wait in a collective fail at the group's timeout; here they poll a key of the group's store
    instead, which has no timeout. If rank 0 leaves the block with an error, the waiting ranks raise one
    too. Nothing is waited for in a single process.
    """
    if not is_distributed() or world_size() == 1:
        yield
        return
    key = f"reidkit/main_process_done/{next(_waits)}"
    store = dist.distributed_c10d._get_default_store()  # the rendezvous store every rank shares
    if is_main_process():
        try:
            yield
        except BaseException:
            store.set(key, "failed")
            raise
        store.set(key, "done")
        return
    yield
    while not store.check([key]):
        time.sleep(poll_seconds)
    if store.get(key) != b"done":
        raise RuntimeError("rank 0 failed while the other ranks waited for it; its error is printed above")


def average_gradients(parameters: list[Tensor]) -> None:
    """Average `.grad` of replicated parameters that live outside DDP (e.g. CosFace class weights, center
    loss centres) over ranks, as DDP does for the model; nothing in a single process."""
    if not is_distributed():
        return
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= world_size()


def mean_over_ranks(values: Tensor) -> Tensor:
    """The mean over ranks of a tensor of logged values (the same on every rank); collective on the
    tensor's own device, so nothing waits for the host."""
    if not is_distributed() or world_size() == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / world_size()


def launch_local(nproc: int, arguments: list[str]) -> int:
    """Run `python -m reidkit ARGUMENTS` in `nproc` local processes with torchrun (rendezvous on this
    machine); returns torchrun's exit status."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "reidkit", *arguments]
    return subprocess.run(command).returncode


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy the buffers (e.g. BatchNorm running statistics, which each rank updates from its own batches)
    of rank `src` to every rank, so all ranks evaluate the model rank 0 saves; nothing in one process."""
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src)
