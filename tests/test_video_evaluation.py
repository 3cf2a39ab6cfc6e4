"""The MARS protocol through reidkit's evaluator gives Torchreid 0.2.5's numbers on the same tracklet features
(its video engine: frame features averaged per tracklet, squared Euclidean distances, its Python ranking), and
the image<->video modes cut the right side to single frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _torchreid_video import load_torchreid_module
from reidkit.data.video_build import single_frames, with_video_mode
from reidkit.data.tracklets import load_mars
from reidkit.engine.evaluation import evaluate_feature_sets
from reidkit.models.temporal import build_aggregation
from test_video_datasets import write_mars


def mars_tracks(rng: np.random.Generator) -> dict:
    """A MARS copy of 12 test identities over 4 cameras, 2-3 tracklets each, plus junk and distractors."""
    test = []
    for pid in range(1, 13):
        for camera in rng.choice(4, int(rng.integers(2, 4)), replace=False) + 1:
            test.append((pid, int(camera), 1, int(rng.integers(1, 5))))
    test += [(-1, 1, 1, 2), (0, 2, 1, 3), (0, 3, 1, 1)]
    return {"train": [(100, 1, 1, 2), (101, 2, 1, 2)], "test": test}


@pytest.mark.filterwarnings("ignore:Cython evaluation")  # Torchreid's note that it ranks in Python
def test_mars_protocol_matches_torchreid(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    tracks = mars_tracks(rng)
    queries = tuple(row + 1 for row in range(0, len(tracks["test"]) - 3, 2))  # every other real tracklet
    write_mars(tmp_path / "mars", tracks, queries)
    ours = load_mars(tmp_path / "mars")
    theirs = load_torchreid_module(monkeypatch, "data/datasets/video/mars.py").Mars(root=str(tmp_path))
    ranking = load_torchreid_module(monkeypatch, "metrics/rank.py")
    frame_feature = {}  # one feature per frame file, the same for both tools

    def frames_of(tracklet):
        return torch.stack([frame_feature.setdefault(path, torch.from_numpy(rng.normal(size=6)))
                            for path in tracklet[0]])

    average = build_aggregation("avg", 6)

    def ours_features(split):  # reidkit: the temporal aggregation of the model, one tracklet at a time
        return torch.cat([average(frames_of(t)[None], None) for t in split])

    def theirs_features(split):  # Torchreid's video engine: torch.mean over the sequence dimension
        return torch.stack([torch.mean(frames_of(t), 0) for t in split])

    mine = evaluate_feature_sets(ours_features(ours.query), ours_features(ours.gallery), ours.query, ours.gallery,
                                 "euclidean", max_rank=10)
    qf, gf = theirs_features(theirs.query), theirs_features(theirs.gallery)
    distmat = (qf.pow(2).sum(1, keepdim=True) + gf.pow(2).sum(1) - 2 * qf @ gf.T).numpy()  # their squared L2
    labels = [np.array([t[i] for t in split]) for i, split in ((1, theirs.query), (1, theirs.gallery),
                                                               (2, theirs.query), (2, theirs.gallery))]
    cmc, mean_ap = ranking.evaluate_rank(distmat, *labels, max_rank=10, use_cython=False)
    assert mine["mAP"] == pytest.approx(float(mean_ap), abs=1e-12)
    np.testing.assert_allclose(mine["cmc"][:len(cmc)], cmc, atol=1e-12)
    assert mine["num_valid_queries"] == len(theirs.query)
    assert 0 < mine["mAP"] < 1  # a real ranking, not a degenerate one


def test_video_modes_cut_one_side_to_middle_frames(tmp_path):
    write_mars(tmp_path / "mars")
    dataset = load_mars(tmp_path / "mars")
    image_queries = with_video_mode(dataset, "image_to_video")
    assert image_queries.gallery == dataset.gallery
    assert [paths for paths, _, _ in image_queries.query] == [(paths[len(paths) // 2],) for paths, _, _ in
                                                               dataset.query]
    image_gallery = with_video_mode(dataset, "video_to_image")
    assert image_gallery.query == dataset.query and image_gallery.gallery == single_frames(dataset.gallery)
    assert with_video_mode(dataset, "video_to_video") is dataset
    with pytest.raises(ValueError, match="video_to_video, image_to_video, video_to_image"):
        with_video_mode(dataset, "image_to_image")
