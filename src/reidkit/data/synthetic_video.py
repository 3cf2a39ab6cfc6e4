"""Synthetic tracklets in the MARS layout: the people and cameras of `reidkit.data.synthetic`, filmed walking.

Each identity is seen by 2-3 cameras, each camera films 1-2 tracklets: consecutive frames of one walk past a
fixed background, with the pose cycling, the box drifting and the person growing or shrinking a little from
frame to frame, an occluder that stays for part of the walk, and a few frames dropped (a gap in the frame
numbers) or motion-blurred. Test identities give one query tracklet in all but one of their cameras; junk
(pid -1, bad crops) and distractor (pid 0, other people) tracklets join the test tracks. The folders and
files are those of MARS (Zheng et al., ECCV 2016): `bbox_train/<pid>/`, `bbox_test/<pid>/` with frames
`0001C1T0001F001.jpg`, and `info/` with the name lists, `tracks_*_info.mat` and `query_IDX.mat`, so the
MARS loader reads it. Every frame is a function of (seed, tracklet, frame): a seed gives the same files.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from reidkit.data.synthetic import SyntheticSpec
from reidkit.data.synthetic_camera import VIEWS, Camera, degrade, draw_occluder, make_camera, scene_crop
from reidkit.data.synthetic_draw import Placement, Pose, draw_person, sample_placement
from reidkit.data.synthetic_identity import Identity, sample_identity
from reidkit.errors import ConfigError, DatasetError
from reidkit.outputs import flush_to_disk, write_image, write_json, write_text

MANIFEST = "synthetic_video.json"  # written last: its presence means a complete data set
_IDENTITY, _SPLIT, _WALK, _FALSE = 1, 8, 9, 10  # random streams (1 = the image generator's identities)


@dataclass(frozen=True)
class VideoSpec:
    """Size of the synthetic tracklet set; `images` holds the people's and cameras' look and difficulty."""

    identities: int = 100  # half train, half test
    cameras: int = 6  # 2..6 (MARS has 6 cameras)
    frames: tuple[int, int] = (6, 16)  # inclusive range of frames per tracklet
    drop_prob: float = 0.05  # a frame is missing from the walk (gap in the frame numbers)
    blur_prob: float = 0.05  # a frame is motion-blurred
    false_tracklets: float = 0.05  # junk and distractor tracklets each, fraction of the test tracklets
    images: SyntheticSpec = field(default_factory=SyntheticSpec)

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", tuple(self.frames))
        if not 4 <= self.identities <= 9999:
            raise ConfigError(f"identities must be in 4..9999 (4-digit pids), got {self.identities}")
        if not 2 <= self.cameras <= 6:
            raise ConfigError(f"cameras must be in 2..6 (MARS names and cameras 1-6), got {self.cameras}")
        if not 1 <= self.frames[0] <= self.frames[1] <= 999:
            raise ConfigError(f"frames must be (min, max) with 1 <= min <= max <= 999, got {self.frames}")
        if not (0 <= self.drop_prob < 1 and 0 <= self.blur_prob <= 1 and 0 <= self.false_tracklets <= 1):
            raise ConfigError("drop_prob must be in [0, 1), blur_prob and false_tracklets in [0, 1]")


@dataclass(frozen=True)
class _Walk:
    """One tracklet to film: who (pid, or a drawn outsider for distractors), where, and how it is written."""

    pid: int  # written pid: -1 junk, 0 distractor, else the identity
    identity_pid: int  # identity drawn (for junk: a test identity badly cropped)
    camera: int
    number: int  # tracklet number within (pid, camera), 1-based
    split: str  # "train" or "test"
    key: tuple[int, ...]
    kind: str = "person"  # "person", "partial" (junk), "outsider" (distractor)


def _split(spec: VideoSpec, seed: int) -> tuple[list[int], list[int]]:
    order = np.random.default_rng([seed, _SPLIT]).permutation(np.arange(1, spec.identities + 1))
    count = spec.identities - spec.identities // 2
    return sorted(order[:count].tolist()), sorted(order[count:].tolist())


def _plan(spec: VideoSpec, seed: int) -> tuple[list[_Walk], list[int]]:
    """All walks, and the indices (into the test walks) of the queries."""
    train_pids, test_pids = _split(spec, seed)
    walks, test_walks, queries = [], [], []
    for pid in train_pids + test_pids:
        rng = np.random.default_rng([seed, _WALK, pid])
        cameras = np.sort(rng.choice(spec.cameras, int(rng.integers(2, min(3, spec.cameras) + 1)), replace=False)) + 1
        split = "train" if pid in train_pids else "test"
        query_cameras = set(rng.choice(cameras, len(cameras) - 1, replace=False).tolist())
        for camera in cameras.tolist():
            for number in range(1, int(rng.integers(1, 3)) + 1):
                walk = _Walk(pid, pid, camera, number, split, (_WALK, pid, camera, number))
                if split == "test" and number == 1 and camera in query_cameras:
                    queries.append(len(test_walks))
                (walks if split == "train" else test_walks).append(walk)
    count = round(spec.false_tracklets * len(test_walks))
    for j in range(2 * count):
        rng = np.random.default_rng([seed, _FALSE, j])
        junk = j < count
        test_walks.append(_Walk(-1 if junk else 0, int(rng.choice(test_pids)), int(rng.integers(1, spec.cameras + 1)),
                                j + 1, "test", (_FALSE, j), "partial" if junk else "outsider"))
    return walks + test_walks, queries


def _frame_name(pid: int, camera: int, number: int, frame: int) -> str:
    return f"{'00-1' if pid < 0 else f'{pid:04d}'}C{camera}T{number:04d}F{frame:03d}.jpg"


def film_walk(identity: Identity, camera: Camera, spec: VideoSpec, rng: np.random.Generator,
              partial: bool = False) -> list[Image.Image | None]:
    """The frames of one walk (None for a dropped frame): a fixed background, view and occluder; pose, box and
    scale changing a little per frame. `partial`: a bad detection, half out of the box (junk)."""
    count = int(rng.integers(spec.frames[0], spec.frames[1] + 1))
    view = VIEWS[int(rng.choice(len(VIEWS), p=camera.view_probs))]
    start = sample_placement(rng, spec.images.misalignment)
    if partial:
        side = rng.choice((-1.0, 1.0))
        start = Placement(0.5 + side * rng.uniform(0.4, 0.6), rng.uniform(-0.6, 0.3), rng.uniform(0.8, 1.8))
    drift, growth = rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01)
    phase, step = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.0)
    background_seed = int(rng.integers(2**31))
    occluded = range(0)
    if rng.random() < spec.images.occlusion_prob:
        first = int(rng.integers(count))
        occluded = range(first, first + int(rng.integers(1, count + 1)))
    occluder_seed = int(rng.integers(2**31))
    frames: list[Image.Image | None] = []
    for t in range(count):
        if t > 0 and rng.random() < spec.drop_prob:
            frames.append(None)
            continue
        placement = Placement(start.centre_x + drift * t + rng.normal(0, 0.005), start.top + rng.normal(0, 0.004),
                              start.height * (1 + growth * t))
        swing = float(np.sin(phase + step * t))
        image = scene_crop(camera, np.random.default_rng(background_seed))
        layer = draw_person(identity, view, Pose(stride=swing, arm_swing=-swing), image.size, placement)
        image.paste(layer, (0, 0), layer)
        if t in occluded:
            passer_by = ((90, 90, 90), (60, 60, 60), (200, 170, 140))
            draw_occluder(image, camera, np.random.default_rng(occluder_seed), passer_by)
        if rng.random() < spec.blur_prob:
            image = image.filter(ImageFilter.BoxBlur(float(rng.uniform(2.0, 5.0))))
        frames.append(degrade(image, camera, rng))
    return frames


def generate_video_dataset(out_dir: str | Path, spec: VideoSpec = VideoSpec(), seed: int = 0,
                           progress: bool = True) -> dict[str, int]:
    """Film the synthetic tracklets and write them to `out_dir` in the MARS layout (module docstring).

    A previous synthetic tracklet set there is replaced; `synthetic_video.json` (spec, seed, counts) is
    written last, so its presence means a complete set.

    Returns:
        Counts: `train`, `query`, `gallery` tracklets (gallery with junk and distractors), `frames`.

    Raises:
        DatasetError: `out_dir` is a non-empty folder that holds no previous synthetic tracklet set.
        ValueError: `seed` < 0.
    """
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, got {seed}")
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not (out / "info").is_dir():
        raise DatasetError(f"{out} is not empty and holds no synthetic tracklet set; choose an empty or new folder")
    for folder in ("bbox_train", "bbox_test", "info"):
        shutil.rmtree(out / folder, ignore_errors=True)
    (out / MANIFEST).unlink(missing_ok=True)
    walks, queries = _plan(spec, seed)
    cameras = {c: make_camera(spec.images, seed, c) for c in range(1, spec.cameras + 1)}
    identities: dict[int, Identity] = {}
    names: dict[str, list[str]] = {"train": [], "test": []}
    tracks: dict[str, list[list[int]]] = {"train": [], "test": []}
    for walk in tqdm(walks, desc="filming tracklets", unit="tracklet", disable=None if progress else True):
        rng = np.random.default_rng([seed, *walk.key])
        if walk.kind == "outsider":
            identity = sample_identity(rng)
        else:
            if walk.identity_pid not in identities:
                identities[walk.identity_pid] = sample_identity(np.random.default_rng([seed, _IDENTITY,
                                                                                       walk.identity_pid]))
            identity = identities[walk.identity_pid]
        frames = film_walk(identity, cameras[walk.camera], spec, rng, partial=walk.kind == "partial")
        start = len(names[walk.split]) + 1
        for index, frame in enumerate(frames, start=1):
            if frame is None:
                continue
            name = _frame_name(walk.pid, walk.camera, walk.number, index)
            write_image(out / f"bbox_{walk.split}" / name[:4] / name, frame, "JPEG", durable=False,
                        quality=cameras[walk.camera].jpeg_quality)
            names[walk.split].append(name)
        tracks[walk.split].append([start, len(names[walk.split]), walk.pid, walk.camera])
    from scipy.io import savemat  # heavy import, needed only here

    (out / "info").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        write_text(out / "info" / f"{split}_name.txt", "".join(f"{name}\n" for name in names[split]))
        savemat(out / "info" / f"tracks_{split}_info.mat", {f"track_{split}_info": np.array(tracks[split], np.int32)})
    savemat(out / "info" / "query_IDX.mat", {"query_IDX": np.array(queries, np.int32)[None, :] + 1})
    counts = {"train": len(tracks["train"]), "query": len(queries),
              "gallery": len(tracks["test"]) - len(queries), "frames": len(names["train"]) + len(names["test"])}
    flush_to_disk()
    write_json(out / MANIFEST, {"generator": "reidkit.data.synthetic_video", "seed": seed, "spec": asdict(spec),
                                "counts": counts})
    return counts
