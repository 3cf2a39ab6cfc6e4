"""The four video layouts, read from small hand-made copies, give the tracklets Torchreid 0.2.5's parsers give
(same frames, cameras and splits; identities equal up to Torchreid's relabelling order), and malformed
layouts give one clear DatasetError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from _torchreid_video import load_torchreid_module
from reidkit.data.tracklets import load_dukemtmc_video, load_ilidsvid, load_mars, load_prid2011, parse_id
from reidkit.errors import DatasetError


def touch(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return str(path)


def assert_same_tracklets(ours, theirs, frames_in_order: bool = True, same_pids: bool = False) -> None:
    """Same (frames, camid) tracklets; pids equal, or related one-to-one (relabelling)."""
    def entries(tracklets):
        return sorted(((tuple(paths) if frames_in_order else tuple(sorted(paths)), camid), pid)
                      for paths, pid, camid in tracklets)

    mine, peer = entries(ours), entries(theirs)
    assert [key for key, _ in mine] == [key for key, _ in peer]
    mapping = {}
    for (_, pid), (_, peer_pid) in zip(mine, peer):
        assert mapping.setdefault(pid, peer_pid) == peer_pid
    assert len(set(mapping.values())) == len(mapping)
    if same_pids:
        assert all(pid == peer_pid for pid, peer_pid in mapping.items())


MARS_TRACKS = {  # split: (pid, camera, tracklet, frames)
    "train": [(1, 1, 1, 3), (1, 2, 1, 2), (3, 1, 1, 2), (2, 3, 1, 2), (3, 2, 2, 1)],
    "test": [(5, 1, 1, 2), (5, 1, 2, 3), (5, 2, 1, 2), (7, 1, 1, 1), (7, 3, 1, 2), (-1, 1, 1, 2), (0, 2, 1, 2),
             (8, 6, 1, 2), (8, 4, 1, 1)],
}


def write_mars(base: Path, tracks=MARS_TRACKS, query_rows=(1, 4, 8)) -> None:
    (base / "info").mkdir(parents=True)
    for split, rows in tracks.items():
        names, table = [], []
        for pid, camera, tracklet, frames in rows:
            start = len(names) + 1
            for frame in range(1, frames + 1):
                name = f"{'00-1' if pid < 0 else f'{pid:04d}'}C{camera}T{tracklet:04d}F{frame:03d}.jpg"
                touch(base / f"bbox_{split}" / name[:4] / name)
                names.append(name)
            table.append([start, len(names), pid, camera])
        (base / "info" / f"{split}_name.txt").write_text("\n".join(names) + "\n")
        savemat(base / "info" / f"tracks_{split}_info.mat", {f"track_{split}_info": np.array(table, np.int32)})
    savemat(base / "info" / "query_IDX.mat", {"query_IDX": np.array([query_rows], np.int32)})


def test_mars_matches_torchreid(tmp_path, monkeypatch):
    write_mars(tmp_path / "mars")
    ours = load_mars(tmp_path / "mars")
    theirs = load_torchreid_module(monkeypatch, "data/datasets/video/mars.py").Mars(root=str(tmp_path))
    assert_same_tracklets(ours.train, theirs.train)
    assert_same_tracklets(ours.query, theirs.query, same_pids=True)
    assert_same_tracklets(ours.gallery, theirs.gallery, same_pids=True)
    # hand-worked: query rows 1, 4, 8; junk (pid -1) left out; the distractor (pid 0) stays in the gallery
    assert [(pid, camid, len(paths)) for paths, pid, camid in ours.query] == [(5, 0, 2), (7, 0, 1), (8, 5, 2)]
    assert sorted(pid for _, pid, _ in ours.gallery) == [0, 5, 5, 7, 8]
    assert ours.train_raw_pids == [1, 2, 3] and ours.num_train_pids == 3


def test_ilidsvid_matches_torchreid(tmp_path, monkeypatch):
    base = tmp_path / "ilids-vid"
    for person in range(1, 301):  # Torchreid insists on the release's 300 persons and 10 splits
        for camera in (1, 2):
            for frame in range(1, 3):
                touch(base / f"i-LIDS-VID/sequences/cam{camera}/person{person:03d}/cam{camera}_person{person:03d}_"
                             f"{frame:05d}.png")
    rng = np.random.default_rng(0)
    (base / "train-test people splits").mkdir()
    ls_set = np.stack([rng.permutation(300) + 1 for _ in range(10)])
    savemat(base / "train-test people splits/train_test_splits_ilidsvid.mat", {"ls_set": ls_set})
    ours = load_ilidsvid(base, split=3)
    theirs = load_torchreid_module(monkeypatch, "data/datasets/video/ilidsvid.py").iLIDSVID(root=str(tmp_path),
                                                                                           split_id=3)
    for split in ("train", "query", "gallery"):
        assert_same_tracklets(getattr(ours, split), getattr(theirs, split), frames_in_order=False)
    assert sorted(pid for _, pid, _ in ours.query) == sorted(ls_set[3, :150].tolist())  # folder personNNN: pid NNN
    assert {camid for _, _, camid in ours.gallery} == {1}


def test_prid2011_matches_torchreid(tmp_path, monkeypatch):
    base = tmp_path / "prid2011"
    for person in range(1, 9):
        for camera in ("a", "b"):
            for frame in range(1, 4):
                touch(base / f"prid_2011/multi_shot/cam_{camera}/person_{person:04d}/{frame:04d}.png")
    touch(base / "prid_2011/multi_shot/cam_a/person_0200/0001.png")  # seen by one camera only: in no split
    folders = [f"person_{p:04d}" for p in range(1, 9)]
    splits = [{"train": folders[:4], "test": folders[4:]}, {"train": folders[4:], "test": folders[:4]}]
    (base / "splits_prid2011.json").write_text(json.dumps(splits))
    ours = load_prid2011(base, split=1)
    theirs = load_torchreid_module(monkeypatch, "data/datasets/video/prid2011.py").PRID2011(root=str(tmp_path),
                                                                                           split_id=1)
    for split in ("train", "query", "gallery"):
        assert_same_tracklets(getattr(ours, split), getattr(theirs, split), frames_in_order=False)
    assert [pid for _, pid, _ in ours.query] == [1, 2, 3, 4]


def write_duke(base: Path) -> None:
    layout = {"train": [(1, 1, 1, 3), (1, 1, 3, 2), (4, 2, 1, 2), (9, 8, 1, 1)],
              "query": [(2, 1, 1, 2), (5, 3, 1, 2)],
              "gallery": [(2, 2, 1, 3), (5, 3, 2, 2), (5, 4, 1, 2), (0, 5, 1, 1)]}
    for split, rows in layout.items():
        for pid, camera, tracklet, frames in rows:
            for frame in range(1, frames + 1):
                touch(base / split / f"{pid:04d}" / f"{tracklet:04d}" /
                      f"{pid:04d}_C{camera}_F{frame:04d}_X{tracklet:05d}.jpg")


def test_dukemtmc_video_matches_torchreid(tmp_path, monkeypatch):
    write_duke(tmp_path / "dukemtmc-vidreid" / "DukeMTMC-VideoReID")
    ours = load_dukemtmc_video(tmp_path / "dukemtmc-vidreid")
    module = load_torchreid_module(monkeypatch, "data/datasets/video/dukemtmcvidreid.py")
    theirs = module.DukeMTMCVidReID(root=str(tmp_path))
    assert_same_tracklets(ours.train, theirs.train)
    for split in ("query", "gallery"):
        assert_same_tracklets(getattr(ours, split), getattr(theirs, split), same_pids=True)
    assert [(pid, camid, len(paths)) for paths, pid, camid in ours.query] == [(2, 0, 2), (5, 2, 2)]


def test_dukemtmc_video_keeps_every_frame_of_a_tracklet_starting_late(tmp_path):
    """Torchreid looks frames up by position (F0001..F000n), so a tracklet starting at F0002 loses its last
    frame there; here frames are ordered by their number and all kept."""
    base = tmp_path / "duke"
    write_duke(base)
    for frame in (2, 3, 10):
        touch(base / "train/0004/0007" / f"0004_C2_F{frame:04d}_X00007.jpg")
    late = next(paths for paths, _, _ in load_dukemtmc_video(base).train if "/0007/" in paths[0])
    assert [Path(path).name[9:13] for path in late] == ["0002", "0003", "0010"]


@pytest.mark.parametrize("text, expected", [("0001", 1), ("-1", -1), ("123456789", 123456789)])
def test_parse_id_reads_ascii_digits(text, expected):
    assert parse_id(text, "pid", "here") == expected


@pytest.mark.parametrize("text", ["²", "١٢", "1234567890", "", "12a", "+3"])
def test_parse_id_refuses_other_text(text):
    with pytest.raises(DatasetError, match="ASCII digits"):
        parse_id(text, "pid", "here")


def test_malformed_layouts_give_one_line(tmp_path):
    write_mars(tmp_path / "mars")
    (tmp_path / "mars/info/query_IDX.mat").unlink()
    with pytest.raises(DatasetError, match=r"missing info/query_IDX\.mat.*Point data\.root") as error:
        load_mars(tmp_path / "mars")
    assert "\n" not in str(error.value)
    savemat(tmp_path / "mars/info/query_IDX.mat", {"query_IDX": np.array([[1, 99]], np.int32)})
    with pytest.raises(DatasetError, match="distinct 1-based rows"):
        load_mars(tmp_path / "mars")
    mismatched = tmp_path / "mismatch"
    write_mars(mismatched, {"train": [(1, 1, 1, 2)], "test": [(5, 1, 1, 2), (6, 2, 1, 1)]}, query_rows=(1,))
    savemat(mismatched / "info/tracks_test_info.mat", {"track_test_info": np.array([[1, 2, 5, 1], [3, 3, 7, 2]])})
    with pytest.raises(DatasetError, match="do not belong together"):
        load_mars(mismatched)

    duke = tmp_path / "duke"
    write_duke(duke)
    touch(duke / "train" / "²" / "0001" / "0001_C1_F0001_X00001.jpg")
    with pytest.raises(DatasetError, match="identity folder '²' is not a number"):
        load_dukemtmc_video(duke)

    prid = tmp_path / "prid"
    touch(prid / "prid_2011/multi_shot/cam_a/person_0001/0001.png")
    touch(prid / "prid_2011/multi_shot/cam_b/person_0001/0001.png")
    (prid / "splits_prid2011.json").write_text('{"train": []}')
    with pytest.raises(DatasetError, match="JSON list"):
        load_prid2011(prid)
    (prid / "splits_prid2011.json").write_text('[{"train": ["person_0001"], "test": ["person_0002"]}]')
    with pytest.raises(DatasetError, match="person_0002.*does not exist"):
        load_prid2011(prid)
    with pytest.raises(DatasetError, match="holds splits 0..0"):
        load_prid2011(prid, split=2)
