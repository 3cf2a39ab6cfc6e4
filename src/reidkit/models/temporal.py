"""Temporal aggregation: frame features `[B, T, D]` and a frame mask `[B, T]` (True: a real frame, False:
padding; None: every frame is real, the form exported to ONNX with a dynamic T) → one feature per tracklet
`[B, D]`. Padding never changes the result.

- "avg": temporal average pooling, f = Σ_t m_t x_t / Σ_t m_t.
- "max": temporal max pooling, f_d = max_{t: m_t} x_{t,d}.
- "attention": learned per-frame weights, a_t = softmax_t(w·x_t + b) over the real frames, f = Σ_t a_t x_t
  (temporal attention of Gao & Nevatia, "Revisiting Temporal Modeling for Video-based Person ReID", 2018).
- "transformer": one transformer encoder layer over the frame tokens (Vaswani et al. 2017; padding masked in
  the attention), then their masked average. It has no position embedding, so it sees the frames as a set.

All four are invariant to the order of the frames (a permutation of t with its mask gives the same f).
"""

from __future__ import annotations

import torch
from torch import nn

AGGREGATIONS = ("avg", "max", "attention", "transformer")


def masked_average(frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Σ_t m_t x_t / Σ_t m_t: [B, T, D], [B, T] → [B, D]."""
    if mask is None:
        return frames.mean(dim=1)
    weights = mask.to(frames.dtype).unsqueeze(-1)
    return (frames * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class TemporalAverage(nn.Module):
    """Temporal average pooling over the real frames."""

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return masked_average(frames, mask)


class TemporalMax(nn.Module):
    """Temporal max pooling over the real frames."""

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return frames.amax(dim=1)
        lowest = torch.finfo(frames.dtype).min
        return frames.masked_fill(~mask.unsqueeze(-1), lowest).amax(dim=1)


class TemporalAttention(nn.Module):
    """Per-frame scores w·x_t + b, softmax over the real frames, weighted sum of the frame features."""

    def __init__(self, feat_dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(feat_dim, 1)
        nn.init.zeros_(self.score.weight)  # starts as average pooling
        nn.init.zeros_(self.score.bias)

    def frame_weights(self, frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The attention weights a_t [B, T] (0 on padding, summing to 1 over each tracklet's frames)."""
        scores = self.score(frames).squeeze(-1)
        scores = scores.to(torch.promote_types(scores.dtype, torch.float32))  # softmax in float32 at least
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return scores.softmax(dim=1).to(frames.dtype)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return (self.frame_weights(frames, mask).unsqueeze(-1) * frames).sum(dim=1)


class TemporalTransformer(nn.Module):
    """One transformer encoder layer over the frame tokens (padding keys masked), then the masked average.

    The layer's residual branches start at zero (output projections zero-initialised), so an untrained
    aggregation is average pooling."""

    def __init__(self, feat_dim: int, heads: int = 4) -> None:
        super().__init__()
        heads = next(h for h in (heads, 2, 1) if feat_dim % h == 0)
        self.layer = nn.TransformerEncoderLayer(feat_dim, heads, dim_feedforward=feat_dim, dropout=0.0,
                                                batch_first=True, norm_first=True)
        nn.init.zeros_(self.layer.self_attn.out_proj.weight)
        nn.init.zeros_(self.layer.self_attn.out_proj.bias)
        nn.init.zeros_(self.layer.linear2.weight)
        nn.init.zeros_(self.layer.linear2.bias)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        padding = None if mask is None else ~mask
        return masked_average(self.layer(frames, src_key_padding_mask=padding), mask)


def build_aggregation(name: str, feat_dim: int) -> nn.Module:
    """The aggregation `name` (one of `AGGREGATIONS`) for `feat_dim`-wide frame features.

    Raises:
        KeyError: an unknown name, listing the choices.
    """
    builders = {"avg": TemporalAverage, "max": TemporalMax, "attention": lambda: TemporalAttention(feat_dim),
                "transformer": lambda: TemporalTransformer(feat_dim)}
    if name not in builders:
        raise KeyError(f"unknown temporal aggregation {name!r}; choose one of {', '.join(AGGREGATIONS)}")
    return builders[name]()
