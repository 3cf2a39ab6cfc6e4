"""Temporal aggregation and tracklet sampling: hand-worked values, frame-order invariance, padding masks, and a
tracklet model that equals its frame model pooled by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reidkit.data.tracklet_loading import (collate_tracklets, frame_chunks, sample_frames, tracklet_chunks)
from reidkit.engine.tracklet_extraction import merge_chunks
from reidkit.models.reid import build_model
from reidkit.models.temporal import AGGREGATIONS, TemporalAttention, build_aggregation


def trained_like(name: str, dim: int = 8) -> torch.nn.Module:
    """The aggregation with every parameter drawn at random (its zero init would hide order effects)."""
    torch.manual_seed(0)
    module = build_aggregation(name, dim).double().eval()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.5)
    return module


def test_average_and_max_by_hand():
    frames = torch.tensor([[[1.0, -2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert torch.equal(build_aggregation("avg", 2)(frames, mask), torch.tensor([[2.0, 1.0]]))
    assert torch.equal(build_aggregation("max", 2)(frames, mask), torch.tensor([[3.0, 4.0]]))


def test_attention_weights_by_hand():
    attention = TemporalAttention(2)
    with torch.no_grad():
        attention.score.weight.copy_(torch.tensor([[1.0, 0.0]]))
    frames = torch.tensor([[[0.0, 5.0], [math.log(3.0), 7.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    weights = attention.frame_weights(frames, mask)
    torch.testing.assert_close(weights, torch.tensor([[0.25, 0.75, 0.0]]))  # softmax(0, ln 3) = 1/4, 3/4
    torch.testing.assert_close(attention(frames, mask), torch.tensor([[0.75 * math.log(3.0), 6.5]]), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", AGGREGATIONS)
def test_frame_order_does_not_matter(name):
    module = trained_like(name)
    frames = torch.randn(3, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    order = torch.tensor([3, 0, 4, 2, 1])
    for mask in (None, torch.tensor([[True, True, True, False, True]] * 3)):
        permuted = None if mask is None else mask[:, order]
        torch.testing.assert_close(module(frames[:, order], permuted), module(frames, mask), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", AGGREGATIONS)
def test_padding_never_changes_the_result(name):
    """A tracklet padded with garbage frames (masked) gives its unpadded result, wherever the padding sits."""
    module = trained_like(name)
    generator = torch.Generator().manual_seed(2)
    frames = torch.randn(1, 3, 8, dtype=torch.float64, generator=generator)
    alone = module(frames, None)
    padded = torch.cat([frames[:, :1], 1e3 * torch.randn(1, 2, 8, dtype=torch.float64, generator=generator),
                        frames[:, 1:]], dim=1)
    mask = torch.tensor([[True, False, False, True, True]])
    torch.testing.assert_close(module(padded, mask), alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["attention", "transformer"])
def test_learned_aggregations_start_as_average_pooling(name):
    frames = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(3))
    module = build_aggregation(name, 8).eval()
    torch.testing.assert_close(module(frames, None), frames.mean(dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(module(frames, torch.ones(2, 4, dtype=torch.bool)), frames.mean(dim=1), rtol=1e-5,
                               atol=1e-6)


def test_unknown_aggregation_lists_the_choices():
    with pytest.raises(KeyError, match="avg, max, attention, transformer"):
        build_aggregation("lstm", 8)


def test_sampling_strategies_match_torchreid_by_hand():
    assert sample_frames(10, 4, "evenly") == [0, 2, 4, 6]  # 10 - 10 % 4 = 8 frames, step 2
    assert sample_frames(3, 5, "evenly") == [0, 1, 2, 2, 2]  # short: the last frame repeated
    assert sample_frames(6, 3, "all") == [0, 1, 2, 3, 4, 5]
    drawn = sample_frames(10, 4, "random", np.random.default_rng(0))
    assert drawn == sorted(drawn) and len(set(drawn)) == 4 and max(drawn) < 10
    short = sample_frames(2, 5, "random", np.random.default_rng(0))
    assert len(short) == 5 and set(short) <= {0, 1}
    with pytest.raises(ValueError, match="evenly, random, all"):
        sample_frames(4, 2, "dense")


def test_chunks_cover_each_tracklet_once():
    assert frame_chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert frame_chunks([4, 5], 0) == [[4, 5]]
    samples = [(("a",) * 5, 1, 0), (("b",) * 2, 2, 1)]
    assert tracklet_chunks(samples, 4, "all", 2) == [(0, [0, 1]), (0, [2, 3]), (0, [4]), (1, [0, 1])]


def test_chunk_features_merge_into_the_mean_over_all_frames():
    frames = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    chunks = torch.stack([frames[:3].mean(0), frames[3:6].mean(0), frames[6:].mean(0)])
    merged = merge_chunks(chunks, torch.tensor([0, 0, 0]), torch.tensor([3, 3, 1]), 1)
    torch.testing.assert_close(merged[0], frames.mean(0), rtol=1e-12, atol=1e-12)


def test_collate_pads_to_the_longest_tracklet_with_a_mask():
    items = [{"images": torch.ones(length, 3, 4, 2), "pids": pid, "camids": 0, "indices": pid}
             for pid, length in ((0, 2), (1, 3))]
    batch = collate_tracklets(items + [None])
    assert batch["images"].shape == (2, 3, 3, 4, 2) and batch["skipped"] == 1
    assert batch["frame_mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["images"][0, 2].abs().sum() == 0


@pytest.mark.parametrize("temporal", ["avg", "max"])
def test_tracklet_model_pools_its_frame_features(temporal):
    """[B, T, 3, H, W] through the model = its frame features [B·T, D] pooled by hand, then the head; padded
    frames (masked) change nothing."""
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=5, last_stride=2, temporal=temporal).eval()
    tracklets = torch.randn(2, 3, 3, 32, 16)
    with torch.no_grad():
        frame_features = model.forward_features(tracklets.flatten(0, 1)).unflatten(0, (2, 3))
        pooled = frame_features.mean(1) if temporal == "avg" else frame_features.amax(1)
        outputs = model(tracklets)
        padded = model(torch.cat([tracklets, torch.randn(2, 2, 3, 32, 16)], dim=1),
                       frame_mask=torch.tensor([[True] * 3 + [False] * 2] * 2))
    torch.testing.assert_close(outputs["features"], pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["bn_features"], model.forward_head(pooled)["bn_features"])
    torch.testing.assert_close(padded["features"], outputs["features"], rtol=1e-5, atol=1e-5)
    assert outputs["logits"].shape == (2, 5)


def tiny_tracklets(folder) -> list:
    """4 identities × 2 cameras of 8×16 frames, 1 to 5 frames per tracklet, each frame its own colour."""
    from PIL import Image

    samples = []
    for pid in range(4):
        for camid, length in ((0, 2 + pid), (1, 1)):
            paths = []
            for frame in range(length):
                path = folder / f"{pid}_{camid}_{frame}.png"
                Image.new("RGB", (8, 16), (40 * pid, 20 * frame, 100 + 50 * camid)).save(path)
                paths.append(str(path))
            samples.append((tuple(paths), pid, camid))
    return samples


def first_batch(samples, strategy: str, p: int = 3, sampler=None) -> dict:
    from reidkit.data.tracklet_loading import build_tracklet_train_loader
    from reidkit.data.transforms import build_train_transform

    transform = build_train_transform(16, 8, flip_prob=0.5, pad=2, erasing_prob=0.5)
    loader = build_tracklet_train_loader(samples, transform, p=p, k=2, seed=7, workers=0, seq_len=3,
                                         strategy=strategy, batch_sampler=sampler)
    loader.batch_sampler.set_epoch(1)
    return next(iter(loader))


def test_training_batches_of_whole_tracklets_are_padded_and_reproducible(tmp_path):
    samples = tiny_tracklets(tmp_path)
    batch, again = first_batch(samples, "all"), first_batch(samples, "all")
    lengths = [len(samples[i][0]) for i in batch["indices"].tolist()]
    assert batch["frame_mask"].sum(1).tolist() == lengths and batch["images"].shape[1] == max(lengths)
    assert torch.equal(batch["images"], again["images"])
    assert np.bincount(batch["pids"].tolist()).tolist().count(2) == 3  # P = 3 identities, K = 2 tracklets each


def test_two_ranks_together_draw_the_single_process_batch(tmp_path):
    """Tracklets split by whole identities over ranks, the same frames and augmentation as one process."""
    from reidkit.data.samplers import DistributedPKSampler

    samples = tiny_tracklets(tmp_path)
    pids = [pid for _, pid, _ in samples]
    single = first_batch(samples, "random", p=4)
    ranks = [first_batch(samples, "random", p=4, sampler=DistributedPKSampler(pids, 4, 2, seed=7, rank=r,
                                                                               world_size=2)) for r in (0, 1)]
    assert torch.equal(torch.cat([batch["images"] for batch in ranks]), single["images"])
    assert torch.cat([batch["indices"] for batch in ranks]).tolist() == single["indices"].tolist()


def test_video_config_checks():
    from reidkit.config import load_config
    from reidkit.errors import ConfigError

    with pytest.raises(ConfigError, match="model.temporal=attention aggregates the frames of tracklets"):
        load_config(None, ["model.temporal=attention"])
    with pytest.raises(ConfigError, match="cameras must be in 2..6"):
        load_config(None, ["data.dataset=synthetic_video", "data.synthetic_cameras=8"])
    config = load_config(None, ["data.dataset=mars", "model.temporal=transformer", "data.seq_len=8"])
    assert (config.model.temporal, config.data.seq_len, config.eval.frame_sampling) == ("transformer", 8, "all")
