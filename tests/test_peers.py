"""Torchreid 0.2.5 and fast-reid 1.4.0 checkpoints in reidkit (reidkit.models.peers, `reidkit import`), checked
against the real packages: their model (random init, seeded, eval mode, random BatchNorm weights and
statistics) saved as a state dict, loaded in reidkit, gives the same feature for the same images,
each toolkit's own normalisation applied to both (features O(1): BatchNorm statistics from a calibration
batch); reidkit's test transform is checked to give that normalised input up to float rounding.

Both packages are installed with `pip install --no-deps torchreid==0.2.5 fastreid==1.4.0` (`make test` does it;
fast-reid also needs yacs and termcolor from the dev extra). Torchreid's package __init__ imports its whole
library (cv2, ...), so its model files are loaded directly: they need only torch.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reidkit.cli import main
from reidkit.config import load_config
from reidkit.data.build import build_dataset
from reidkit.data.transforms import build_test_transform
from reidkit.errors import ConfigError
from reidkit.models.peers import peer_architecture
from reidkit.models.reid import ReidModel, build_model
from reidkit.retrieval.feature_files import load_feature_file

TINY = str(Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml")
HEIGHT, WIDTH = 64, 32
TORCHREID_MEAN, TORCHREID_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchreid.data.transforms defaults


def torchreid_model(name: str, num_classes: int = 7, calibrate: bool = True) -> torch.nn.Module:
    spec = importlib.util.find_spec("torchreid")
    if spec is None:
        pytest.skip("torchreid is not installed (pip install --no-deps torchreid==0.2.5)")
    file = "osnet" if name.startswith("osnet") else "resnet"
    source = Path(spec.submodule_search_locations[0]) / "reid" / "models" / f"{file}.py"
    module_spec = importlib.util.spec_from_file_location(f"torchreid_models_{name}", source)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = getattr(module, name)(num_classes=num_classes, pretrained=False)
    return calibrated(model, lambda m: m(torchreid_inputs(pixels(8, seed=1)))) if calibrate else model.eval()


def fastreid_model(with_ibn: bool, num_classes: int = 7, calibration: torch.Tensor | None = None) -> torch.nn.Module:
    """fast-reid's BoT model, BatchNorm statistics of `calibration` (0–255 images; default random pixels)."""
    pytest.importorskip("fastreid", reason="pip install --no-deps fastreid==1.4.0 (and yacs, termcolor)")
    from fastreid.config import get_cfg
    from fastreid.modeling.meta_arch import build_model as build_fastreid

    cfg = get_cfg()  # fast-reid's configs/Market1501/bagtricks_R50(-ibn).yml, model part
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.BACKBONE.WITH_IBN = with_ibn
    cfg.MODEL.BACKBONE.LAST_STRIDE = 1
    cfg.MODEL.HEADS.WITH_BNNECK = True
    cfg.MODEL.HEADS.NECK_FEAT = "after"
    cfg.MODEL.HEADS.POOL_LAYER = "GlobalAvgPool"
    cfg.MODEL.HEADS.CLS_LAYER = "Linear"
    cfg.MODEL.HEADS.NUM_CLASSES = num_classes
    torch.manual_seed(0)
    calibration = pixels(8, seed=1) if calibration is None else calibration
    return calibrated(build_fastreid(cfg), lambda m: m.heads.bottleneck(m.heads.pool_layer(
        m.backbone(m.preprocess_image(calibration.clone())))))


def fastreid_preprocessing():
    """(fast-reid's test transform builder, its image reader), from its files: `fastreid.data`'s package
    __init__ imports its whole data pipeline (torch._six, tabulate, ...), which its transforms do not need."""
    spec = importlib.util.find_spec("fastreid")
    root = Path(spec.submodule_search_locations[0]) / "data"
    transforms_spec = importlib.util.spec_from_file_location(
        "fastreid_transforms", root / "transforms" / "__init__.py",
        submodule_search_locations=[str(root / "transforms")])
    transforms = importlib.util.module_from_spec(transforms_spec)
    sys.modules["fastreid_transforms"] = transforms  # its relative imports resolve through sys.modules
    transforms_spec.loader.exec_module(transforms)
    utils_spec = importlib.util.spec_from_file_location("fastreid_data_utils", root / "data_utils.py")
    utils = importlib.util.module_from_spec(utils_spec)
    utils_spec.loader.exec_module(utils)
    return transforms.build_transforms, utils.read_image


def calibrated(model: torch.nn.Module, forward) -> torch.nn.Module:
    """Random BatchNorm affine weights, then statistics of one batch of random images as training leaves them
    (so no layer is an identity and activations stay O(1), as in a trained network); eval mode."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(module.bias.shape, generator=generator) * 0.2 - 0.1)
            module.reset_running_stats()
            module.momentum = None  # cumulative average: the statistics of the calibration batch
    model.train()
    with torch.no_grad():
        forward(model)
    return model.eval()


def pixels(count: int = 2, seed: int = 0) -> torch.Tensor:
    """Random 0–255 images [N, 3, HEIGHT, WIDTH] as float."""
    return torch.randint(0, 256, (count, 3, HEIGHT, WIDTH), generator=torch.Generator().manual_seed(seed)).float()


def reidkit_inputs(images: torch.Tensor) -> torch.Tensor:
    """The same images through reidkit's test transform (from PIL images, as its loaders read them)."""
    transform = build_test_transform(HEIGHT, WIDTH)
    return torch.stack([transform(Image.fromarray(image.permute(1, 2, 0).to(torch.uint8).numpy()))
                        for image in images])


def torchreid_inputs(images: torch.Tensor) -> torch.Tensor:
    """Torchreid's test transform after resizing: ToTensor (÷255), Normalize(ImageNet mean, std)."""
    mean, std = torch.tensor(TORCHREID_MEAN).view(1, 3, 1, 1), torch.tensor(TORCHREID_STD).view(1, 3, 1, 1)
    return (images / 255 - mean) / std


def reidkit_features(peer: str, path: Path, state: dict, inputs: torch.Tensor) -> tuple[torch.Tensor, str, ReidModel]:
    """The feature reidkit evaluates with (`eval.feature` of `reidkit import`) of a model built with
    `model.weights: PEER:PATH` and the values `peer_architecture` names."""
    arch = peer_architecture(peer, state, str(path))
    model = build_model(arch["model.backbone"], num_classes=3, last_stride=arch["model.last_stride"],
                        weights=f"{peer}:{path}", embedding_dim=arch["model.embedding_dim"],
                        stem_pool=arch["model.stem_pool"], input_size=(HEIGHT, WIDTH)).eval()
    with torch.no_grad():
        return model(inputs)[arch["eval.feature"]], arch["eval.feature"], model


@pytest.mark.parametrize("name", ["osnet_x0_25", "osnet_x1_0", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_torchreid_features_are_reproduced(tmp_path, name):
    theirs = torchreid_model(name)
    path = tmp_path / f"{name}.pth"
    torch.save(theirs.state_dict(), path)
    inputs = torchreid_inputs(pixels())
    ours, feature, _ = reidkit_features("torchreid", path, theirs.state_dict(), inputs)
    with torch.no_grad():
        expected = theirs(inputs)  # eval mode: the pooled (and fc-embedded) feature
    assert feature == "features" and ours.shape == expected.shape == (2, 512 if name.startswith("osnet") else 2048)
    assert expected.std() > 0.1
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    # reidkit's own test transform gives Torchreid's input up to float rounding (which a random ResNet-50
    # amplifies to ~5e-4 in its features; OSNet's stay within 1e-5: the CLI test below)
    torch.testing.assert_close(reidkit_inputs(pixels()), inputs, atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("with_ibn", [False, True], ids=["bot_r50", "bot_r50_ibn"])
def test_fastreid_features_are_reproduced(tmp_path, with_ibn):
    theirs = fastreid_model(with_ibn)
    path = tmp_path / "model_final.pth"
    torch.save({"model": theirs.state_dict(), "iteration": 10}, path)  # fast-reid's Checkpointer layout
    inputs = theirs.preprocess_image(pixels())  # fast-reid's own normalisation: (pixels − PIXEL_MEAN) / PIXEL_STD
    torch.testing.assert_close(reidkit_inputs(pixels()), inputs, atol=1e-6, rtol=0)  # reidkit's, up to rounding
    ours, feature, model = reidkit_features("fastreid", path, theirs.state_dict(), inputs)
    with torch.no_grad():
        expected = theirs(pixels())  # eval mode: normalises 0–255 pixels itself, returns the BNNeck output
    assert feature == "bn_features" and ours.shape == expected.shape == (2, 2048)
    assert expected.std() > 0.1
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    arch = peer_architecture("fastreid", theirs.state_dict(), "x")
    assert arch["model.backbone"] == ("resnet50_ibn_a" if with_ibn else "resnet50") and arch["model.stem_pool"] == "ceil"
    # torchvision's padded stem pool sees other windows: the features differ, so the stem option matters
    model.backbone.stem[3] = torch.nn.MaxPool2d(3, stride=2, padding=1)
    with torch.no_grad():
        assert (model(inputs)["bn_features"] - expected).abs().max() > 1e-2


def test_unmapped_keys_are_one_error_listing_them(tmp_path):
    state = torchreid_model("osnet_x0_25").state_dict()
    state["conv4.0.extra_attention.weight"] = torch.zeros(3)
    state["head_of_something"] = torch.zeros(3)
    torch.save({"state_dict": state, "epoch": 1}, tmp_path / "extra.pth")
    with pytest.raises(ConfigError, match=r"2 keys .*\['conv4.0.extra_attention.weight', 'head_of_something'\]"):
        build_model("osnet_x0_25", 3, weights=f"torchreid:{tmp_path / 'extra.pth'}", embedding_dim=512)


def test_a_model_that_cannot_hold_the_checkpoint_names_the_values_it_needs(tmp_path):
    torch.save(torchreid_model("osnet_x0_25").state_dict(), tmp_path / "osnet.pth")
    # recognised from its keys without the prefix
    with pytest.raises(ConfigError, match="model.backbone=osnet_x0_25 model.embedding_dim=512"):
        build_model("resnet18", 3, weights=str(tmp_path / "osnet.pth"))
    with pytest.raises(ConfigError, match="is not a fastreid checkpoint.*torchreid"):
        build_model("osnet_x0_25", 3, weights=f"fastreid:{tmp_path / 'osnet.pth'}", embedding_dim=512)


def test_import_then_eval_extract_export_from_the_cli(tmp_path, capsys):
    """A Torchreid OSNet checkpoint as a run folder: the commands that open runs work on it, and the features
    `reidkit extract` writes are Torchreid's own for those images. (Torchreid's initial BatchNorm statistics:
    those of one small calibration batch leave near-zero variances that amplify ONNX's float rounding past the
    export's 1e-4 parity check.)"""
    theirs = torchreid_model("osnet_x0_25", calibrate=False)
    torch.save({"state_dict": theirs.state_dict(), "epoch": 60, "rank1": 0.5}, tmp_path / "osnet.pth.tar")
    run, data = tmp_path / "run", f"data.root={tmp_path / 'data'}"
    assert main(["--quiet", "import", "--weights", f"torchreid:{tmp_path / 'osnet.pth.tar'}", "--out", str(run),
                 "--config", TINY, data]) == 0
    assert "osnet_x0_25 + 512-d embedding, 7 classes, feature features" in capsys.readouterr().out
    assert main(["--quiet", "eval", "--run", str(run)]) == 0
    assert "mAP" in (run / "eval" / "synthetic" / "metrics.json").read_text()
    assert main(["--quiet", "extract", "--run", str(run), "--split", "query", "--out", str(tmp_path / "q.safetensors")]) == 0
    features, _, _, paths = load_feature_file(tmp_path / "q.safetensors")
    images = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB").resize((WIDTH, HEIGHT),
                                                                                          Image.BILINEAR)))
                          .permute(2, 0, 1).float() for p in paths[:4]])
    with torch.no_grad():
        expected = theirs(torchreid_inputs(images))
    torch.testing.assert_close(torch.as_tensor(features[:4]), expected, atol=1e-4, rtol=1e-4)
    assert main(["--quiet", "export", "--run", str(run), "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["--quiet", "import", "--weights", str(tmp_path / "osnet.pth.tar"), "--out", str(run),
                 "--config", TINY]) == 2
    assert "already holds a run" in capsys.readouterr().err
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    assert main(["--quiet", "import", "--weights", str(tmp_path / "other.pth"), "--out", str(tmp_path / "r2")]) == 2
    assert "is not a Torchreid or fast-reid checkpoint" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("with_ibn", [False, True], ids=["bot_r50", "bot_r50_ibn"])
def test_fastreid_import_then_extract_gives_fastreids_end_to_end_features(tmp_path, with_ibn):
    """`reidkit import` of a fast-reid checkpoint records fast-reid's bicubic resize in the run's config, so
    `reidkit extract` on image files gives the features of fast-reid's own pipeline: its image reader, its test
    transform (PIL bicubic resize, 0–255 tensor) and its model, which normalises as reidkit does, (x − 255m) /
    (255s): the inputs are equal to the bit, and the 1e-4 bound leaves room only for a different order of float32
    sums in the network (its own float32 error against float64 is ~7e-4 on these O(1) features, so an input
    rounded differently would not pass). The synthetic images are larger than 64×32, so each is resized; with
    bilinear resizing (reidkit's default, before the import set bicubic) the features differ by far more."""
    build_transforms, read_image = fastreid_preprocessing()
    from fastreid.config import get_cfg

    cfg = get_cfg()
    cfg.INPUT.SIZE_TEST = [HEIGHT, WIDTH]
    transform = build_transforms(cfg, is_train=False)
    run, data = tmp_path / "run", f"data.root={tmp_path / 'data'}"
    paths = [path for path, _, _ in build_dataset(load_config(TINY, [data]).data, progress=False).query]
    images = torch.stack([transform(read_image(path)) for path in paths])
    assert Image.open(paths[0]).size != (WIDTH, HEIGHT) and images.max() > 1  # resized, 0–255 pixels
    theirs = fastreid_model(with_ibn, calibration=images)  # BatchNorm statistics of these images: O(1) features
    torch.save({"model": theirs.state_dict(), "iteration": 10}, tmp_path / "model_final.pth")
    assert main(["--quiet", "import", "--weights", f"fastreid:{tmp_path / 'model_final.pth'}", "--out", str(run),
                 "--config", TINY, data]) == 0
    assert "interpolation: bicubic" in (run / "config.yaml").read_text()
    features = {}
    for interpolation in ("bicubic", "bilinear"):
        out = tmp_path / f"{interpolation}.safetensors"
        assert main(["--quiet", "extract", "--run", str(run), "--split", "query", "--out", str(out),
                     f"data.interpolation={interpolation}"]) == 0
        features[interpolation], _, _, extracted = load_feature_file(out)
        assert list(extracted) == paths
    with torch.no_grad():
        expected = theirs(images.clone())  # fast-reid normalises its input in place
    assert expected.std() > 0.1
    assert (torch.as_tensor(features["bicubic"]) - expected).abs().max() <= 1e-4
    assert (torch.as_tensor(features["bilinear"]) - expected).abs().max() > 1e-2
