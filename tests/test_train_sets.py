"""Several training sets in one run (data.train_sets, data.combineall) and several test sets (eval.test_sets)."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from reidkit.cli import main
from reidkit.config import load_config
from reidkit.data.combined import combine_train_sets
from reidkit.data.datasets import ReidDataset
from reidkit.data.samplers import PKSampler
from reidkit.engine.tensorboard_events import scalars
from reidkit.errors import ConfigError, DatasetError
from reidkit.viz.ranked import CELL_SIZE

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")


def _dataset(name: str, train: list, query: list, gallery: list, raw_pids: list) -> ReidDataset:
    return ReidDataset(name, f"/data/{name}", train, query, gallery, raw_pids)


@pytest.fixture()
def two_sets():
    """Set "a": labels 0, 1 (raw pids 10, 20), cameras 0-1; set "b": labels 0..2 (raw 5, 6, 7), cameras 0-2, and
    a query/gallery with identities 30 and 40, a pid 0 distractor and a pid -1 image."""
    a = _dataset("a", [("a0", 0, 0), ("a1", 0, 1), ("a2", 1, 1)], [("aq", 11, 0)], [("ag", 11, 1)], [10, 20])
    b = _dataset("b", [("b0", 0, 0), ("b1", 1, 2), ("b2", 2, 1), ("b3", 2, 0)],
                 [("q30", 30, 0), ("q40", 40, 1)], [("g40", 40, 0), ("g30", 30, 2), ("g0", 0, 1), ("gj", -1, 1)],
                 [5, 6, 7])
    return a, b


def test_identities_and_cameras_are_offset(two_sets):
    training = combine_train_sets(list(two_sets), ["a", "b"])
    assert training.train == [("a0", 0, 0), ("a1", 0, 1), ("a2", 1, 1),
                              ("b0", 2, 2), ("b1", 3, 4), ("b2", 4, 3), ("b3", 4, 2)]
    assert training.num_train_pids == 5
    assert [(p.first_label, p.first_camid, p.raw_pids) for p in training.parts] == [(0, 0, [10, 20]), (2, 2, [5, 6, 7])]
    lines = training.summary().splitlines()
    assert [cell.strip() for cell in lines[1].split("|")] == ["a", "2", "3", "2", "0", "0"]
    assert [cell.strip() for cell in lines[2].split("|")] == ["b", "3", "4", "3", "2", "2"]
    assert [cell.strip() for cell in lines[3].split("|")][:4] == ["union", "5", "7", "5"]


def test_combineall_adds_query_and_gallery_identities(two_sets):
    training = combine_train_sets(list(two_sets), ["a", "b"], combineall=True)
    # a: train labels 0, 1, then identity 11 (query + gallery) → 2; b starts at 3: train 3..5, then 30 → 6, 40 → 7
    assert [s for s in training.train if s[0] in ("aq", "ag")] == [("aq", 2, 0), ("ag", 2, 1)]
    tail = {path: label for path, label, _ in training.train if path[0] in "qg"}
    assert tail == {"q30": 6, "g30": 6, "q40": 7, "g40": 7}  # distractor (pid 0) and junk (pid -1) left out
    assert training.parts[1].raw_pids == [5, 6, 7, 30, 40] and training.num_train_pids == 8


def test_pk_batches_and_attribute_rows_cover_the_union(two_sets):
    training = combine_train_sets(list(two_sets), ["a", "b"])
    sampler = PKSampler([pid for _, pid, _ in training.train], p=5, k=2, seed=0)
    sampler.set_epoch(1)
    (batch,) = list(sampler)
    assert sorted({training.train[i][1] for i in batch}) == [0, 1, 2, 3, 4]
    attributes_a = {10: {"hat": 1, "age": 2}, 20: {"hat": 2, "age": 1}}
    attributes_b = {5: {"hat": 2, "age": 4}, 6: {"hat": 1, "age": 3}, 7: {"hat": 1, "age": 1}}
    table = training.attribute_table([attributes_a, attributes_b])
    assert table.tolist() == [[0, 1], [1, 0], [1, 3], [0, 2], [0, 0]]  # label order, codes − 1
    with pytest.raises(DatasetError, match="training set b has no attributes"):
        training.attribute_table([attributes_a, None])
    with pytest.raises(DatasetError, match="same attributes"):
        training.attribute_table([attributes_a, {pid: {"hat": 1} for pid in (5, 6, 7)}])


def test_train_and_test_sets_in_yaml_and_overrides(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump({"data": {"train_sets": [{"dataset": "market1501", "root": "m"},
                                                            {"dataset": "msmt17", "root": "s"}],
                                             "combineall": True},
                                    "eval": {"test_sets": [{"dataset": "dukemtmc", "root": "d"}]}}))
    config = load_config(path)
    assert [(s.dataset, s.root) for s in config.data.train_sets] == [("market1501", "m"), ("msmt17", "s")]
    assert config.data.combineall and config.eval.test_sets[0].dataset == "dukemtmc"
    again = load_config(path, ["data.train_sets=[{dataset: synthetic, root: x/one}, "
                               "{dataset: synthetic, root: y/two}]"])
    assert [s.root for s in again.data.train_sets] == ["x/one", "y/two"]
    assert load_config(None).data.train_sets == [] and load_config(None).eval.test_sets == []


@pytest.mark.parametrize("override, message", [
    ("data.train_sets=[{dataset: synthetic, root: a/x}, {dataset: synthetic, root: b/x}]", "two sets are named 'x'"),
    ("data.train_sets=[{dataset: synthetic, root: a, synthetic_cameras: 12}]",
     r"data.train_sets\[0\].synthetic_cameras: 12 is not allowed"),
    ("data.train_sets=[{dataset: synthetic, rot: a}]", r"unknown config key 'data.train_sets\[0\].rot'; did you mean"),
    ("eval.test_sets=[{dataset: imagenet, root: a}]", r"eval.test_sets\[0\].dataset: 'imagenet' is not allowed"),
    ("eval.test_sets=[{dataset: synthetic, root: a, name: 'x/y'}]", r"eval.test_sets\[0\].name: 'x/y' is not allowed"),
    ("data.train_sets=[{dataset: synthetic, root: a}", "not a list or mapping"),
])
def test_bad_set_lists_are_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])


def _tiny_set(root: Path, name: str, seed: int, domain: str) -> str:
    return (f"{{dataset: synthetic, root: {root / name}, name: {name}, synthetic_identities: 8, synthetic_cameras: 2, "
            f"synthetic_seed: {seed}, synthetic_domain: {domain}}}")


@pytest.fixture(scope="module")
def two_set_run(tmp_path_factory):
    """Domains a and b joined (sharded classifier, attribute heads on the union), evaluated on both, with
    TensorBoard events and activation maps: (folder, printed output)."""
    root = tmp_path_factory.mktemp("two_sets")
    a, b = _tiny_set(root, "A", 0, "a"), _tiny_set(root, "B", 1, "b")
    run = root / "run"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["--quiet", "train", "--config", TINY, "--out", str(run), f"data.train_sets=[{a}, {b}]",
                     f"eval.test_sets=[{a}, {b}]", "data.height=32", "data.width=16", "data.k=2", "train.epochs=1",
                     "train.checkpoint_every_steps=0", "loss.id.sharded=true", "loss.attribute.weight=1.0",
                     "train.tensorboard=true", "eval.activation_maps=true"]) == 0
    return root, printed.getvalue()


@pytest.mark.slow
def test_two_set_run_trains_on_the_union_and_reports_each_test_set(two_set_run):
    root, out = two_set_run
    run = root / "run"
    assert "training set | ids | images" in out and "\nunion " in out
    assert "A: rank-1" in out and "\nB: rank-1" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test_sets"]) == {"A", "B"} and metrics["mAP"] == metrics["test_sets"]["A"]["mAP"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = {r["test_set"]: r for r in records if r["kind"] == "eval"}
    assert {name: evals[name]["mAP"] for name in evals} == {n: metrics["test_sets"][n]["mAP"] for n in ("A", "B")}
    assert (run / "test_sets" / "B" / "plots" / "cmc.png").is_file()
    assert list((run / "test_sets" / "B" / "ranked").glob("query_*.png"))
    report = (run / "report.html").read_text()
    assert "id='test-sets-table'" in report and "data-row='B'" in report
    assert "Second row: where the feature comes from" in report  # eval.activation_maps
    ranked = next((run / "ranked").glob("query_*.png"))
    with Image.open(ranked) as picture:
        assert picture.height > 2 * CELL_SIZE[1]  # images, then the images under their activation maps


@pytest.mark.slow
def test_eval_on_another_set_through_data_overrides(two_set_run, capsys):
    """`reidkit eval --run RUN data.…=…` on set B alone gives the numbers the run reported for B."""
    root, _ = two_set_run
    assert main(["--quiet", "eval", "--run", str(root / "run"), "--out", str(root / "on_b"), "eval.test_sets=[]",
                 "data.dataset=synthetic", f"data.root={root / 'B'}", "data.synthetic_identities=8",
                 "data.synthetic_cameras=2", "data.synthetic_seed=1", "data.synthetic_domain=b"]) == 0
    on_b = json.loads((root / "on_b" / "metrics.json").read_text())
    trained = json.loads((root / "run" / "metrics.json").read_text())["test_sets"]["B"]
    assert np.isclose(on_b["mAP"], trained["mAP"], atol=1e-6) and "test_sets" not in on_b


@pytest.mark.slow
def test_tensorboard_events_equal_metrics_jsonl(two_set_run):
    """Every number of metrics.jsonl (loss terms, lr, each test set's metrics) is in the event files, same step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _ = two_set_run
    events = EventAccumulator(str(root / "run" / "tensorboard"))
    events.Reload()
    read = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    expected: dict[str, dict[int, float]] = {}
    for line in (root / "run" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for tag, value in scalars(record).items():
            expected.setdefault(tag, {})[record["step"]] = value
    assert {"loss", "loss/id", "loss/trihard", "loss/attribute", "lr", "eval/A/mAP", "eval/B/rank1"} <= set(expected)
    assert set(read) == set(expected)
    for tag, values in expected.items():
        assert read[tag].keys() == values.keys(), tag
        assert np.allclose([read[tag][step] for step in values], list(values.values()), rtol=1e-6), tag


def test_tensorboard_tags_of_records():
    train = {"kind": "train", "epoch": 1, "step": 5, "lr": 0.1, "loss": 2.0, "loss/id": 1.5}
    assert scalars(train) == {"lr": 0.1, "loss": 2.0, "loss/id": 1.5}
    evaluation = {"kind": "eval", "epoch": 1, "step": 5, "protocol": "all_gallery", "mAP": 0.5,
                  "attribute_accuracy": {"hat": 0.75}}
    assert scalars(evaluation) == {"eval/mAP": 0.5, "eval/attribute_accuracy/hat": 0.75}
    assert scalars({**evaluation, "test_set": "B"}) == {"eval/B/mAP": 0.5, "eval/B/attribute_accuracy/hat": 0.75}
