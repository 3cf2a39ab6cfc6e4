"""Identity classifier sharded by class over ranks, with the exact softmax cross-entropy.

Model parallelism for the classification layer as in partial-FC style large-scale face recognition
(An et al., "Partial FC: Training 10 Million Identities on a Single Machine", ICCVW 2021, here without
class sampling): each rank holds the weight rows of a contiguous class range and the softmax
normaliser is assembled with all-reduces, so no rank ever stores the full [C, D] weight or [N, C]
logits. Label smoothing follows Szegedy et al., "Rethinking the Inception Architecture for Computer
Vision", CVPR 2016, exactly as `reidkit.losses.cross_entropy_label_smooth`.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit import distributed
from reidkit.losses.representation import _check_epsilon

_INIT_BLOCK = 1024  # classes per independently seeded block of the initial weight


def shard_classes(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """Class range `[start, end)` held by `rank`: contiguous, sizes differ by at most one (larger first).

    Raises:
        ValueError: If there are fewer classes than ranks or `rank` is outside `[0, world_size)`.
    """
    if num_classes < world_size:
        raise ValueError(
            f"num_classes={num_classes} cannot be sharded over {world_size} ranks (fewer classes than ranks)"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _initial_rows(start: int, end: int, embedding_dim: int, std: float, seed: int) -> Tensor:
    """Rows [start, end) of a normal(0, std) [C, D] weight whose values do not depend on the sharding."""
    rows = []
    for block in range(start // _INIT_BLOCK, (end - 1) // _INIT_BLOCK + 1):
        block_seed = int(np.random.SeedSequence([seed, block]).generate_state(1, np.uint64)[0] % 2**63)
        generator = torch.Generator().manual_seed(block_seed)
        values = torch.randn(_INIT_BLOCK, embedding_dim, generator=generator, dtype=torch.get_default_dtype())
        first = block * _INIT_BLOCK
        rows.append(values[max(start, first) - first : min(end, first + _INIT_BLOCK) - first])
    return torch.cat(rows) * std


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by a constant."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


class ShardedLinearCrossEntropy(nn.Module):
    """Bias-free linear classifier split by class over ranks + label-smoothed softmax cross-entropy.

    Rank r holds `weight [C_r, D]`, the rows of classes `[start_r, end_r)` (`shard_classes`). `forward`
    gathers the features (with gradient) and labels of all ranks, computes the local logits
    z = F·W_rᵀ `[N, C_r]` and the exact per-sample loss
        l_i = log Σ_c exp(z_ic) − (1 − ε)·z_{i,y_i} − (ε/C)·Σ_c z_ic
    where each sum over all C classes is an all-reduce of the per-shard sums (after subtracting the
    all-reduced row maximum, a detached constant shift that cancels exactly). It returns
    L = mean_i l_i over the N samples of the global batch: `cross_entropy_label_smooth(F·Wᵀ, y, ε)` of
    the unsharded classifier, the same value on every rank. In a single process it is exactly that.

    Gradients (convention of `reidkit.distributed`): the features of each rank receive W·∂L/∂f_local,
    which DDP's averaging turns into the single-process model gradient; the weight shard, which is NOT
    replicated and must NOT be inside the DDP-wrapped module (DDP would average different shards), gets
    exactly ∂L/∂W_r: its raw gradient W·∂L/∂W_r is scaled by 1/W. Hold it beside the model like any
    loss with parameters and give its parameters to the optimiser on every rank.

    The initial weight is normal(0, std) (BNNeck classifier init, std 0.001) drawn in seeded blocks of
    classes, so a shard equals the same rows of the unsharded weight for the same `seed` whatever the
    number of ranks. An empty global batch gives NaN, like `Tensor.mean`.

    Args:
        num_classes: Number of training identities C (at least the number of ranks).
        embedding_dim: Feature size D.
        label_smoothing: ε in [0, 1), spread uniformly as ε/C over all C classes.
        std: Standard deviation of the initial weight.
        seed: Seed of the initial weight (the same on every rank).

    Raises:
        ValueError: Bad sizes or ε, or fewer classes than ranks.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        label_smoothing: float = 0.0,
        std: float = 0.001,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_classes < 1 or embedding_dim < 1:
            raise ValueError(f"num_classes and embedding_dim must be positive, got {num_classes} and {embedding_dim}")
        _check_epsilon(label_smoothing)
        self.num_classes, self.embedding_dim, self.label_smoothing = num_classes, embedding_dim, label_smoothing
        self.world_size = distributed.world_size()
        self.start, self.end = shard_classes(num_classes, distributed.rank(), self.world_size)
        self.weight = nn.Parameter(_initial_rows(self.start, self.end, embedding_dim, std, seed))

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Mean loss over the global batch from local `features [n_local, D]` and `labels [n_local]`.

        Raises:
            ValueError: Bad shapes or a label outside `[0, C)` anywhere in the global batch.
            RuntimeError: If the world size changed since construction.
        """
        if features.dim() != 2 or features.shape[1] != self.embedding_dim or labels.shape != features.shape[:1]:
            raise ValueError(
                f"expected features [n, {self.embedding_dim}] and labels [n], "
                f"got {tuple(features.shape)} and {tuple(labels.shape)}"
            )
        world_size = distributed.world_size()
        if world_size != self.world_size:
            raise RuntimeError(f"built for {self.world_size} ranks, the process group has {world_size}")
        all_features = distributed.all_gather_with_grad(features)
        all_labels = distributed.all_gather_tensors(labels)
        in_range = ((all_labels >= 0) & (all_labels < self.num_classes)).all()
        if all_labels.device.type == "cpu":
            if not in_range:
                raise ValueError(f"labels must lie in [0, {self.num_classes}), got {all_labels.tolist()}")
        else:  # checked on the device, without waiting for it (a failure is a device-side assertion)
            torch._assert_async(in_range, f"labels must lie in [0, {self.num_classes})")
        weight = self.weight if world_size == 1 else _ScaleGradient.apply(self.weight, 1.0 / world_size)
        logits = F.linear(all_features, weight)  # [N, C_r]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # softmax sums in >= fp32 (AMP)
        row_max = logits.detach().amax(dim=1)
        if world_size > 1:
            torch.distributed.all_reduce(row_max, op=torch.distributed.ReduceOp.MAX)
        shifted = logits - row_max[:, None]
        in_shard = (all_labels >= self.start) & (all_labels < self.end)
        local_labels = (all_labels - self.start).clamp(0, self.end - self.start - 1)
        target = shifted.gather(1, local_labels[:, None]).squeeze(1).masked_fill(~in_shard, 0.0)
        partial = torch.stack([shifted.exp().sum(dim=1), target, shifted.sum(dim=1)], dim=1)  # [N, 3]
        sum_exp, target, logit_sum = distributed.all_reduce_with_grad(partial).unbind(dim=1)
        epsilon = self.label_smoothing
        losses = sum_exp.log() - (1.0 - epsilon) * target - (epsilon / self.num_classes) * logit_sum
        return losses.mean()

    @torch.no_grad()
    def full_weight(self) -> Tensor:
        """The unsharded weight `[C, D]` gathered on every rank (for checkpoints and evaluation)."""
        return distributed.all_gather_tensors(self.weight)

    @torch.no_grad()
    def load_full_weight(self, weight: Tensor) -> None:
        """Copy this rank's rows of an unsharded weight `[C, D]` into the shard.

        Raises:
            ValueError: If `weight` is not `[C, D]`.
        """
        if tuple(weight.shape) != (self.num_classes, self.embedding_dim):
            raise ValueError(f"expected a weight [{self.num_classes}, {self.embedding_dim}], got {tuple(weight.shape)}")
        self.weight.copy_(weight[self.start : self.end])

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
            f"label_smoothing={self.label_smoothing}, shard=[{self.start}, {self.end})"
        )


def _sharded_entries(objective: nn.Module,
                     optimizer: torch.optim.Optimizer) -> list[tuple[str, int | None, ShardedLinearCrossEntropy]]:
    """(state-dict key of the weight, index in the optimiser's state or None, module) of every sharded
    classifier inside `objective`."""
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    entries = []
    for name, module in objective.named_modules():
        if isinstance(module, ShardedLinearCrossEntropy):
            index = next((i for i, p in enumerate(parameters) if p is module.weight), None)
            entries.append((f"{name}.weight" if name else "weight", index, module))
    return entries


def gather_sharded_state(objective: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """State dicts of `objective` and `optimizer` in which every class-sharded weight, and each optimiser
    state tensor of that weight (momentum, Adam's moments), is the full `[C, D]` of all ranks.

    Such a checkpoint does not depend on the number of ranks: `load_sharded_state` takes each rank's rows
    in any world size. A collective when a sharded classifier is present: call it on every rank.
    """
    objective_state, optimizer_state = objective.state_dict(), optimizer.state_dict()
    optimizer_state["state"] = dict(optimizer_state["state"])  # its inner dicts are the optimiser's own
    for key, index, module in _sharded_entries(objective, optimizer):
        objective_state[key] = module.full_weight()
        if index in optimizer_state["state"]:
            optimizer_state["state"][index] = {
                name: distributed.all_gather_tensors(value)
                if torch.is_tensor(value) and value.shape == module.weight.shape else value
                for name, value in optimizer_state["state"][index].items()}
    return objective_state, optimizer_state


def load_sharded_state(objective: nn.Module, optimizer: torch.optim.Optimizer, objective_state: dict,
                       optimizer_state: dict) -> None:
    """Load states written by `gather_sharded_state` (possibly by another number of ranks): every full
    `[C, D]` sharded weight and its optimiser state tensors are cut to this rank's rows first.

    Raises:
        ValueError: a sharded weight in the state is not `[C, D]` (a shard saved by an older version).
    """
    objective_state, optimizer_state = dict(objective_state), {**optimizer_state,
                                                               "state": dict(optimizer_state["state"])}
    for key, index, module in _sharded_entries(objective, optimizer):
        full = objective_state[key]
        if tuple(full.shape) != (module.num_classes, module.embedding_dim):
            raise ValueError(f"the checkpoint holds {key} of shape {tuple(full.shape)}, not the full classifier "
                             f"[{module.num_classes}, {module.embedding_dim}]; it was written by an older reidkit "
                             "that saved rank 0's shard only: resume it with that version or retrain")
        objective_state[key] = full[module.start : module.end]
        state = dict(optimizer_state["state"].get(index, {}))
        for name, value in state.items():
            if torch.is_tensor(value) and tuple(value.shape) == tuple(full.shape):
                state[name] = value[module.start : module.end]
        if index is not None and state:
            optimizer_state["state"][index] = state
    objective.load_state_dict(objective_state)
    optimizer.load_state_dict(optimizer_state)
