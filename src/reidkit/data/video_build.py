"""A video data set named by a config (`data.dataset` one of `VIDEO_DATASETS`), the synthetic tracklets
generated first when absent, and the single-frame views of a test set (image↔video evaluation)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from reidkit.data.datasets import ReidDataset
from reidkit.data.synthetic import SyntheticSpec
from reidkit.data.synthetic_video import MANIFEST, VideoSpec, generate_video_dataset
from reidkit.data.tracklets import VIDEO_LOADERS, load_mars
from reidkit.errors import DatasetError

VIDEO_MODES = ("video_to_video", "image_to_video", "video_to_image")


def build_video_dataset(source, progress: bool = True) -> ReidDataset:
    """Load the video set of a `DataSource`; "synthetic_video" is generated at `root` (MARS layout) when
    `root/synthetic_video.json` is missing, from `synthetic_identities`, `synthetic_cameras`, `synthetic_seed`
    and `synthetic_domain`, and a set made with other values is refused rather than reused."""
    if source.dataset in ("ilidsvid", "prid2011"):
        return VIDEO_LOADERS[source.dataset](source.root, source.video_split)
    if source.dataset != "synthetic_video":
        return VIDEO_LOADERS[source.dataset](source.root)
    root = Path(source.root)
    wanted = {"identities": source.synthetic_identities, "cameras": source.synthetic_cameras,
              "seed": source.synthetic_seed, "domain": source.synthetic_domain}
    if not (root / MANIFEST).is_file():
        spec = VideoSpec(identities=source.synthetic_identities, cameras=source.synthetic_cameras,
                         images=SyntheticSpec(identities=source.synthetic_identities, cameras=source.synthetic_cameras,
                                              domain=source.synthetic_domain))
        generate_video_dataset(root, spec, seed=source.synthetic_seed, progress=progress)
    written = json.loads((root / MANIFEST).read_text())
    found = {"identities": written["spec"]["identities"], "cameras": written["spec"]["cameras"],
             "seed": written["seed"], "domain": written["spec"]["images"]["domain"]}
    if found != wanted:
        raise DatasetError(f"{root} holds synthetic tracklets made with {found}, but the config asks for {wanted}; "
                           "point data.root at another folder or delete this one to regenerate it")
    return dataclasses.replace(load_mars(root), name="synthetic_video")


def single_frames(tracklets: list) -> list:
    """Each tracklet `(paths, pid, camid)` as a one-frame tracklet of its middle frame."""
    return [((paths[len(paths) // 2],), pid, camid) for paths, pid, camid in tracklets]


def with_video_mode(dataset: ReidDataset, mode: str) -> ReidDataset:
    """`dataset` with its queries ("image_to_video") or its gallery ("video_to_image") cut to single frames
    (`single_frames`); "video_to_video" leaves it as it is.

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in VIDEO_MODES:
        raise ValueError(f"unknown video mode {mode!r}; choose one of {', '.join(VIDEO_MODES)}")
    if mode == "image_to_video":
        return dataclasses.replace(dataset, query=single_frames(dataset.query))
    if mode == "video_to_image":
        return dataclasses.replace(dataset, gallery=single_frames(dataset.gallery))
    return dataset
