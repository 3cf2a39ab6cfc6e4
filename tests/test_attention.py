"""Mancs's fully attentional block and attention-aware branch (`reidkit.models.attention`): shapes, the
formula, identity at insertion, the model's output dict and the config checks."""

import pytest
import torch

from reidkit.config import load_config
from reidkit.errors import ConfigError
from reidkit.models.attention import FullyAttentionalBlock
from reidkit.models.backbones import BACKBONES, build_backbone
from reidkit.models.reid import build_model


def test_block_keeps_the_shape_and_its_mask_re_weights_channels_and_positions():
    torch.manual_seed(0)
    block = FullyAttentionalBlock(32, reduction=8)
    x = torch.randn(2, 32, 5, 3)
    assert block.squeeze.out_channels == 4 and block.mask(x).shape == x.shape == block(x).shape
    torch.nn.init.normal_(block.excite.weight)
    torch.nn.init.normal_(block.excite.bias)
    mask = block.mask(x)
    hidden = torch.relu(torch.einsum("oc,nchw->nohw", block.squeeze.weight[:, :, 0, 0], x)
                        + block.squeeze.bias[None, :, None, None])
    logits = (torch.einsum("oc,nchw->nohw", block.excite.weight[:, :, 0, 0], hidden)
              + block.excite.bias[None, :, None, None])
    torch.testing.assert_close(mask, 2 * torch.sigmoid(logits))
    torch.testing.assert_close(block(x), x * mask)
    # not a per-channel constant (an SE block's mask) nor a per-position one: it varies along both
    assert mask.std(dim=(2, 3)).mean() > 0.05 and mask.std(dim=1).mean() > 0.05
    assert 0 < mask.min() and mask.max() < 2


def test_block_is_the_identity_at_insertion_and_its_last_layer_learns():
    block = FullyAttentionalBlock(16)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    y = block(x)
    assert torch.equal(y, x)
    y.pow(2).sum().backward()
    assert block.excite.weight.grad.abs().sum() > 0  # the zero layer gets a gradient, so the mask can move


def test_blocks_and_branch_start_as_the_identity_so_pretrained_weights_keep_their_output(tmp_path):
    torch.manual_seed(0)
    torch.save(BACKBONES["resnet18"]().state_dict(), tmp_path / "r18.pth")
    plain = build_backbone("resnet18", weights=tmp_path / "r18.pth").eval()
    mancs = build_backbone("resnet18", weights=tmp_path / "r18.pth", attention_blocks=True).eval()
    assert [type(stage[-1]).__name__ for stage in (mancs.layer2, mancs.layer3, mancs.layer4)] == \
        ["FullyAttentionalBlock", "FullyAttentionalBlock", "BasicBlock"]
    x = torch.randn(2, 3, 64, 32)
    torch.testing.assert_close(mancs(x), plain(x))
    model = build_model("resnet18", num_classes=5, last_stride=2, attention_blocks=True,
                        attention_branch=True).eval()
    out = model(x)
    assert set(out) == {"features", "bn_features", "logits", "attr_logits", "att_features"}
    assert out["att_features"].shape == out["features"].shape == (2, 512)
    torch.testing.assert_close(out["att_features"], out["features"])  # the branch's block starts at 1 too
    assert "att_features" not in build_model("resnet18", num_classes=5)(x)


def test_attention_is_refused_where_it_cannot_be_inserted_or_read():
    with pytest.raises(ConfigError, match="attention_blocks"):
        build_backbone("osnet_x0_25", attention_blocks=True)
    with pytest.raises(ConfigError, match="model.attention_branch=true"):
        load_config(None, ["loss.curriculum_triplet.weight=1", "loss.curriculum_triplet.feature=att_features"])
    with pytest.raises(ConfigError, match="eval.feature=att_features"):
        load_config(None, ["eval.feature=att_features"])
    load_config(None, ["model.attention_branch=true", "eval.feature=att_features"])


def test_an_unread_branch_is_frozen():
    model = build_model("resnet18", num_classes=3, attention_branch=True)
    assert "attention_branch" in model.freeze_unused(["logits", "features"])
    assert all(not p.requires_grad for p in model.attention_branch.parameters())
    assert "attention_branch" not in build_model("resnet18", num_classes=3, attention_branch=True).freeze_unused(
        ["logits", "att_features"])
