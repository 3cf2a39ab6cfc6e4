"""TransReID's jigsaw patch module (JPM; He et al., "TransReID: Transformer-based Object Re-Identification",
ICCV 2021, section 3.3): local features from shuffled groups of patch tokens, for a vision transformer trunk.

The tokens entering the trunk's last transformer layer, [N, 1 + T, C] (class token first), are rearranged:
- shift: the first `shift` patch tokens move to the end (a cyclic shift of the T patch tokens);
- patch shuffle: the shifted sequence is read as `shuffle_groups` rows of T/shuffle_groups tokens and taken
  column by column (a transpose), so neighbouring patches land in different groups;
- split: the result is cut into `groups` consecutive groups of T // groups tokens (a remainder is left out).
Each group, with the class token put in front, goes through a copy of the last layer and the final norm (one
copy shared by the groups, separate from the global branch's), and its output class token is one local feature
[N, k, C]. Each local feature has its own BNNeck and classifier (`reidkit.models.reid`); at test time TransReID
retrieves with the global feature concatenated with the local ones divided by k.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def jigsaw_order(num_patches: int, shift: int, shuffle_groups: int) -> torch.Tensor:
    """Indices (into the T patch tokens) of the shifted and shuffled sequence, [T].

    Shift: patches shift, shift+1, …, T−1, 0, …, shift−1. Shuffle: the first T − T mod shuffle_groups of them,
    read as a [shuffle_groups, T/shuffle_groups] grid, are taken column by column; the remainder stays at the end.
    """
    shifted = [*range(shift, num_patches), *range(shift)]
    usable = num_patches - num_patches % shuffle_groups
    columns = usable // shuffle_groups
    shuffled = [shifted[row * columns + column] for column in range(columns) for row in range(shuffle_groups)]
    return torch.tensor(shuffled + shifted[usable:], dtype=torch.long)  # a constant when exported


class JigsawPatchModule(nn.Module):
    """tokens [N, 1 + T, C] entering the last layer → local features [N, groups, C] (see the module docstring).

    Args:
        last_layer: the trunk's last transformer layer ([N, L, C] → [N, L, C]); copied, not shared.
        norm: the trunk's final norm; copied.
        num_patches: T, the patch tokens of the trunk's grid.
        groups: local features k (TransReID: 4).
        shift: patch tokens moved from the front to the end (TransReID: 5).
        shuffle_groups: rows of the patch shuffle (TransReID: 2).

    Raises:
        ValueError: fewer patch tokens than groups.
    """

    def __init__(self, last_layer: nn.Module, norm: nn.Module, num_patches: int, groups: int = 4, shift: int = 5,
                 shuffle_groups: int = 2) -> None:
        super().__init__()
        if num_patches < groups:
            raise ValueError(f"{num_patches} patch tokens cannot be split into {groups} jigsaw groups; "
                             "lower model.jigsaw_groups or use a larger input")
        self.layer = copy.deepcopy(last_layer)
        self.norm = copy.deepcopy(norm)
        self.groups = groups
        size = num_patches // groups
        # the patch tokens of each group, in group order (the remainder of the cut left out); moves with the module
        self.register_buffer("order", jigsaw_order(num_patches, shift % num_patches, shuffle_groups)[:groups * size],
                             persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, _, channels = tokens.shape
        groups = tokens[:, 1:][:, self.order].reshape(batch, self.groups, -1, channels)
        class_token = tokens[:, None, :1].expand(batch, self.groups, 1, channels)
        sequences = torch.cat([class_token, groups], dim=2).flatten(0, 1)  # [N·k, 1 + T/k, C]
        outputs = self.norm(self.layer(sequences))
        return outputs[:, 0].reshape(batch, self.groups, channels)
