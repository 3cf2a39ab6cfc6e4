"""Vehicle ReID: the VeRi-776 and VehicleID layouts on generated files, and the VehicleID test protocol."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidkit.config import load_config, resolve_protocol
from reidkit.data.build import build_dataset
from reidkit.engine.evaluation import evaluate_distances
from reidkit.errors import DatasetError
from reidkit.metrics.vehicleid import evaluate_vehicleid

REPO = Path(__file__).parent.parent


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (90, 90, 90)).save(path)


@pytest.fixture()
def veri(tmp_path):
    for name in ("0005_c003_00010000_0.jpg", "0005_c011_00010500_1.jpg", "0002_c001_00016450_0.jpg"):
        _touch(tmp_path / "image_train" / name)
    for name in ("0007_c002_00000100_0.jpg",):
        _touch(tmp_path / "image_query" / name)
    for name in ("0007_c002_00000200_0.jpg", "0007_c005_00000300_0.jpg", "0009_c002_00000400_0.jpg"):
        _touch(tmp_path / "image_test" / name)
    return tmp_path


def test_veri776_names_give_vehicle_and_camera(veri):
    dataset = build_dataset(load_config(None, ["data.dataset=veri776", f"data.root={veri}"]).data)
    assert [(Path(p).name[:4], pid, camid) for p, pid, camid in dataset.train] == \
        [("0002", 0, 0), ("0005", 1, 2), ("0005", 1, 10)]  # relabelled by vehicle id, camera c011 → camid 10
    assert dataset.train_raw_pids == [2, 5]
    assert [(pid, camid) for _, pid, camid in dataset.query] == [(7, 1)]
    assert [(pid, camid) for _, pid, camid in dataset.gallery] == [(7, 1), (7, 4), (9, 1)]


def test_veri776_junk_rule_drops_the_same_vehicle_from_the_query_camera(veri):
    dataset = build_dataset(load_config(None, ["data.dataset=veri776", f"data.root={veri}"]).data)
    distances = np.array([[0.1, 0.5, 0.3]])  # same camera (junk) closest, then the other vehicle, then the match
    market = evaluate_distances(distances, dataset.query, dataset.gallery, max_rank=3, junk="market")
    assert market["rank1"] == 0.0 and market["mAP"] == pytest.approx(0.5)  # ranks: other vehicle, true match
    assert evaluate_distances(distances, dataset.query, dataset.gallery, max_rank=3, junk="none")["rank1"] == 1.0


def test_veri776_missing_folder_is_named(tmp_path):
    (tmp_path / "image_train").mkdir()
    with pytest.raises(DatasetError, match="VeRi-776 layout expected folders image_train, image_test, image_query"):
        build_dataset(load_config(None, ["data.dataset=veri776", f"data.root={tmp_path}"]).data)


@pytest.fixture()
def vehicleid(tmp_path):
    """Train: vehicles 11 (2 images), 12 (1); test_list_800: vehicle 3 (3 images), 4 (2); test_list_1600 adds 5."""
    lists = {"train_list.txt": [("0000001", 11), ("0000002", 12), ("0000003", 11)],
             "test_list_800.txt": [("0000010", 3), ("0000011", 4), ("0000012", 3), ("0000013", 3), ("0000014", 4)],
             "test_list_1600.txt": [("0000010", 3), ("0000011", 4), ("0000012", 3), ("0000015", 5), ("0000016", 5)]}
    for name, rows in lists.items():
        for image, _ in rows:
            _touch(tmp_path / "image" / f"{image}.jpg")
        (tmp_path / "train_test_split").mkdir(exist_ok=True)
        (tmp_path / "train_test_split" / name).write_text("".join(f"{image} {pid}\n" for image, pid in rows))
    return tmp_path


def test_vehicleid_lists_and_test_sizes(vehicleid):
    config = load_config(None, ["data.dataset=vehicleid", f"data.root={vehicleid}"])
    dataset = build_dataset(config.data)
    assert [(Path(p).stem, pid) for p, pid, _ in dataset.train] == [("0000001", 0), ("0000002", 1), ("0000003", 0)]
    assert dataset.train_raw_pids == [11, 12]
    # query and gallery are the whole list; camid = position among the vehicle's images
    assert dataset.query == dataset.gallery
    assert [(pid, camid) for _, pid, camid in dataset.query] == [(3, 0), (4, 0), (3, 1), (3, 2), (4, 1)]
    assert resolve_protocol(config) == "vehicleid"
    medium = build_dataset(load_config(None, ["data.dataset=vehicleid", f"data.root={vehicleid}",
                                              "data.vehicleid_test_size=1600"]).data)
    assert sorted({pid for _, pid, _ in medium.query}) == [3, 4, 5]


def test_vehicleid_bad_layouts_are_named(vehicleid, tmp_path_factory):
    (vehicleid / "train_test_split" / "test_list_800.txt").write_text("0000010 3\n0000011\n")
    with pytest.raises(DatasetError, match=r"test_list_800.txt line 2: '0000011'; expected '<image name>"):
        build_dataset(load_config(None, ["data.dataset=vehicleid", f"data.root={vehicleid}"]).data)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(DatasetError, match="VehicleID layout expected folders image/ and train_test_split/"):
        build_dataset(load_config(None, ["data.dataset=vehicleid", f"data.root={empty}"]).data)


def _vehicleid_by_hand(dist: np.ndarray, pids: np.ndarray, repeats: int, seed: int) -> tuple[float, float]:
    """Rank-1 and mAP of the protocol by its definition: loops over vehicles and queries."""
    rng = np.random.default_rng(seed)
    rank1, ap = [], []
    for _ in range(repeats):
        keys = rng.random(len(pids))
        gallery = [min(np.flatnonzero(pids == pid), key=lambda i: keys[i]) for pid in sorted(set(pids.tolist()))]
        hits, precisions = [], []
        for query in (i for i in range(len(pids)) if i not in gallery):
            match = next(g for g in gallery if pids[g] == pids[query])
            rank = 1 + sum(dist[query, g] < dist[query, match] or (dist[query, g] == dist[query, match] and g < match)
                           for g in gallery if g != match)
            hits.append(rank == 1)
            precisions.append(1.0 / rank)
        rank1.append(np.mean(hits))
        ap.append(np.mean(precisions))
    return float(np.mean(rank1)), float(np.mean(ap))


@pytest.mark.parametrize("seed", [0, 1])
def test_vehicleid_protocol_matches_its_definition(seed):
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(6), [1, 2, 3, 4, 2, 3])
    dist = rng.random((len(pids), len(pids))).round(1)  # ties included
    result = evaluate_vehicleid(dist, pids, max_rank=5, repeats=10, seed=seed)
    rank1, mean_ap = _vehicleid_by_hand(dist, pids, repeats=10, seed=seed)
    assert result["cmc"][0] == pytest.approx(rank1) and result["mAP"] == pytest.approx(mean_ap)
    assert result["mINP"] == pytest.approx(mean_ap)  # one true match: INP = AP
    assert result["num_valid_queries"] == len(pids) - 6


def test_vehicleid_protocol_is_perfect_for_a_perfect_feature():
    pids = np.array([3, 4, 3, 3, 4])
    dist = (pids[:, None] != pids[None, :]).astype(float)
    result = evaluate_vehicleid(dist, pids, max_rank=2)
    assert result["cmc"].tolist() == [1.0, 1.0] and result["mAP"] == 1.0


def test_square_vehicle_recipe_loads():
    config = load_config(REPO / "configs" / "bot_r50_veri776.yaml")
    assert (config.data.height, config.data.width) == (256, 256) and config.data.dataset == "veri776"
    assert resolve_protocol(load_config(REPO / "configs" / "bot_r50_veri776.yaml",
                                        ["data.dataset=vehicleid"])) == "vehicleid"
