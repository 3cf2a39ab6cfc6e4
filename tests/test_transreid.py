"""TransReID-style ViT (reidkit.models.timm_backbone): overlapping patches, camera embedding, the recipe."""

import json
from pathlib import Path

import pytest
import torch
from _cli import reidkit
from _recipe_run import train_recipe

from reidkit.errors import ConfigError
from reidkit.models.reid import build_model

pytest.importorskip("timm")
VIT = "timm/vit_tiny_patch16_224"
RECIPE = Path(__file__).resolve().parent.parent / "configs" / "transreid_market.yaml"


def test_overlapping_patches_give_the_21_by_10_grid_at_256_by_128():
    torch.manual_seed(0)
    model = build_model(VIT, 5, patch_stride=12, input_size=(256, 128)).eval()
    embed = model.backbone.model.patch_embed
    assert tuple(embed.grid_size) == (21, 10) and embed.proj.stride == (12, 12)  # (256−16)/12+1, ⌊(128−16)/12⌋+1
    assert model.backbone.model.pos_embed.shape[1] == 1 + 21 * 10
    tokens = model.backbone(torch.randn(2, 3, 256, 128))
    assert tokens.shape == (2, 1 + 210, 192)
    with pytest.raises(ConfigError, match="patch_stride: 20 is not allowed.*1 to 16"):
        build_model(VIT, 5, patch_stride=20, input_size=(64, 32))
    with pytest.raises(ConfigError, match="apply to .*vision transformers"):
        build_model("resnet18", 5, patch_stride=12)


def test_camera_embedding_is_added_per_camera_and_only_with_a_camera_id():
    torch.manual_seed(0)
    model = build_model(VIT, 5, patch_stride=12, cameras=3, camera_scale=3.0, input_size=(64, 32)).eval()
    trunk = model.backbone
    images = torch.randn(1, 3, 64, 32).expand(3, -1, -1, -1)
    with torch.no_grad():
        with_cameras = model(images, torch.tensor([0, 1, -1]))["features"]
        without = model(images)["features"]
        # by hand: the tokens of camera 1 get 3 × its embedding after the position embedding
        tokens = trunk.model._pos_embed(trunk.model.patch_embed(images[:1])) + 3.0 * trunk.camera_embedding[1]
        by_hand = trunk.model.norm(trunk.model.blocks(tokens))[:, 0]
    assert not torch.allclose(with_cameras[0], with_cameras[1], atol=1e-4)  # the camera changes the feature
    torch.testing.assert_close(with_cameras[1:2], by_hand)
    torch.testing.assert_close(with_cameras[2], without[0])  # unknown camera (-1): no camera vector
    with pytest.raises(ConfigError, match="camera id 3 has no camera embedding.*3 cameras"):
        model(images, torch.tensor([0, 1, 3]))
    loss = model(images[:2], torch.tensor([0, 2]))["features"].pow(2).sum()  # (a plain sum after LayerNorm is constant)
    grads = torch.autograd.grad(loss, trunk.camera_embedding)[0]
    assert grads[1].abs().sum() == 0 and grads[0].abs().sum() > 0 and grads[2].abs().sum() > 0


def test_imagenet_weights_offline_is_one_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    # huggingface_hub reads its environment when imported: set its constants too, or it waits on the network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ConfigError, match="timm could not load the pretrained weights of vit_tiny_patch16_224.*HF_HOME"):
        build_model(VIT, 5, weights="imagenet", patch_stride=12, cameras=3, input_size=(64, 32))


@pytest.mark.slow  # one short CLI run
def test_transreid_recipe_trains_on_the_synthetic_set_from_the_cli(tmp_path):
    run = train_recipe(RECIPE, tmp_path, f"model.backbone={VIT}", "train.log_every=1")
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["mAP"] <= 1 and metrics["num_valid_queries"] > 0
    from reidkit.engine.saved_runs import load_run_config, load_run_model

    model = load_run_model(run, load_run_config(run))
    assert model.backbone.camera_embedding.shape == (3, 1, 192) and model.uses_camids
    assert tuple(model.backbone.model.patch_embed.grid_size) == (5, 2)  # (64−16)/12+1, (32−16)/12+1
    assert model.jigsaw is not None and len(model.jigsaw_heads) == 4  # the recipe's jigsaw branch
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/jigsaw" in record for record in logged)
    # retrieval on the global + 4 local features; the export carries the same feature (its parity check passes)
    onnx = tmp_path / "model.onnx"
    result = reidkit("export", "--run", str(run), "--out", str(onnx))
    assert result.returncode == 0, result.stderr[-3000:]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    (features,) = session.run(None, {session.get_inputs()[0].name: torch.randn(2, 3, 64, 32).numpy()})
    assert features.shape == (2, 5 * 192)
