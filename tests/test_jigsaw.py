"""TransReID's jigsaw patch module (reidkit.models.jigsaw) and its loss (reidkit.losses.jigsaw)."""

import numpy as np
import pytest
import torch

from reidkit.config import load_config
from reidkit.errors import ConfigError
from reidkit.losses.jigsaw import jigsaw_loss
from reidkit.losses.metric import trihard_loss
from reidkit.losses.representation import cross_entropy_label_smooth
from reidkit.models.jigsaw import JigsawPatchModule, jigsaw_order
from reidkit.models.reid import build_model

VIT = "timm/vit_tiny_patch16_224"


def test_jigsaw_order_by_hand():
    # shift 2: 2 3 4 5 6 7 0 1; as 2 rows [2 3 4 5 / 6 7 0 1] read column by column
    assert jigsaw_order(8, shift=2, shuffle_groups=2).tolist() == [2, 6, 3, 7, 4, 0, 5, 1]
    # 9 patches, shift 5: 5 6 7 8 0 1 2 3 4; the first 8 as [5 6 7 8 / 0 1 2 3], the 9th stays last
    assert jigsaw_order(9, shift=5, shuffle_groups=2).tolist() == [5, 0, 6, 1, 7, 2, 8, 3, 4]
    assert jigsaw_order(6, shift=0, shuffle_groups=1).tolist() == [0, 1, 2, 3, 4, 5]  # neither shift nor shuffle
    assert sorted(jigsaw_order(210, shift=5, shuffle_groups=2).tolist()) == list(range(210))  # a permutation


class Mixer(torch.nn.Module):
    """A layer that mixes its tokens (so a group's class token depends on every token of the group)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(channels, channels)

    def forward(self, tokens):
        return self.linear(tokens) + tokens.mean(dim=1, keepdim=True).tanh()


def test_each_local_feature_is_its_group_with_the_class_token_through_the_copied_layer():
    torch.manual_seed(0)
    layer, norm = Mixer(6), torch.nn.LayerNorm(6)
    module = JigsawPatchModule(layer, norm, num_patches=10, groups=3, shift=2, shuffle_groups=2)
    assert module.layer is not layer and torch.equal(module.layer.linear.weight, layer.linear.weight)  # a copy
    tokens = torch.randn(2, 1 + 10, 6)  # 10 patches → groups of 3, one patch left out
    local = module(tokens)
    order = jigsaw_order(10, 2, 2)
    for i in range(3):
        group = tokens[:, 1:][:, order[3 * i:3 * i + 3]]
        expected = norm(layer(torch.cat([tokens[:, :1], group], dim=1)))[:, 0]
        torch.testing.assert_close(local[:, i], expected)
    # a patch outside group 0 does not reach local feature 0; one inside does
    outside, inside = int(order[3]), int(order[0])
    for patch, changes in ((outside, False), (inside, True)):
        moved = tokens.clone()
        moved[:, 1 + patch] += 1.0
        assert torch.allclose(module(moved)[:, 0], local[:, 0]) != changes


def test_jigsaw_model_outputs_and_retrieval_features():
    pytest.importorskip("timm")
    torch.manual_seed(0)
    plain = build_model(VIT, 5, input_size=(64, 32)).eval()
    torch.manual_seed(0)
    model = build_model(VIT, 5, input_size=(64, 32), jigsaw_groups=4).eval()
    images = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        out, reference = model(images), plain(images)
    torch.testing.assert_close(out["features"], reference["features"])  # the global branch is unchanged
    local = out["jigsaw"]
    assert local["features"].shape == local["bn_features"].shape == (3, 4, 192) and local["logits"].shape == (3, 4, 5)
    torch.testing.assert_close(out["jigsaw_features"],
                               torch.cat([out["features"], local["features"].flatten(1) / 4], dim=1))
    torch.testing.assert_close(out["jigsaw_bn_features"],
                               torch.cat([out["bn_features"], local["bn_features"].flatten(1) / 4], dim=1))
    last = model.backbone.model.blocks[-1].state_dict()
    assert all(torch.equal(value, model.jigsaw.layer.state_dict()[key]) for key, value in last.items())
    assert model.freeze_unused(["logits", "features"]) == ["jigsaw"]  # no loss reads the branch: not trained
    with pytest.raises(ConfigError, match="jigsaw_groups needs a vision transformer"):
        build_model("resnet18", 5, jigsaw_groups=4)
    with pytest.raises(ConfigError, match="2 patch tokens cannot be split into 4 jigsaw groups"):
        build_model(VIT, 5, input_size=(32, 16), jigsaw_groups=4)  # a 2 × 1 grid


def test_jigsaw_loss_is_the_mean_of_each_local_id_and_triplet_loss():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    local = {"logits": torch.randn(6, 3, 4, requires_grad=True), "features": torch.randn(6, 3, 8, requires_grad=True)}
    loss = jigsaw_loss(local, labels, label_smoothing=0.1, margin=0.3)
    expected = np.mean([float(cross_entropy_label_smooth(local["logits"][:, i], labels, 0.1)
                              + trihard_loss(local["features"][:, i], labels, 0.3)) for i in range(3)])
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert all(local[key].grad[:, i].abs().sum() > 0 for key in local for i in range(3))


def test_config_refuses_a_jigsaw_reader_without_the_branch(tmp_path):
    with pytest.raises(ConfigError, match="loss.jigsaw reads TransReID's jigsaw branch.*model.jigsaw_groups"):
        load_config(None, ["loss.jigsaw.weight=0.5"])
    with pytest.raises(ConfigError, match="eval.feature reads TransReID's jigsaw branch"):
        load_config(None, ["eval.feature=jigsaw_bn_features"])
    with pytest.raises(ConfigError, match="jigsaw_shuffle_groups"):
        load_config(None, ["model.jigsaw_shuffle_groups=0"])
