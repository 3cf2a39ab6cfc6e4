"""The table of `benchmarks/peers.py` (side by side with fast-reid's and Torchreid's engines) from run files whose
figures are known: means, min–max spreads, speed and ranking ratios worked by hand."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("peers", REPO / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(folder: Path, system: str, seed: int, **figures) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{system}_seed{seed}.json").write_text(json.dumps({"system": system, "seed": seed, **figures}))


def test_table_rows_give_mean_and_range_over_seeds_and_ratios_to_the_peer(peers, tmp_path):
    bot = tmp_path / "bot_r18"
    write_run(bot, "fast-reid", 0, rank1=0.5, mAP=0.2, mINP=0.1, train_img_per_s=10.0, own_ranking_s=2.0,
              reidkit_ranking_s=0.1)
    write_run(bot, "fast-reid", 1, rank1=0.7, mAP=0.4, mINP=0.1, train_img_per_s=20.0, own_ranking_s=4.0,
              reidkit_ranking_s=0.2)
    write_run(bot, "reidkit", 0, rank1=0.6, mAP=0.3, mINP=0.2, train_img_per_s=30.0, reidkit_ranking_s=0.05)
    write_run(bot, "reidkit", 1, rank1=0.6, mAP=0.5, mINP=0.2, train_img_per_s=30.0, reidkit_ranking_s=0.05)
    write_run(tmp_path / "osnet_torchreid", "Torchreid", 0, rank1=0.1, mAP=0.1, mINP=0.1, train_img_per_s=5.0,
              own_ranking_s=1.0, reidkit_ranking_s=0.1)  # no reidkit run yet: the recipe has no rows
    rows = peers.format_table(tmp_path).splitlines()[2:]
    # fast-reid: speeds 10 and 20 → 15 (1×); ranking medians 3 s own, 0.15 s reidkit's → 20×
    assert rows == ["| bot_r18 | fast-reid | 0,1 | 60.0 (50.0–70.0) | 30.0 (20.0–40.0) | 10.0 (10.0–10.0) | "
                    "15.0 (1.00×) | 3.000 / 0.150 (20×) |",
                    "| bot_r18 | reidkit | 0,1 | 60.0 (60.0–60.0) | 40.0 (30.0–50.0) | 20.0 (20.0–20.0) | "
                    "30.0 (2.00×) | 0.050 |"]


def test_a_single_seed_is_its_value_without_a_range(peers):
    assert peers.spread([0.123]) == "12.3"
    assert peers.spread([0.1, 0.2, 0.6]) == "30.0 (10.0–60.0)"
