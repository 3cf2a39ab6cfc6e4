"""Model contract: output dict, last stride, pooling, BNNeck details, local weights only."""

import pytest
import torch

from reidkit.errors import ConfigError
from reidkit.models.backbones import BACKBONES, build_backbone
from reidkit.models.heads import GeneralizedMeanPooling
from reidkit.models.reid import build_model


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("pooling", ["avg", "gem"])
def test_every_backbone_trains(backbone, pooling):
    torch.manual_seed(0)
    model = build_model(backbone, num_classes=5, last_stride=1, pooling=pooling)
    out = model(torch.randn(4, 3, 64, 32))
    dim = 512 if backbone != "resnet50" else 2048
    assert out["features"].shape == out["bn_features"].shape == (4, dim)
    assert out["logits"].shape == (4, 5)
    assert out["attr_logits"] == {}
    (out["logits"].logsumexp(1).mean() + out["features"].pow(2).mean()).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_same_keys_in_train_and_eval():
    model = build_model("resnet18", num_classes=3)
    x = torch.randn(2, 3, 64, 32)
    assert model.train()(x).keys() == model.eval()(x).keys()


def test_last_stride_doubles_the_feature_map():
    x = torch.randn(1, 3, 256, 128)
    assert build_backbone("resnet50", last_stride=1)(x).shape[-2:] == (16, 8)
    assert build_backbone("resnet50", last_stride=2)(x).shape[-2:] == (8, 4)
    assert build_backbone("resnet18", last_stride=1)(x).shape[-2:] == (16, 8)


def test_bnneck_bias_frozen_and_classifier_bias_free():
    model = build_model("resnet18", num_classes=3)
    assert not model.head.bn.bias.requires_grad
    assert model.head.classifier.bias is None
    model.eval()
    features = torch.randn(4, 512)
    out = model.forward_head(features)
    expected = (features - model.head.bn.running_mean) / torch.sqrt(model.head.bn.running_var + model.head.bn.eps)
    torch.testing.assert_close(out["bn_features"], expected)


def test_gem_interpolates_average_and_max():
    maps = torch.rand(2, 3, 4, 4) + 0.1
    assert torch.allclose(GeneralizedMeanPooling(p=1.0)(maps), maps.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(GeneralizedMeanPooling(p=200.0)(maps), maps.amax(dim=(2, 3)), rtol=0.03)


def test_unknown_backbone_lists_choices():
    with pytest.raises(KeyError, match="resnet18, resnet34, resnet50"):
        build_backbone("vgg16")


def test_local_weights_safetensors_and_pth(tmp_path):
    from safetensors.torch import save_file
    import torchvision

    reference = torchvision.models.resnet18()
    state = reference.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r18.safetensors"))
    torch.save(state, tmp_path / "r18.pth")
    for name in ("r18.safetensors", "r18.pth"):
        trunk = build_backbone("resnet18", weights=tmp_path / name)
        torch.testing.assert_close(trunk.stem[0].weight, reference.conv1.weight)
        torch.testing.assert_close(trunk.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_wrong_weights_are_refused(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ConfigError, match="does not match resnet50"):
        build_backbone("resnet50", weights=tmp_path / "r18.pth")
    with pytest.raises(ConfigError, match="does not exist"):
        build_backbone("resnet18", weights=tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable weights file"):
        build_backbone("resnet18", weights=tmp_path / "junk.pth")
