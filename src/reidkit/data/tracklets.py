"""Video ReID data sets on disk: MARS, iLIDS-VID, PRID-2011 and DukeMTMC-VideoReID.

Every loader returns a `ReidDataset` whose samples are tracklets `(paths, pid, camid)`: `paths` a tuple of
frame files in time order, pid and camid ints as for images (train pids relabelled 0..C-1 in raw-pid order,
query and gallery keep raw pids, camids 0-based). Identities come from ASCII digits only, with a length
bound (`"²".isdigit()` is True but is no pid).

References: Zheng et al., "MARS: A Video Benchmark for Large-Scale Person Re-identification" (ECCV 2016);
Wang et al., "Person Re-identification by Video Ranking" (ECCV 2014, iLIDS-VID); Hirzer et al., "Person
Re-identification by Descriptive and Discriminative Classification" (SCIA 2011, PRID-2011); Wu et al.,
"Exploit the Unknown Gradually: One-Shot Video-Based Person Re-Identification by Stepwise Learning"
(CVPR 2018, DukeMTMC-VideoReID).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reidkit.data.datasets import ReidDataset, StrPath, _found, relabel
from reidkit.errors import DatasetError

Tracklet = tuple[tuple[str, ...], int, int]  # (frame paths in time order, pid, camid 0-based)

MAX_ID_DIGITS = 9  # ids longer than this are refused rather than parsed (no real set comes close)
MARS_NAME = re.compile(r"^([0-9]{4}|00-1)C([0-9])T([0-9]{4})F([0-9]{3})\.jpg$")  # 0001C1T0001F001.jpg
DUKE_VIDEO_NAME = re.compile(r"^([0-9]{4})_?C([0-9])_?F([0-9]{1,9})")  # 0001_C6_F0099_X30823.jpg, 0001C6F0099…
PERSON_FOLDER = re.compile(r"^person_?([0-9]{1,%d})$" % MAX_ID_DIGITS)  # person001 (iLIDS), person_0001 (PRID)
MARS_FILES = ("train_name.txt", "test_name.txt", "tracks_train_info.mat", "tracks_test_info.mat", "query_IDX.mat")


def parse_id(text: str, what: str, where: str) -> int:
    """An identity or camera number written in ASCII digits (an optional leading '-'), at most
    `MAX_ID_DIGITS` of them.

    Raises:
        DatasetError: anything else, naming `what` and `where`.
    """
    if re.fullmatch(r"-?[0-9]{1,%d}" % MAX_ID_DIGITS, text) is None:
        raise DatasetError(f"{where}: {what} {text!r} is not a number of 1 to {MAX_ID_DIGITS} ASCII digits; "
                           "rename it or remove it from the data set")
    return int(text)


def is_tracklet_split(samples: Sequence) -> bool:
    """True when the samples are tracklets (their first entry is a tuple or list of frame paths)."""
    return bool(samples) and isinstance(samples[0][0], (tuple, list))


def _video_dataset(name: str, root: StrPath, train: list[Tracklet], query: list[Tracklet],
                   gallery: list[Tracklet]) -> ReidDataset:
    for split, tracklets in (("train", train), ("query", query), ("gallery", gallery)):
        if not tracklets:
            raise DatasetError(f"{name}: the {split} split of {root} holds no tracklet; check the layout and its "
                               "split files")
    train, raw_pids = relabel(train)
    return ReidDataset(name, str(root), train, query, gallery, raw_pids)


def _require(base: Path, layout: str, entries: Sequence[str], example: str) -> None:
    missing = [entry for entry in entries if not (base / entry).exists()]
    if missing:
        raise DatasetError(f"{layout} layout expected {', '.join(entries)} under {base} ({example}); missing "
                           f"{', '.join(missing)}; found: {_found(base)}. Point data.root at that folder.")


def _frames(folder: Path, suffixes: tuple[str, ...], layout: str) -> tuple[str, ...]:
    """The frame files of one tracklet folder, sorted by name."""
    frames = tuple(str(p) for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in suffixes)
    if not frames:
        raise DatasetError(f"{layout}: tracklet folder {folder} holds no {'/'.join(suffixes)} frame; add its frames "
                           "or remove the folder")
    return frames


def _read_mat(path: Path, key: str, layout: str) -> np.ndarray:
    from scipy.io import loadmat  # heavy import, needed only for .mat files

    try:
        contents = loadmat(path)
    except (ValueError, OSError, TypeError) as error:
        raise DatasetError(f"{layout}: cannot read {path} ({error}); replace it with the file of the release") from None
    if key not in contents or not np.issubdtype(np.asarray(contents[key]).dtype, np.number):
        raise DatasetError(f"{layout}: {path} holds no numeric '{key}' array; replace it with the file of the release")
    return np.asarray(contents[key]).astype(np.int64)


def _mars_tracklets(names: list[str], tracks: np.ndarray, folder: Path, source: Path) -> list[Tracklet]:
    """Tracklets of rows (start, end, pid, camera) of a MARS tracks file; 1-based inclusive name indices,
    junk (pid -1) left out."""
    if tracks.ndim != 2 or tracks.shape[1] != 4:
        raise DatasetError(f"MARS: {source} holds an array of shape {tracks.shape}; expected one row "
                           "(start, end, pid, camera) per tracklet")
    tracklets = []
    for row, (start, end, pid, camera) in enumerate(tracks.tolist(), start=1):
        if not 1 <= start <= end <= len(names) or camera < 1:
            raise DatasetError(f"MARS: {source} row {row} is ({start}, {end}, {pid}, {camera}); expected 1 <= start "
                               f"<= end <= {len(names)} (the lines of its name list) and a 1-based camera")
        if pid == -1:
            continue
        frames = names[start - 1:end]
        for name in frames:
            match = MARS_NAME.match(name)
            if match is None or int(match.group(1)) != pid or int(match.group(2)) != camera:
                raise DatasetError(f"MARS: {source} row {row} (pid {pid}, camera {camera}) lists frame {name!r}, "
                                   f"which is not named like {pid:04d}C{camera}T0001F001.jpg; the name list and "
                                   "the tracks file do not belong together")
        tracklets.append((tuple(str(folder / name[:4] / name) for name in frames), pid, camera - 1))
    if tracklets and not Path(tracklets[0][0][0]).is_file():
        raise DatasetError(f"MARS: {tracklets[0][0][0]} does not exist; frames lie in {folder}/<pid>/<name>")
    return tracklets


def load_mars(root: StrPath) -> ReidDataset:
    """Load MARS: `bbox_train/`, `bbox_test/` and `info/` (`train_name.txt`, `test_name.txt`,
    `tracks_train_info.mat`, `tracks_test_info.mat`, `query_IDX.mat`).

    The tracks files hold one row (start, end, pid, camera) per tracklet, start and end 1-based inclusive
    line numbers of the name list; `query_IDX` holds the 1-based rows of the test tracks that are queries,
    every other test row is gallery (as Torchreid reads it). Junk tracklets (pid -1) are left out; distractors
    (pid 0) stay in the gallery.

    Raises:
        DatasetError: a missing folder or file, a malformed .mat or name list, a query index out of range.
    """
    base, layout = Path(root), "MARS"
    _require(base, layout, ("bbox_train", "bbox_test", *(f"info/{name}" for name in MARS_FILES)),
             "the MARS release")
    info = base / "info"
    names = {split: [line.strip() for line in (info / f"{split}_name.txt").read_text().splitlines() if line.strip()]
             for split in ("train", "test")}
    train_tracks = _read_mat(info / "tracks_train_info.mat", "track_train_info", layout)
    test_tracks = _read_mat(info / "tracks_test_info.mat", "track_test_info", layout)
    query_rows = _read_mat(info / "query_IDX.mat", "query_IDX", layout).reshape(-1) - 1
    if query_rows.size == 0 or query_rows.min() < 0 or query_rows.max() >= len(test_tracks) or \
            len(set(query_rows.tolist())) != query_rows.size:
        raise DatasetError(f"MARS: {info / 'query_IDX.mat'} must list distinct 1-based rows of tracks_test_info.mat "
                           f"(1..{len(test_tracks)}); replace it with the file of the release")
    is_query = np.zeros(len(test_tracks), dtype=bool)
    is_query[query_rows] = True
    train = _mars_tracklets(names["train"], train_tracks, base / "bbox_train", info / "tracks_train_info.mat")
    query = _mars_tracklets(names["test"], test_tracks[query_rows], base / "bbox_test", info / "tracks_test_info.mat")
    gallery = _mars_tracklets(names["test"], test_tracks[~is_query], base / "bbox_test", info / "tracks_test_info.mat")
    return _video_dataset("mars", root, train, query, gallery)


def _person_pid(folder: str, source: Path, layout: str) -> int:
    match = PERSON_FOLDER.match(folder)
    if match is None:
        raise DatasetError(f"{layout}: {source} names person folder {folder!r}; expected person001 or person_0001 "
                           f"(up to {MAX_ID_DIGITS} ASCII digits)")
    return int(match.group(1))


def _two_camera_split(camera_dirs: tuple[Path, Path], train_dirs: list[str], test_dirs: list[str], layout: str,
                      source: Path) -> tuple[list[Tracklet], list[Tracklet], list[Tracklet]]:
    """Train: both cameras' sequences of the train persons; query: the first camera's, gallery: the second's
    sequences of the test persons (pid from the folder name)."""
    def sequences(dirs: list[str], cameras: tuple[int, ...]) -> list[Tracklet]:
        tracklets = []
        for folder in dirs:
            pid = _person_pid(folder, source, layout)
            for camid in cameras:
                person_dir = camera_dirs[camid] / folder
                if not person_dir.is_dir():
                    raise DatasetError(f"{layout}: {source} names {folder}, but {person_dir} does not exist; "
                                       "every listed person needs a sequence in both cameras")
                tracklets.append((_frames(person_dir, (".png",), layout), pid, camid))
        return tracklets

    return sequences(train_dirs, (0, 1)), sequences(test_dirs, (0,)), sequences(test_dirs, (1,))


def load_ilidsvid(root: StrPath, split: int = 0) -> ReidDataset:
    """Load iLIDS-VID: `i-LIDS-VID/sequences/{cam1,cam2}/personNNN/*.png` and
    `train-test people splits/train_test_splits_ilidsvid.mat`.

    Its `ls_set` has one row per split of 1-based indices into the sorted person folders of cam1; the first
    half of a row is the test persons, the second half the training persons (Wang et al. 2014, as Torchreid
    reads it). Query: the test persons' cam1 sequences; gallery: their cam2 sequences.

    Raises:
        DatasetError: missing folders or split file, a split index out of range, a malformed split.
    """
    base, layout = Path(root), "iLIDS-VID"
    split_file = "train-test people splits/train_test_splits_ilidsvid.mat"
    cameras = ("i-LIDS-VID/sequences/cam1", "i-LIDS-VID/sequences/cam2")
    _require(base, layout, (*cameras, split_file), "the iLIDS-VID release")
    persons = sorted(p.name for p in (base / cameras[0]).iterdir() if p.is_dir())
    table = _read_mat(base / split_file, "ls_set", layout)
    if table.ndim != 2 or table.shape[1] < 2 or table.min() < 1 or table.max() > len(persons):
        raise DatasetError(f"{layout}: {base / split_file} must hold 'ls_set' rows of 1-based indices into the "
                           f"{len(persons)} person folders of {cameras[0]}; replace it with the file of the release")
    if not 0 <= split < len(table):
        raise DatasetError(f"{layout}: data.video_split={split}, but {split_file} holds splits 0..{len(table) - 1}")
    half = table.shape[1] // 2
    test_dirs = [persons[i - 1] for i in sorted(table[split, :half].tolist())]
    train_dirs = [persons[i - 1] for i in sorted(table[split, half:].tolist())]
    parts = _two_camera_split((base / cameras[0], base / cameras[1]), train_dirs, test_dirs, layout,
                              base / split_file)
    return _video_dataset("ilidsvid", root, *parts)


def load_prid2011(root: StrPath, split: int = 0) -> ReidDataset:
    """Load PRID-2011: `prid_2011/multi_shot/{cam_a,cam_b}/person_NNNN/*.png` and `splits_prid2011.json`
    (Torchreid's split file: a list of {"train": [folder names], "test": [folder names]}).

    Query: the test persons' cam_a sequences; gallery: their cam_b sequences.

    Raises:
        DatasetError: missing folders or split file, a split index out of range, a malformed split.
    """
    base, layout = Path(root), "PRID-2011"
    cameras = ("prid_2011/multi_shot/cam_a", "prid_2011/multi_shot/cam_b")
    _require(base, layout, (*cameras, "splits_prid2011.json"), "the PRID-2011 release plus Torchreid's split file")
    source = base / "splits_prid2011.json"
    try:
        splits = json.loads(source.read_text())
        valid = isinstance(splits, list) and all(
            isinstance(s, dict) and all(isinstance(s.get(k), list) and all(isinstance(n, str) for n in s[k])
                                        for k in ("train", "test")) for s in splits)
    except (json.JSONDecodeError, UnicodeDecodeError):
        valid = False
    if not valid:
        raise DatasetError(f"{layout}: {source} must be a JSON list of {{\"train\": [...], \"test\": [...]}} folder "
                           "names; use the split file Torchreid ships")
    if not 0 <= split < len(splits):
        raise DatasetError(f"{layout}: data.video_split={split}, but {source} holds splits 0..{len(splits) - 1}")
    parts = _two_camera_split((base / cameras[0], base / cameras[1]), splits[split]["train"], splits[split]["test"],
                              layout, source)
    return _video_dataset("prid2011", root, *parts)


def _duke_video_split(folder: Path) -> list[Tracklet]:
    """`<pid>/<tracklet>/<pid>_C<camera>_F<frame>_X<n>.jpg` (or the old `<pid>C<camera>F<frame>X<n>.jpg`);
    frames in frame-number order."""
    layout, tracklets = "DukeMTMC-VideoReID", []
    for person_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        pid = parse_id(person_dir.name, "identity folder", str(person_dir))
        for tracklet_dir in sorted(p for p in person_dir.iterdir() if p.is_dir()):
            frames = _frames(tracklet_dir, (".jpg",), layout)
            parsed = [DUKE_VIDEO_NAME.match(Path(frame).name) for frame in frames]
            bad = next((frame for frame, match in zip(frames, parsed) if match is None), None)
            if bad is not None:
                raise DatasetError(f"{layout}: cannot parse frame name {bad}; expected names like "
                                   "0001_C6_F0099_X30823.jpg (pid, camera, frame)")
            cameras = {int(match.group(2)) for match in parsed}
            if len(cameras) != 1 or min(cameras) < 1:
                raise DatasetError(f"{layout}: tracklet {tracklet_dir} mixes cameras {sorted(cameras)} or names "
                                   "camera 0; a tracklet is one camera's frames (cameras 1-based)")
            order = sorted(range(len(frames)), key=lambda i: (int(parsed[i].group(3)), frames[i]))
            tracklets.append((tuple(frames[i] for i in order), pid, cameras.pop() - 1))
    return tracklets


def load_dukemtmc_video(root: StrPath) -> ReidDataset:
    """Load DukeMTMC-VideoReID from `<root>/{train,query,gallery}/<pid>/<tracklet>/*.jpg` (or from
    `<root>/DukeMTMC-VideoReID/`); the camera comes from the frame names.

    Raises:
        DatasetError: missing folders, an unparsable name or folder, a tracklet mixing cameras.
    """
    base = Path(root)
    if (base / "DukeMTMC-VideoReID").is_dir():
        base = base / "DukeMTMC-VideoReID"
    _require(base, "DukeMTMC-VideoReID", ("train", "query", "gallery"), "one folder per identity per tracklet")
    return _video_dataset("dukemtmc_video", root, *(_duke_video_split(base / split)
                                                    for split in ("train", "query", "gallery")))


VIDEO_LOADERS = {"mars": load_mars, "ilidsvid": load_ilidsvid, "prid2011": load_prid2011,
                  "dukemtmc_video": load_dukemtmc_video}
