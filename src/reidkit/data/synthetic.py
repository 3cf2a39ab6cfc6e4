"""Built-in procedural multi-camera pedestrian data set, written in the Market-1501 layout.

No real ReID data set can be fetched everywhere, so reidkit draws its own: every identity (body shape,
skin and hair, clothing colours from the small Market-1501 palette, textures, shoes, accessories) is seen
by several cameras, each with a fixed character (viewpoints, scene, colour cast, blur, resolution) plus
per-image pose, misalignment and occlusion. The output mirrors Market-1501 (Zheng et al., "Scalable
person re-identification: a benchmark", ICCV 2015): ``bounding_box_train/``, ``bounding_box_test/``
(with pid -1 junk and pid 0000 distractors), ``query/`` (one image per identity and camera), names
``PPPP_cCsS_FFFFFF_BB.jpg``, and ``attributes.csv`` coded like the Market-1501 attribute annotation.

Every image is a pure function of ``(seed, stream, pid, image index)``, so a seed gives byte-identical
files in any order and with any number of worker processes.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import shutil
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from reidkit.data.synthetic_camera import DOMAINS, Camera, make_camera
from reidkit.data.synthetic_draw import Placement, render_person, render_scene
from reidkit.data.synthetic_identity import ATTRIBUTE_NAMES, Identity, sample_identity
from reidkit.errors import ConfigError, DatasetError
from reidkit.outputs import flush_to_disk, write_image, write_json, write_text

SPLIT_FOLDERS = ("bounding_box_train", "bounding_box_test", "query")
MANIFEST = "synthetic.json"  # written last: its presence means a complete data set
UNFINISHED = "synthetic.unfinished.json"  # present while generating (or after an interrupted run)
# Independent random streams: the first entry after the seed in every ``default_rng`` key
# (3 is ``synthetic_camera.CAMERA_STREAM``).
_IDENTITY, _LAYOUT, _SPLIT, _IMAGE, _JUNK, _DISTRACTOR = 1, 2, 4, 5, 6, 7


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and difficulty of the synthetic data set.

    The difficulty knobs (``occlusion_prob`` to ``clutter``) are 0 when switched off; with all of them at 0
    only viewpoint, pose and the camera scenes separate the images of one person. ``colour_cast`` and
    ``illumination`` decide how much the cameras disagree on colours, which is what defeats colour histograms.
    """

    identities: int = 300  # half train, half test (by identity), like Market-1501's 751/750
    cameras: int = 6  # at most 9 (one digit in the file name); every identity is seen by ≥ 2
    images_per_identity: tuple[int, int] = (6, 18)  # inclusive range; each camera seen gets ≥ 2 images
    height: int = 128  # output image size in pixels (Market-1501 size)
    width: int = 64
    junk_fraction: float = 0.05  # pid -1 gallery images (bad crops, empty boxes), fraction of the person gallery
    distractor_fraction: float = 0.05  # pid 0000 gallery images (other people, background), same base
    occlusion_prob: float = 0.2  # probability that a pole, object or passer-by hides part of the person
    misalignment: float = 0.08  # largest box shift/scale error, fraction of the crop size
    colour_cast: float = 0.15  # per-camera white-balance deviation (relative gain per channel) and saturation change
    illumination: float = 0.25  # per-camera brightness deviation; per-image jitter is 0.3× this
    blur: float = 0.8  # largest per-camera Gaussian blur sigma, output pixels
    resolution_drop: float = 0.5  # largest per-camera loss of resolution (0.5: down to half size and back)
    noise: float = 4.0  # largest per-camera sensor noise standard deviation (0..255 units)
    clutter: float = 1.0  # amount of background props in the scenes and random shapes per image
    # Family of camera styles and scenes (``synthetic_camera.DOMAINS``): "a", a sunlit campus; "b", dim indoor
    # halls under warm light with other wall and floor colours. Same seed, same people: only the cameras change.
    domain: str = "a"

    def __post_init__(self) -> None:
        object.__setattr__(self, "images_per_identity", tuple(self.images_per_identity))
        low, high = self.images_per_identity
        checks = [
            (4 <= self.identities <= 9999, f"identities must be in 4..9999 (4-digit pids), got {self.identities}"),
            (2 <= self.cameras <= 9, f"cameras must be in 2..9 (one digit in the file name), got {self.cameras}"),
            (4 <= low <= high <= 999, f"images_per_identity must be (min, max) with 4 <= min <= max <= 999 "
                                      f"(two cameras with two images each), got {self.images_per_identity}"),
            (self.height >= 32 and self.width >= 16,
             f"height and width must be at least 32 and 16, got {self.height} and {self.width}"),
            (0.0 <= self.occlusion_prob <= 1.0, f"occlusion_prob must be in [0, 1], got {self.occlusion_prob}"),
            (0.0 <= self.misalignment <= 0.4, f"misalignment must be in [0, 0.4], got {self.misalignment}"),
            (0.0 <= self.resolution_drop < 1.0, f"resolution_drop must be in [0, 1), got {self.resolution_drop}"),
            (0.0 <= self.colour_cast <= 0.5, f"colour_cast must be in [0, 0.5], got {self.colour_cast}"),
            (0.0 <= self.illumination <= 0.5, f"illumination must be in [0, 0.5], got {self.illumination}"),
        ]
        checks.append((self.domain in DOMAINS, f"domain must be one of {', '.join(DOMAINS)}, got {self.domain!r}"))
        checks += [(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
                    for name in ("junk_fraction", "distractor_fraction", "blur", "noise", "clutter")]
        for valid, message in checks:
            if not valid:
                raise ConfigError(message)


@dataclass(frozen=True)
class _Job:
    """One image to render: what to draw, with which camera and random key, and where to write it."""

    path: str  # relative to the output folder
    kind: str  # "person", "partial" (badly cropped person, junk), "outsider" (distractor person), "scene"
    pid: int  # identity drawn for "person" and "partial"
    camera: int
    key: tuple[int, ...]  # random stream key after the seed


def _file_name(pid: int, camera: int, sequence: int, frame: int, box: int) -> str:
    prefix = "-1" if pid < 0 else f"{pid:04d}"
    return f"{prefix}_c{camera}s{sequence}_{frame:06d}_{box:02d}.jpg"


def _identity_jobs(spec: SyntheticSpec, seed: int, pid: int, is_test: bool) -> list[_Job]:
    """All images of one identity: ≥ 2 cameras with ≥ 2 images each; for test identities one image per
    camera goes to the query set and the rest to the gallery."""
    rng = np.random.default_rng([seed, _LAYOUT, pid])
    count = int(rng.integers(spec.images_per_identity[0], spec.images_per_identity[1] + 1))
    camera_count = int(rng.integers(2, min(spec.cameras, count // 2) + 1))
    cameras = np.sort(rng.choice(spec.cameras, camera_count, replace=False)) + 1
    per_camera = 2 + rng.multinomial(count - 2 * camera_count, np.full(camera_count, 1.0 / camera_count))
    jobs, index = [], 0
    for camera, images in zip(cameras.tolist(), per_camera.tolist()):
        sequence, frame = int(rng.integers(1, 7)), int(rng.integers(0, 900_000))
        query_index = int(rng.integers(images))
        for k in range(images):
            frame += int(rng.integers(5, 60))
            folder = ("query" if k == query_index else "bounding_box_test") if is_test else "bounding_box_train"
            name = _file_name(pid, camera, sequence, frame, 1)
            jobs.append(_Job(f"{folder}/{name}", "person", pid, camera, (_IMAGE, pid, index)))
            index += 1
    return jobs


def _false_detection_jobs(spec: SyntheticSpec, seed: int, test_pids: list[int], count: int, junk: bool) -> list[_Job]:
    """Gallery-only images: junk (pid -1: bad crops of test people, empty boxes) or distractors (pid 0000:
    people outside the set, empty boxes)."""
    stream = _JUNK if junk else _DISTRACTOR
    jobs = []
    for j in range(count):
        rng = np.random.default_rng([seed, stream, j])
        camera = int(rng.integers(1, spec.cameras + 1))
        person_kind = "partial" if junk else "outsider"
        kind = person_kind if rng.random() < 0.7 else "scene"
        name = _file_name(-1 if junk else 0, camera, int(rng.integers(1, 7)), 10 * j + int(rng.integers(10)),
                          int(rng.integers(1, 10)))
        jobs.append(_Job(f"bounding_box_test/{name}", kind, int(rng.choice(test_pids)), camera, (stream, j)))
    return jobs


def _split(spec: SyntheticSpec, seed: int) -> tuple[list[int], list[int]]:
    """Train and test pids (1-based, sorted): a random half of the identities each."""
    order = np.random.default_rng([seed, _SPLIT]).permutation(np.arange(1, spec.identities + 1))
    train_count = spec.identities - spec.identities // 2
    return sorted(order[:train_count].tolist()), sorted(order[train_count:].tolist())


def _plan(spec: SyntheticSpec, seed: int) -> list[_Job]:
    train_pids, test_pids = _split(spec, seed)
    jobs = [job for pid in train_pids for job in _identity_jobs(spec, seed, pid, is_test=False)]
    test_jobs = [job for pid in test_pids for job in _identity_jobs(spec, seed, pid, is_test=True)]
    gallery_size = sum(job.path.startswith("bounding_box_test/") for job in test_jobs)
    jobs += test_jobs
    jobs += _false_detection_jobs(spec, seed, test_pids, round(spec.junk_fraction * gallery_size), junk=True)
    jobs += _false_detection_jobs(spec, seed, test_pids, round(spec.distractor_fraction * gallery_size), junk=False)
    return jobs


class _Renderer:
    """Renders and writes jobs; holds the cameras (built once per process)."""

    def __init__(self, spec: SyntheticSpec, seed: int, out_dir: Path):
        self.spec, self.seed, self.out_dir = spec, seed, out_dir
        self.cameras: dict[int, Camera] = {c: make_camera(spec, seed, c) for c in range(1, spec.cameras + 1)}
        self.identity = lru_cache(maxsize=None)(self._identity)

    def _identity(self, pid: int) -> Identity:
        return sample_identity(np.random.default_rng([self.seed, _IDENTITY, pid]))

    def __call__(self, job: _Job) -> None:
        rng = np.random.default_rng([self.seed, *job.key])
        camera = self.cameras[job.camera]
        if job.kind == "person":
            image = render_person(self.identity(job.pid), camera, self.spec, rng)
        elif job.kind == "partial":
            side = rng.choice((-1.0, 1.0))  # a bad detection: half out of the box, cut, often too large
            placement = Placement(0.5 + side * rng.uniform(0.4, 0.6), rng.uniform(-0.6, 0.3), rng.uniform(0.8, 1.8))
            image = render_person(self.identity(job.pid), camera, self.spec, rng, placement=placement)
        elif job.kind == "outsider":
            image = render_person(sample_identity(rng), camera, self.spec, rng)
        else:
            image = render_scene(camera, rng)
        # not fsynced one by one: synthetic.json, written last after flush_to_disk, marks the set complete
        write_image(self.out_dir / job.path, image, "JPEG", durable=False, quality=camera.jpeg_quality)


_worker_renderer: _Renderer | None = None


def _start_worker(spec: SyntheticSpec, seed: int, out_dir: Path) -> None:
    global _worker_renderer
    _worker_renderer = _Renderer(spec, seed, out_dir)


def _render_in_worker(job: _Job) -> None:
    _worker_renderer(job)


def _prepare_folder(out_dir: Path) -> None:
    """Create ``out_dir`` or clear a previous synthetic output in it; refuse any other non-empty folder, and a
    place that cannot hold it (under a file, read-only, /proc or /sys) with the reason."""
    above = next(path for path in (out_dir, *out_dir.parents) if path.exists())
    if not above.is_dir():
        where = "is a file" if above == out_dir else f"lies under the file {above}"
        raise DatasetError(f"{out_dir} {where}, not a folder; choose a folder path for the synthetic data set")
    try:
        _clear_previous_output(out_dir)
        for folder in SPLIT_FOLDERS:
            (out_dir / folder).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetError(f"cannot create the synthetic data set in {out_dir} ({error.strerror or error}); "
                           "choose a writable folder") from error


def _clear_previous_output(out_dir: Path) -> None:
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not ((out_dir / MANIFEST).is_file() or (out_dir / UNFINISHED).is_file()):
            raise DatasetError(
                f"{out_dir} is not empty and holds no {MANIFEST}, so it is not a previous synthetic data set; "
                "choose an empty or new folder (reidkit only overwrites its own synthetic output)")
        for folder in SPLIT_FOLDERS:
            shutil.rmtree(out_dir / folder, ignore_errors=True)
        (out_dir / MANIFEST).unlink(missing_ok=True)


def generate_dataset(out_dir: str | Path, spec: SyntheticSpec = SyntheticSpec(), seed: int = 0,
                     progress: bool = True, workers: int = 1) -> dict[str, int]:
    """Draw the synthetic data set and write it to ``out_dir`` in the Market-1501 layout.

    Args:
        out_dir: output folder; created if missing. A previous synthetic output there (complete or
            interrupted) is replaced. ``synthetic.json`` (spec, seed, counts) is written last, so its
            presence means the data set is complete.
        spec: size and difficulty.
        seed: the same seed gives byte-identical files; different seeds give different data.
        progress: show a tqdm progress bar.
        workers: processes rendering in parallel (the output does not depend on it).

    Returns:
        Counts: ``train``, ``query``, ``gallery`` (images, the gallery including junk and distractors),
        ``junk``, ``distractors``, ``train_identities``, ``test_identities``.

    Raises:
        DatasetError: ``out_dir`` is a non-empty folder that holds no previous synthetic output, or a place
            where no folder can be created (under a file, a read-only file system, /proc, /sys).
        ReidkitError: a file could not be written (e.g. a full disk).
        ValueError: ``workers`` < 1 or ``seed`` < 0 (the spec validates itself on construction).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, got {seed}")
    out_dir = Path(out_dir)
    _prepare_folder(out_dir)
    manifest = {"generator": "reidkit.data.synthetic", "seed": seed, "spec": asdict(spec)}
    write_json(out_dir / UNFINISHED, manifest)
    jobs = _plan(spec, seed)
    bar = tqdm(total=len(jobs), desc="synthesising", unit="img", disable=None if progress else True)
    if workers == 1:
        renderer = _Renderer(spec, seed, out_dir)
        for job in jobs:
            renderer(job)
            bar.update()
    else:
        with multiprocessing.Pool(workers, initializer=_start_worker, initargs=(spec, seed, out_dir)) as pool:
            for _ in pool.imap_unordered(_render_in_worker, jobs, chunksize=16):
                bar.update()
    bar.close()
    _write_attributes(out_dir / "attributes.csv", spec, seed)
    train_pids, test_pids = _split(spec, seed)
    counts = {folder: sum(job.path.startswith(f"{folder}/") for job in jobs) for folder in SPLIT_FOLDERS}
    counts = {
        "train": counts["bounding_box_train"], "query": counts["query"], "gallery": counts["bounding_box_test"],
        "junk": sum(job.path.startswith("bounding_box_test/-1_") for job in jobs),
        "distractors": sum(job.path.startswith("bounding_box_test/0000_") for job in jobs),
        "train_identities": len(train_pids), "test_identities": len(test_pids),
    }
    flush_to_disk()
    write_json(out_dir / MANIFEST, {**manifest, "counts": counts})
    (out_dir / UNFINISHED).unlink()
    return counts


def _write_attributes(path: Path, spec: SyntheticSpec, seed: int) -> None:
    """One row per identity (raw pid), Market-1501 attribute names and codes."""
    rows = io.StringIO(newline="")
    writer = csv.writer(rows)
    writer.writerow(("pid", *ATTRIBUTE_NAMES))
    for pid in range(1, spec.identities + 1):
        codes = sample_identity(np.random.default_rng([seed, _IDENTITY, pid])).attributes()
        writer.writerow((pid, *(codes[name] for name in ATTRIBUTE_NAMES)))
    write_text(path, rows.getvalue())
