"""Batch normalisation over the global batch of all ranks (`model.sync_bn`).

With per-rank BatchNorm, W processes of n images each normalise over n images, not the n·W of one process
on the same global batch. Synchronised BatchNorm computes the statistics of the global batch, so
distributed training is the single-process computation (Ioffe & Szegedy's BatchNorm over the whole
mini-batch). On CUDA this is torch's `nn.SyncBatchNorm`; its kernels take GPU tensors only, so CPU (gloo)
runs use `CpuSyncBatchNorm`, the same statistics through an autograd all-gather.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reidkit import distributed


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """`nn.SyncBatchNorm` for CPU tensors (not a subclass of it: DDP refuses those off the GPU).

    Each rank r reduces its n_r values per channel to (n_r, mean_r, M2_r = n_r·var_r); one all-gather with
    gradient combines them exactly (Chan et al.'s parallel variance):
        N = Σ n_r,   μ = Σ n_r·μ_r / N,   σ² = Σ (M2_r + n_r·(μ_r − μ)²) / N,
    and y = (x − μ)/√(σ² + ε)·γ + β. The running variance takes the unbiased σ²·N/(N − 1), as BatchNorm
    does. The backward of the all-gather sums over ranks, so each rank's input gets the gradient of the
    sum of all ranks' losses (the convention of `reidkit.distributed`). Outside training, or in a single
    process, it is plain BatchNorm.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and distributed.world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        var_local, mean_local = torch.var_mean(input, dim=dims, correction=0)
        count = torch.tensor([input.numel() / input.shape[1]], dtype=input.dtype)
        local = torch.cat([count, mean_local, var_local * count])[None]  # [1, 1 + 2C]
        counts, means, m2s = distributed.all_gather_with_grad(local).split([1, input.shape[1], input.shape[1]], 1)
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        var = (m2s + counts * (means - mean).pow(2)).sum(0) / total
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * total / (total - 1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        shape = [1, -1] + [1] * (input.dim() - 2)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        output = (input - mean.view(shape)) * scale.view(shape)
        return output + self.bias.view(shape) if self.bias is not None else output


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm layer of `module` in place by a synchronised one for training on `device`
    (torch's `nn.SyncBatchNorm` off the CPU, `CpuSyncBatchNorm` on it), keeping parameters, buffers and
    `requires_grad`; returns `module`. The state dict keys do not change."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, CpuSyncBatchNorm):
            replacement = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                           child.track_running_stats)
            # the same parameter and buffer tensors (dtype, requires_grad and optimiser entries kept)
            for attribute in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                setattr(replacement, attribute, getattr(child, attribute))
            setattr(module, name, replacement.train(child.training))
        else:
            convert_sync_batchnorm(child, device)
    return module
