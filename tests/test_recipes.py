"""Loss recipes (`configs/recipes/*.yaml`) and the ablation benchmark (`benchmarks/ablation.py`).

Every recipe loads, stands alone (the data and model sections of configs/demo.yaml, the same training
budget), switches on exactly its loss terms, and trains: its loss falls over a few optimiser steps.

The falling-loss check runs the library's own step (`Trainer.run_step` on the model, objective and
optimiser that `build_model` / `build_objective` / `build_optimizer` make from the recipe) on one fixed batch
of a tiny synthetic set, not a full `train()` per recipe: sixteen tiny `train()` runs take about 3.5
minutes on 2 busy cores (writing each run's report takes most of it), and the losses of a few random PK
batches with augmentation are too noisy to assert a fall. `train()` runs end to end in the ablation test
(2 recipes × 2 seeds, one epoch each), which also checks the resume and the written table and chart.
"""

import importlib.util
import json
import math
import statistics
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from reidkit.config import load_config
from reidkit.data.attributes import attribute_classes, attribute_table, load_attributes
from reidkit.data.datasets import load_market1501
from reidkit.data.synthetic import SyntheticSpec, generate_dataset
from reidkit.data.transforms import build_test_transform
from reidkit.engine.optim import build_optimizer
from reidkit.engine.teacher import Preprocessing, Teacher, WithTeacher
from reidkit.engine.trainer import Trainer, seed_everything
from reidkit.losses.objective import build_objective
from reidkit.models.reid import build_model, model_kwargs

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "configs" / "recipes"
# recipe → the loss terms it switches on (weight > 0); every other term must be off.
EXPECTED_TERMS = {
    "ide": {"id"}, "ide_attributes": {"id", "attribute"}, "ide_verification": {"id", "verification"},
    "contrastive": {"contrastive"}, "triplet": {"triplet"}, "improved_triplet": {"improved_triplet"},
    "quadruplet": {"quadruplet"}, "trihard": {"trihard"}, "adaptive_triplet": {"adaptive_triplet"},
    "lifted": {"lifted"}, "hap2s": {"hap2s"}, "bot": {"id", "trihard"}, "norm_softmax": {"norm_softmax"},
    "cosface": {"cosface"}, "arcface": {"arcface"}, "circle": {"circle"}, "ahsm": {"id"},
    "mancs": {"id", "curriculum_triplet"},
    **{f"distill_{student}": {"id", "trihard", "logit_kd", "rkd_distance", "rkd_angle"}
       for student in ("resnet18", "mobilenetv3")},
    "distill_osnet_x0_25": {"id", "logit_kd", "rkd_distance", "rkd_angle"},
}
# recipe → the model keys it adds to demo.yaml's model section (the architecture its paper needs).
MODEL_ADDITIONS = {"mancs": {"attention_blocks": True, "attention_branch": True},
                   **{f"distill_{name}": {"backbone": backbone, "teacher": "runs/teacher_r50_ibn_a"} for name, backbone in
                      (("resnet18", "resnet18"), ("mobilenetv3", "timm/mobilenetv3_small_100"))},
                   "distill_osnet_x0_25": {"backbone": "osnet_x0_25", "teacher": "runs/demo"}}
# recipe → where it departs from demo.yaml's data and train sections, and why: OSNet x0.25 stays at chance from
# random init in the demo's optimiser recipe, and learns in Torchreid's (docs/distillation.md).
DEPARTURES = {"distill_osnet_x0_25": {
    "data": {"pad": 0, "erasing_prob": 0.0},
    "train": {"epochs": 8, "optimizer": "adam", "amsgrad": True, "adam_beta2": 0.99, "warmup_epochs": 0,
              "warmup_factor": None, "eval_every": 8}}}
STEPS = 8  # optimiser steps on the fixed batch; the mean of the last 3 must be below that of the first 3


def tiny_overrides(root: Path) -> list[str]:
    return [f"data.root={root}", "data.synthetic_identities=16", "data.synthetic_cameras=3", "data.height=64", "data.width=32", "data.p=4", "data.k=4", "data.workers=0",
            "train.warmup_epochs=0", "train.eval_every=100", "eval.ranked_queries=1", "train.log_every=1"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recipes") / "tiny"
    generate_dataset(root, SyntheticSpec(identities=16, cameras=3), seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def fixed_batch(tiny_root):
    """4 training identities × 4 images, test transform (no randomness): the same batch every step."""
    dataset = load_market1501(tiny_root)
    paths: dict[int, list[str]] = {}
    for path, pid, _ in dataset.train:
        paths.setdefault(pid, []).append(path)
    pids = sorted(paths)[:4]
    transform = build_test_transform(64, 32)
    images = torch.stack([transform(Image.open(path).convert("RGB")) for pid in pids for path in paths[pid][:4]])
    labels = torch.tensor([pid for pid in pids for _ in range(4)])
    return dataset, {"images": images, "pids": labels}


def enabled_terms(config) -> set[str]:
    return {field.name for field in fields(config.loss) if getattr(config.loss, field.name).weight > 0}


def test_every_recipe_has_a_file():
    assert sorted(path.stem for path in RECIPES.glob("*.yaml")) == sorted(EXPECTED_TERMS)


@pytest.mark.parametrize("recipe", sorted(EXPECTED_TERMS))
def test_recipe_loads_and_stands_alone(recipe):
    path = RECIPES / f"{recipe}.yaml"
    config = load_config(path)
    raw = yaml.safe_load(path.read_text())
    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    assert path.read_text().startswith(f"# {recipe}: ")  # the one-line comment naming recipe and paper
    departures = DEPARTURES.get(recipe, {})

    def departed(section: str) -> dict:
        merged = {**demo[section], **departures.get(section, {})}
        return {key: value for key, value in merged.items() if value is not None}

    assert raw["data"] == departed("data") and raw["model"] == {**demo["model"], **MODEL_ADDITIONS.get(recipe, {})}
    assert {k: v for k, v in raw["train"].items() if k != "lr"} == \
        {k: v for k, v in departed("train").items() if k != "lr"}  # same budget; only the rate differs
    assert raw["eval"]["baselines"] is False and config.eval.baselines is False
    assert enabled_terms(config) == EXPECTED_TERMS[recipe]
    assert config.eval.verify_topk == (10 if recipe == "ide_verification" else 0)


@pytest.mark.parametrize("recipe", sorted(EXPECTED_TERMS))
def test_recipe_loss_falls_on_a_fixed_batch(recipe, tiny_root, fixed_batch):
    dataset, batch = fixed_batch
    config = load_config(RECIPES / f"{recipe}.yaml", tiny_overrides(tiny_root))
    seed_everything(0)
    attributes = load_attributes("synthetic", str(tiny_root), "") if config.loss.attribute.weight else None
    model = build_model(num_classes=dataset.num_train_pids, pair_head=config.loss.verification.weight > 0,
                        attributes=attribute_classes(attributes) if attributes else None,
                        **model_kwargs(config.model))
    objective = build_objective(config.loss, dataset.num_train_pids, model.feat_dim,
                                attribute_table(attributes, dataset.train_raw_pids) if attributes else None,
                                model.pair_head)
    assert set(objective.terms) == EXPECTED_TERMS[recipe]
    optimizer = build_optimizer(model, objective, config.train)
    if config.model.teacher:  # a distillation recipe: a random ResNet-18 stands in for its trained teacher
        teacher = Teacher(build_model("resnet18", num_classes=dataset.num_train_pids, last_stride=2), "bn_features",
                          Preprocessing(64, 32))
        model = WithTeacher(model, teacher, Preprocessing(64, 32))
    trainer = Trainer(model, objective, optimizer, torch.device("cpu"))
    losses = [trainer.run_step(batch)[0].item() for _ in range(STEPS)]
    assert all(math.isfinite(loss) for loss in losses)
    assert statistics.fmean(losses[-3:]) < statistics.fmean(losses[:3]), losses


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation", REPO / "benchmarks" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_is_mean_and_sample_std_over_seeds(ablation):
    runs = [{"recipe": "b", "seed": 0, "rank1": 0.5, "mAP": 0.2, "mINP": 0.1, "seconds": 10.0},
            {"recipe": "b", "seed": 1, "rank1": 0.7, "mAP": 0.4, "mINP": 0.1, "seconds": 20.0},
            {"recipe": "a", "seed": 0, "rank1": 0.25, "mAP": 0.125, "mINP": 0.05, "seconds": 4.0}]
    rows = ablation.summarize(runs, ["b", "a", "missing"])
    assert [row["recipe"] for row in rows] == ["b", "a"]
    assert rows[0]["rank1"] == pytest.approx((0.6, math.sqrt(0.02)))
    assert rows[0]["seconds"] == 15.0 and rows[1]["mAP"] == (0.125, 0.0)
    table = ablation.format_table(rows).splitlines()
    assert table[2] == "| b | 0 1 | 60.0 ± 14.1 | 30.0 ± 14.1 | 10.0 ± 0.0 | 15 |"
    assert table[3] == "| a | 0 | 25.0 | 12.5 | 5.0 | 4 |"


def test_ablation_trains_every_pair_then_resumes(ablation, tiny_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ablation"
    args = ["--seeds", "0", "1", "--out", str(out), "--recipes", "ide_attributes", "trihard", "--epochs", "1",
            "--set", *tiny_overrides(tiny_root)]
    assert ablation.main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert sorted((run["recipe"], run["seed"]) for run in results["runs"]) == \
        [("ide_attributes", 0), ("ide_attributes", 1), ("trihard", 0), ("trihard", 1)]
    for run in results["runs"]:
        assert all(0.0 <= run[key] <= 1.0 for key in ("rank1", "mAP", "mINP")) and run["seconds"] > 0
        records = [json.loads(line) for line in (Path(run["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        assert [r for r in records if r["kind"] == "train"] and all(
            math.isfinite(r["loss"]) for r in records if r["kind"] == "train")
    assert "attribute_accuracy" in next(run for run in results["runs"] if run["recipe"] == "ide_attributes")
    table = (out / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "recipe" not in line]
    assert [row.split(" | ")[0] for row in rows] == ["| ide_attributes", "| trihard"]
    assert all(row.count("±") == 3 for row in rows)
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| trihard | 0 1 |" in capsys.readouterr().out

    def no_training(*args, **kwargs):
        raise AssertionError("a finished recipe/seed pair was trained again")

    monkeypatch.setattr(ablation, "train", no_training)
    assert ablation.main(args) == 0  # everything is in results.json: nothing is retrained
    assert json.loads((out / "results.json").read_text()) == results
    assert ablation.main(["--seeds", "0", "--out", str(out), "--recipes", "trihard", "--epochs", "2"]) == 2
    assert "holds runs with the budget" in capsys.readouterr().err


def test_backbone_table_fits_a_peer_recipe_to_the_demo_data_and_budget(tmp_path, monkeypatch):
    """benchmarks/backbones.py --recipe: the peer config's schedule compressed into the budget, its data replaced
    by the demo's, random init on the CPU."""
    from reidkit.config import load_config

    spec = importlib.util.spec_from_file_location("backbones", REPO / "benchmarks" / "backbones.py")
    backbones = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(backbones)
    demo = tmp_path / "demo.yaml"  # the demo's data, smaller: 64 identities, 32 training ones
    demo.write_text((REPO / "configs" / "demo.yaml").read_text().replace("data/synthetic", str(tmp_path / "data"))
                    .replace("synthetic_identities: 300", "synthetic_identities: 64"))
    monkeypatch.setattr(backbones, "DEMO", demo)
    recipe = REPO / "configs" / "bot_r50_ibn_a_market.yaml"  # 120 epochs, milestones 40 / 90, 2,000 warm-up steps
    overrides = backbones.own_recipe_overrides(recipe, 6)
    config = load_config(recipe, [*overrides, "train.epochs=6"])
    images = len(list((tmp_path / "data" / "bounding_box_train").glob("*.jpg")))
    assert config.data.root == str(tmp_path / "data") and config.data.synthetic_identities == 64
    assert (config.data.height, config.data.width, config.model.weights, config.train.device) == (128, 64, "", "cpu")
    assert config.train.milestones == [2, 4]  # 40 and 90 of 120 epochs → of 6: 2 and 4.5 (rounded half to even)
    assert images // 64 >= 3 and config.train.warmup_iters == round(2000 * 6 / 120 * (images // 64) / (12936 // 64)) > 0
    assert (config.train.optimizer, config.train.lr, config.loss.trihard.weight) == ("adam", 0.00035, 1.0)
