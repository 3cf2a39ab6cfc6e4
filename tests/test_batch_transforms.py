"""Decoded-image cache and batch augmentation (`data.cache`) against the PIL path: the same draws and the
same pixels for the same seeds, erasing statistics, batches independent of worker counts, and training
runs that cannot tell the two apart."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import reidkit
from PIL import Image
from torchvision.transforms import v2

from reidkit.data.batch_transforms import BatchAugmentation, PatchDraws, RandomPatch
from reidkit.data.cache import CachedTrainLoader, cache_bytes, choose_cache, decode_images
from reidkit.data.loading import build_train_loader, seeded_pk_batches
from reidkit.data.transforms import _resize, build_train_transform
from reidkit.errors import DatasetError

pytestmark = pytest.mark.numerics  # batched augmentation bitwise equal to the PIL path

ROOT = Path(__file__).resolve().parent.parent
H, W = 64, 32


def _pil_images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (rng.integers(50, 90), rng.integers(20, 50), 3), dtype=np.uint8))
            for _ in range(count)]


def _pil_path(images, seeds, **settings) -> torch.Tensor:
    transform = build_train_transform(H, W, **settings)
    outputs = []
    for image, seed in zip(images, seeds):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            outputs.append(transform(image))
    return torch.stack(outputs)


@pytest.mark.parametrize("settings", [{}, {"flip_prob": 1.0, "pad": 3, "erasing_prob": 1.0},
                                      {"flip_prob": 0.0, "pad": 0, "erasing_prob": 0.0}, {"pad": 0},
                                      {"erasing_prob": 1.0, "erasing_fill": "normalised_mean"}])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_a_batch_gets_the_pixels_of_the_pil_path_for_the_same_seeds(settings, interpolation) -> None:
    images, seeds = _pil_images(48), list(range(7000, 7048))
    decoded = torch.stack([v2.Compose([_resize(H, W, interpolation), v2.PILToTensor()])(image) for image in images])
    batch = BatchAugmentation(H, W, **settings)(decoded, seeds)
    assert batch.dtype == torch.float32 and batch.shape == (48, 3, H, W)
    assert torch.equal(batch, _pil_path(images, seeds, interpolation=interpolation, **settings))


def test_each_draw_is_the_one_torchvision_makes_from_the_seed() -> None:
    augmentation = BatchAugmentation(H, W, flip_prob=0.5, pad=10, erasing_prob=0.5)
    draws = augmentation.draw([5, 6, 7])
    for row, seed in enumerate([5, 6, 7]):  # the PIL path's calls, one after the other under the seed
        torch.manual_seed(seed)
        assert bool(draws.flip[row]) == bool(torch.rand(1) < 0.5)
        crop = v2.RandomCrop((H, W)).make_params([torch.empty(3, H + 20, W + 20)])
        assert (int(draws.top[row]), int(draws.left[row])) == (crop["top"], crop["left"])
        erased = not bool(torch.rand(1) >= 0.5)
        if erased:
            params = v2.RandomErasing(p=0.5, value=0).make_params([torch.empty(3, H, W)])
            erased = params["v"] is not None
            box = (params["i"], params["j"], params["h"], params["w"])
            if erased:
                assert (int(draws.erase_top[row]), int(draws.erase_left[row]), int(draws.erase_height[row]),
                        int(draws.erase_width[row])) == box
        assert bool(draws.erase[row]) == erased


def test_erasing_statistics_follow_random_erasing() -> None:
    """p = 0.5 of the images erased (fewer: a draw finds no fitting box in 10 tries), areas in [0.02, 0.33]
    of the image, aspect ratios in [0.3, 3.3] up to rounding, boxes inside the image."""
    draws = BatchAugmentation(H, W, erasing_prob=0.5).draw(range(4000))
    share = draws.erase.float().mean().item()
    assert 0.45 < share <= 0.53
    height, width = draws.erase_height[draws.erase].float(), draws.erase_width[draws.erase].float()
    area = height * width / (H * W)
    assert area.min() >= 0.015 and area.max() <= 0.34 and 0.12 < area.mean() < 0.2
    ratio = height / width
    assert ratio.min() >= 0.3 * 0.8 and ratio.max() <= 3.3 * 1.25
    assert (draws.erase_top[draws.erase] + height.long() <= H).all()
    assert (draws.erase_left[draws.erase] + width.long() <= W).all()


def test_erased_pixels_are_zero_after_normalisation_and_only_inside_the_box() -> None:
    augmentation = BatchAugmentation(H, W, flip_prob=0.0, pad=0, erasing_prob=1.0)
    images = torch.full((64, 3, H, W), 200, dtype=torch.uint8)
    draws = augmentation.draw(range(64))
    output = augmentation.apply(images, draws)
    for row in torch.nonzero(draws.erase).flatten().tolist():
        top, left = int(draws.erase_top[row]), int(draws.erase_left[row])
        height, width = int(draws.erase_height[row]), int(draws.erase_width[row])
        zero = output[row].eq(0).all(dim=0)
        assert zero.sum() == height * width and zero[top:top + height, left:left + width].all()


def test_bad_batches_are_refused() -> None:
    augmentation = BatchAugmentation(H, W)
    with pytest.raises(ValueError, match=r"expected uint8 images \[B, 3, 64, 32\]"):
        augmentation(torch.zeros(2, 3, H, W), [1, 2])
    with pytest.raises(ValueError, match="erasing_prob"):
        BatchAugmentation(H, W, erasing_prob=1.5)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from reidkit.config import load_config
    from reidkit.data.build import build_dataset

    root = tmp_path_factory.mktemp("cache_data")
    config = load_config(ROOT / "configs" / "tiny.yaml", [f"data.root={root}"])
    return build_dataset(config.data, progress=False)


@pytest.mark.parametrize("patch", [0.0, 0.5])
def test_cached_batches_equal_the_pil_loader_for_any_number_of_workers(tiny_dataset, patch) -> None:
    """Also with random patch, which both paths run on the whole batch: the same batches for 0 and 2 workers."""
    samples = tiny_dataset.train
    pids = [pid for _, pid, _ in samples]
    images, readable = decode_images(samples, H, W, workers=0, progress=False)
    images_2, readable_2 = decode_images(samples, H, W, workers=2, progress=False)
    assert torch.equal(images, images_2) and torch.equal(readable, readable_2) and readable.all()
    cached = CachedTrainLoader(images, readable, pids, seeded_pk_batches(samples, 4, 4, 3),
                               BatchAugmentation(H, W, random_patch_prob=patch), torch.device("cpu"))
    for workers in (0, 2):
        pil = build_train_loader(samples, build_train_transform(H, W), 4, 4, seed=3, workers=workers,
                                 batch_transform=RandomPatch(patch) if patch else None)
        for epoch in (1, 2):
            pil.batch_sampler.set_epoch(epoch)
            cached.batch_sampler.set_epoch(epoch)
            pairs = list(zip(pil, cached, strict=True))
            assert pairs
            for a, b in pairs:
                assert torch.equal(a["indices"], b["indices"]) and torch.equal(a["pids"], b["pids"])
                assert torch.equal(a["images"], b["images"]) and a["skipped"] == b["skipped"] == 0


def test_cached_test_images_give_the_pil_test_loader_batches(tiny_dataset) -> None:
    from reidkit.data.cache import CachedTestImages
    from reidkit.data.loading import build_test_loader
    from reidkit.data.transforms import build_test_transform

    samples = tiny_dataset.query + tiny_dataset.gallery
    cached = CachedTestImages.decode(samples, H, W, torch.device("cpu"), progress=False)
    pil = torch.cat([batch["images"] for batch in build_test_loader(samples, build_test_transform(H, W), 7, 0)])
    ours = torch.cat([batch["images"] for batch in cached.batches(0, len(samples), 7, torch.device("cpu"))])
    assert len(cached) == len(samples) and torch.equal(ours, pil)
    shard = torch.cat([batch["images"] for batch in cached.batches(5, 12, 3, torch.device("cpu"))])
    assert torch.equal(shard, pil[5:12])  # a rank's contiguous shard, in order


def test_unreadable_images_are_named_or_skipped_and_counted(tiny_dataset, tmp_path) -> None:
    samples = list(tiny_dataset.train[:6])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    samples[2] = (str(broken), samples[2][1], samples[2][2])
    with pytest.raises(DatasetError, match="broken.jpg.*data.skip_bad_images=true"):
        decode_images(samples, H, W, progress=False)
    images, readable = decode_images(samples, H, W, skip_bad_images=True, progress=False)
    assert readable.tolist() == [True, True, False, True, True, True] and images[2].eq(0).all()
    loader = CachedTrainLoader(images, readable, [pid for _, pid, _ in samples], [[(2, 1), (0, 2)], [(2, 3)]],
                               BatchAugmentation(H, W), torch.device("cpu"))
    first, second = list(loader)
    assert first["skipped"] == 1 and first["indices"].tolist() == [0] and second == {"skipped": 1}


def test_auto_picks_by_size_and_says_what_it_picked(monkeypatch) -> None:
    import reidkit.data.cache as cache

    assert cache_bytes(10, 256, 128) == 10 * 3 * 256 * 128
    monkeypatch.setattr(cache, "_available_host_bytes", lambda: 4 * cache_bytes(1000, 256, 128))
    assert choose_cache("auto", 1000, 256, 128, torch.device("cpu"))[0] == "memory"
    mode, why = choose_cache("auto", 1001, 256, 128, torch.device("cpu"))
    assert mode == "none" and "exceed a quarter of the free memory" in why and "1001 images" in why
    assert choose_cache("device", 5, 256, 128, torch.device("cpu")) == ("device", "data.cache=device; 5 images, "
                                                                               "0 MiB as uint8 at 256×128")
    with pytest.raises(ValueError, match="data.cache must be one of"):
        choose_cache("gpu", 5, 8, 8, torch.device("cpu"))


@pytest.mark.slow  # two short training runs
def test_training_from_the_cache_is_the_training_from_pil_workers(tmp_path) -> None:
    """Same batches, seeds and pixels: the metrics.jsonl of the two runs are identical, byte for byte."""
    logs = {}
    for mode in ("none", "memory"):
        run = tmp_path / mode
        result = reidkit("train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--out", str(run),
                         f"data.root={tmp_path / 'data'}", "train.epochs=1", f"data.cache={mode}")
        assert result.returncode == 0, result.stderr[-3000:]
        logs[mode] = (run / "metrics.jsonl").read_text()
    assert logs["none"] == logs["memory"] and logs["none"].count('"kind": "train"') >= 5
    assert math.isfinite(float(logs["none"].split('"loss": ')[1].split(",")[0]))


def test_random_patch_pastes_the_drawn_rectangle_of_the_source_image() -> None:
    """By hand: image b filled with the value 10·b + pixel index; image 0 gets rows 1–3, columns 4–5 of image 2,
    mirrored, at (5, 0); image 1 nothing; image 2 rows 0–1, columns 0–2 of image 0 at (6, 1)."""
    images = torch.stack([10.0 * b + torch.arange(3 * 8 * 6, dtype=torch.float32).reshape(3, 8, 6) for b in range(3)])
    draws = PatchDraws(paste=torch.tensor([True, False, True]), source=torch.tensor([2, 1, 0]),
                       height=torch.tensor([3, 0, 2]), width=torch.tensor([2, 0, 3]),
                       source_top=torch.tensor([1, 0, 0]), source_left=torch.tensor([4, 0, 0]),
                       top=torch.tensor([5, 0, 6]), left=torch.tensor([0, 0, 1]),
                       flip=torch.tensor([True, False, False]))
    expected = images.clone()
    expected[0, :, 5:8, 0:2] = images[2, :, 1:4, 4:6].flip(-1)
    expected[2, :, 6:8, 1:4] = images[0, :, 0:2, 0:3]
    assert torch.equal(RandomPatch(1.0).apply(images, draws), expected)


def test_random_patch_draws_follow_fastreids_sizes_and_take_patches_from_other_images() -> None:
    """p = 0.5 of the images patched, each from another slot of the batch, area 1–50 % of the image (up to
    rounding), aspect ratio in [0.1, 10], inside both images; the same seeds give the same draws."""
    patch = RandomPatch(0.5)
    seeds = list(range(3000))
    draws = patch.draw(seeds, H, W)
    assert 0.45 < draws.paste.float().mean() < 0.55
    assert (draws.source[draws.paste] != torch.arange(3000)[draws.paste]).all()
    assert len(set(draws.source[draws.paste].tolist())) > 1000
    height, width = draws.height[draws.paste].float(), draws.width[draws.paste].float()
    area = height * width / (H * W)
    assert area.min() >= 0.005 and area.max() <= 0.55
    assert (height / width).min() >= 0.1 * 0.5 and (height / width).max() <= 10 * 2
    for top, left in ((draws.top, draws.left), (draws.source_top, draws.source_left)):
        assert (top[draws.paste] + height.long() <= H).all() and (left[draws.paste] + width.long() <= W).all()
    assert 0.4 < draws.flip[draws.paste].float().mean() < 0.6
    again = patch.draw(seeds, H, W)
    assert all(torch.equal(a, b) for a, b in zip(vars(draws).values(), vars(again).values()))
    assert not patch.draw([5], H, W).paste.any()  # a batch of one image has no other image to cut from
    unchanged = torch.rand(4, 3, H, W)
    assert torch.equal(RandomPatch(0.0)(unchanged, [1, 2, 3, 4]), unchanged)


@pytest.mark.slow  # a short training run
def test_training_with_every_peer_augmentation_on(tmp_path) -> None:
    """The CLI trains with the peers' augmentations on: the PIL-only ones make data.cache=auto load the training
    images with PIL workers (said in the log), and the run's config.yaml records every setting."""
    options = ["data.interpolation=bicubic", "data.erasing_fill=normalised_mean", "data.autoaugment_prob=0.5",
               "data.augmix_prob=0.5", "data.colour_jitter_prob=0.5", "data.translate_prob=0.5",
               "data.random_patch_prob=0.5"]
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "reidkit", "train", "--config", str(ROOT / "configs" / "tiny.yaml"),
                             "--out", str(run), f"data.root={tmp_path / 'data'}", "train.epochs=1", *options],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training images: not cached: data.autoaugment_prob augments PIL images one at a time" in \
        result.stdout + result.stderr
    config = (run / "config.yaml").read_text()
    for option in options:
        key, value = option.removeprefix("data.").split("=")
        assert f"  {key}: {value}\n" in config
    losses = [float(line.split('"loss": ')[1].split(",")[0]) for line in (run / "metrics.jsonl").read_text()
              .splitlines() if '"kind": "train"' in line]
    assert len(losses) >= 3 and all(math.isfinite(loss) for loss in losses)
