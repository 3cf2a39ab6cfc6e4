"""Model contract: output dict, last stride, pooling, BNNeck details, local weights only."""

import sys

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
    dim = model.backbone.out_channels
    assert dim == {"resnet50": 2048, "resnet50_ibn_a": 2048, "osnet_x0_75": 384, "osnet_x0_5": 256,
                   "osnet_x0_25": 128}.get(backbone, 512)
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
    with pytest.raises(KeyError, match="resnet18, resnet34, resnet50, resnet50_ibn_a, osnet_x1_0"):
        build_backbone("vgg16")


# Small timm models of each family the issue names (a CNN with output_stride, ConvNeXt, EfficientNet, ViT).
TIMM_EXAMPLES = ["timm/resnet18d", "timm/convnext_atto", "timm/efficientnet_b0", "timm/vit_tiny_patch16_224"]


@pytest.mark.parametrize("backbone", list(BACKBONES) + TIMM_EXAMPLES)
def test_every_backbone_serves_both_sizes_and_exports_to_onnx(backbone, tmp_path):
    """The registry contract (one test over every name): a map at 1/16 of the input (last stride 1 or no
    strided last stage) or a transformer's class token + 1/16-grid tokens, the model's dict at 64×32 and
    256×128, and ONNX output equal to PyTorch's."""
    import numpy as np
    import onnxruntime

    from reidkit.export.onnx_fp32 import write_onnx
    from reidkit.export.source import feature_module

    for height, width in ((64, 32), (256, 128)):
        torch.manual_seed(0)
        model = build_model(backbone, num_classes=4, input_size=(height, width)).eval()
        images = torch.randn(2, 3, height, width)
        maps = model.backbone(images)
        if maps.dim() == 3:  # tokens: class token first
            assert maps.shape[1] == 1 + (height // 16) * (width // 16)
        else:
            assert maps.shape[-2:] == (height // 16, width // 16)
        out = model(images)
        assert set(out) == {"features", "bn_features", "logits", "attr_logits"} and out["logits"].shape == (2, 4)
        assert out["features"].shape == (2, model.backbone.out_channels)
    model = build_model(backbone, num_classes=4, input_size=(64, 32)).eval()
    write_onnx(feature_module(model, "bn_features", flip=False), torch.randn(1, 3, 64, 32), tmp_path / "model.onnx",
                opset=17)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    images = torch.randn(3, 3, 64, 32)
    (onnx_features,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_features, model(images)["bn_features"].numpy(), rtol=1e-3, atol=1e-4)


def test_ibn_a_normalises_half_the_channels_per_image_in_stages_1_to_3():
    from reidkit.models.ibn import IBN

    trunk = build_backbone("resnet50_ibn_a")
    ibn = [name for name, module in trunk.named_modules() if isinstance(module, IBN)]
    assert len(ibn) == 3 + 4 + 6 and not any(name.startswith("layer4") for name in ibn)  # every block of 1-3
    layer = IBN(8).eval()
    x = torch.randn(3, 8, 5, 5) * 4 + 2
    y = layer(x)
    first = y[:, :4].flatten(2)  # instance norm: each image and channel standardised on its own
    torch.testing.assert_close(first.mean(-1), torch.zeros(3, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[:, 4:], layer.BN(x[:, 4:]))
    assert "layer1.0.bn1.IN.weight" in trunk.state_dict() and "layer1.0.bn1.BN.running_mean" in trunk.state_dict()


def test_osnet_block_mixes_four_scales_with_one_shared_gate():
    from reidkit.models.osnet import AggregationGate, OmniScaleBlock, OSNet

    block = OmniScaleBlock(32, 64)
    assert [len(stream) for stream in block.streams] == [1, 2, 3, 4]  # receptive fields 3, 5, 7, 9
    assert sum(isinstance(m, AggregationGate) for m in block.modules()) == 1
    assert block(torch.randn(2, 32, 8, 4)).shape == (2, 64, 8, 4)
    parameters = {width: sum(p.numel() for p in OSNet(width).parameters()) for width in (1.0, 0.25)}
    assert 1.8e6 < parameters[1.0] < 2.0e6 and 1.2e5 < parameters[0.25] < 1.5e5
    with pytest.raises(ConfigError, match="non_local"):
        build_backbone("osnet_x0_25", non_local=True)


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


def test_non_local_block_against_a_loop_over_positions():
    """z_i = x_i + W·Σ_j (θ(x_i)·φ(x_j) / HW) g(x_j), W a 1×1 conv then BatchNorm (eval: affine map)."""
    from reidkit.models.non_local import NonLocalBlock

    torch.manual_seed(0)
    block = NonLocalBlock(4).double().eval()
    bn = block.out[1]
    with torch.no_grad():  # a non-trivial BatchNorm so the residual branch counts
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)

    def conv(layer, v):  # a 1×1 convolution at one position: W v + b
        return layer.weight[:, :, 0, 0] @ v + layer.bias

    expected = torch.empty_like(x)
    for n in range(2):
        positions = [x[n, :, i, j] for i in range(3) for j in range(5)]
        for index, x_i in enumerate(positions):
            y = sum(conv(block.theta, x_i) @ conv(block.phi, x_j) / 15 * conv(block.g, x_j) for x_j in positions)
            w_y = conv(block.out[0], y)
            z = x_i + (w_y - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
            expected[n, :, index // 5, index % 5] = z
    torch.testing.assert_close(block(x), expected)


def test_non_local_blocks_start_as_the_identity_so_imagenet_weights_keep_their_output(tmp_path):
    torch.manual_seed(0)
    torch.save(BACKBONES["resnet50"]().state_dict(), tmp_path / "r50.pth")
    plain = build_backbone("resnet50", weights=tmp_path / "r50.pth").eval()
    agw = build_backbone("resnet50", weights=tmp_path / "r50.pth", non_local=True).eval()
    kinds = [[type(block).__name__ for block in stage] for stage in (agw.layer2, agw.layer3)]
    assert kinds == [["Bottleneck"] * 3 + ["NonLocalBlock", "Bottleneck", "NonLocalBlock"],
                     ["Bottleneck"] * 4 + ["NonLocalBlock", "Bottleneck"] * 2 + ["NonLocalBlock"]]
    x = torch.randn(2, 3, 64, 32)
    torch.testing.assert_close(agw(x), plain(x))
    model = build_model("resnet50", num_classes=3, pooling="gem", non_local=True)
    out = model(x)
    out["logits"].logsumexp(1).mean().backward()
    inserted = model.backbone.layer3[4]
    assert inserted.out[0].weight.grad.abs().sum() == 0  # BN scale 0: no gradient reaches W yet ...
    assert inserted.out[1].weight.grad.abs().sum() > 0  # ... but the scale itself learns


@pytest.mark.slow  # two short CLI runs
@pytest.mark.parametrize("recipe, backbone", [("bot_r50_ibn_a_market.yaml", "resnet50_ibn_a"),
                                              ("osnet_market.yaml", "osnet_x0_25")])
def test_backbone_recipes_train_on_the_synthetic_set_from_the_cli(recipe, backbone, tmp_path):
    import json
    from pathlib import Path

    from _recipe_run import train_recipe

    run = train_recipe(Path(__file__).resolve().parent.parent / "configs" / recipe, tmp_path,
                       f"model.backbone={backbone}")
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["mAP"] <= 1 and metrics["num_valid_queries"] > 0
    assert f"backbone: {backbone}" in (run / "config.yaml").read_text()


def test_imagenet_weights_come_from_torchvisions_cache_or_name_the_file_to_place(tmp_path, monkeypatch):
    from urllib.error import URLError

    import torchvision

    from reidkit.models import weights as weights_module

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = weights_module.imagenet_cache_file("resnet18")
    assert cached == tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    torch.manual_seed(3)
    reference = torchvision.models.resnet18()
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    trunk = build_backbone("resnet18", weights="imagenet")  # from the cache: no network
    assert torch.equal(trunk.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)

    class Offline:
        url = "https://download.pytorch.org/models/resnet34-b627a593.pth"

        def get_state_dict(self, **_):
            raise URLError("Name or service not known")

    monkeypatch.setitem(weights_module.IMAGENET_WEIGHTS, "resnet34", Offline())
    with pytest.raises(ConfigError, match=r"could not download .*resnet34.*place it at .*torch/hub/checkpoints/"
                                          r"resnet34-b627a593.pth"):
        build_backbone("resnet34", weights="imagenet")
    with pytest.raises(ConfigError, match="torchvision has no ImageNet weights for osnet_x0_25"):
        build_backbone("osnet_x0_25", weights="imagenet")


def test_timm_backbones_by_name_with_local_weights_and_clear_errors(tmp_path, monkeypatch):
    import timm

    from reidkit.models.timm_backbone import TimmTrunk

    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_patch16_224")  # a 14×14 grid and a classifier, as published
    torch.save(source.state_dict(), tmp_path / "vit.pth")
    trunk = build_backbone("timm/vit_tiny_patch16_224", weights=tmp_path / "vit.pth", input_size=(64, 32))
    assert isinstance(trunk, TimmTrunk) and trunk.model.pos_embed.shape == (1, 1 + 4 * 2, 192)
    assert torch.equal(trunk.model.blocks[5].mlp.fc1.weight, source.blocks[5].mlp.fc1.weight)
    assert torch.equal(trunk.model.pos_embed[:, 0], source.pos_embed[:, 0])  # class token's kept, grid resized
    with pytest.raises(ConfigError, match="timm has no model 'resnet50dd'; did you mean resnet50d"):
        build_backbone("timm/resnet50dd")
    with pytest.raises(ConfigError, match="does not fit this timm model: missing"):
        build_backbone("timm/resnet18d", weights=tmp_path / "vit.pth")
    with pytest.raises(ConfigError, match="non_local"):
        build_backbone("timm/resnet18d", non_local=True)
    monkeypatch.setitem(sys.modules, "timm", None)  # timm not installed
    with pytest.raises(ConfigError, match=r"pip install 'reidkit\[timm\]'"):
        build_backbone("timm/resnet18d")


def test_timm_parameters_that_forward_features_skips_are_frozen_for_ddp():
    """timm's MobileNetV3 runs conv_head in forward_head, which reidkit replaces: left trainable, DDP stops at the
    second step (no gradient for it). Every trainable parameter must get a gradient from a training forward."""
    from reidkit.models.reid import build_model

    model = build_model("timm/mobilenetv3_small_100", num_classes=4, last_stride=2)
    frozen = {name for name, parameter in model.backbone.named_parameters(prefix="backbone")
              if not parameter.requires_grad}
    assert frozen == {"backbone.model.conv_head.weight", "backbone.model.conv_head.bias"}
    outputs = model(torch.randn(4, 3, 64, 32))
    (outputs["logits"].sum() + outputs["features"].sum()).backward()
    assert all(parameter.grad is not None for parameter in model.parameters() if parameter.requires_grad)
