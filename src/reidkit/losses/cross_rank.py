"""Cross-rank mining: a batch metric loss over the global batch gathered from all ranks.

Under data parallelism each rank otherwise mines triplets among its own P_local·K images only; gathering
the embeddings lets every anchor see the hardest positive and negative of the whole P×K batch, as in
single-process training (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person
Re-Identification", 2017). The gradient reaches the other ranks' images through the backward of the
all-gather (see `reidkit.distributed` for the gradient convention).
"""

from torch import Tensor, nn

from reidkit.distributed import all_gather_tensors, all_gather_with_grad, global_batch_loss


class CrossRankLoss(nn.Module):
    """Wrap a batch metric loss `(embeddings [N, D], labels [N]) -> scalar` to act on the global batch.

    L = loss_module(all_gather(embeddings), all_gather(labels)): the same value on every rank, returned
    unscaled; with DDP's gradient averaging the model receives exactly the gradient of single-process
    training on the concatenated global batch (`reidkit.distributed.global_batch_loss`). The wrapped
    loss's own degenerate cases apply to the global batch (e.g. anchors without a negative are left out).
    In a single process it returns `loss_module(embeddings, labels)`.

    Args:
        loss_module: Any reidkit batch loss module taking `(embeddings, labels)`, e.g. `TriHardLoss()`.
    """

    def __init__(self, loss_module: nn.Module) -> None:
        super().__init__()
        self.loss_module = loss_module

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Loss on the global batch from local `embeddings [n_local, D]` and `labels [n_local]`."""
        return global_batch_loss(self.loss_module, embeddings, labels)


class CrossRankDistillation(nn.Module):
    """Wrap a batch distillation loss `(student [N, D_s], teacher [N, D_t]) -> scalar` to act on the global batch.

    L = loss_module(all_gather_with_grad(student), all_gather(teacher)): the relations of the whole global
    batch, the same value on every rank, with the gradient convention of `CrossRankLoss` (DDP's averaging
    gives single-process training on the concatenated batch). In a single process it returns
    `loss_module(student, teacher)`.
    """

    def __init__(self, loss_module: nn.Module) -> None:
        super().__init__()
        self.loss_module = loss_module

    def forward(self, student_features: Tensor, teacher_features: Tensor) -> Tensor:
        """Loss on the global batch from local `student_features [n_local, D_s]`, `teacher_features [n_local, D_t]`."""
        return self.loss_module(all_gather_with_grad(student_features), all_gather_tensors(teacher_features))
