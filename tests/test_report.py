"""HTML run report and run comparison: sections, embedded images, numbers equal to the run's files."""

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_ranked_lists import brute_force, brute_force_cameras

from reidkit.engine.reporting import compare_run_folders, report_run
from reidkit.metrics.ranked_lists import rank_distances
from reidkit.viz.embedding_plot import pca_2d, top_identities

RUN_SECTIONS = {"config", "dataset", "metrics", "cmc", "training", "open-set", "camera-pairs", "ranked", "worst",
                "embedding"}


class ReportParser(HTMLParser):
    """Collects section ids, <img> sources, metric cells per table row, and tags that would load anything."""

    def __init__(self) -> None:
        super().__init__()
        self.sections, self.images, self.cells, self.external = [], [], {}, []
        self.row = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "tr":
            self.row = attrs.get("data-row")
        elif tag == "td" and "data-value" in attrs and self.row is not None:
            self.cells.setdefault(self.row, {})[attrs.get("data-key", "")] = float(attrs["data-value"])
        if tag in ("script", "link", "iframe") or any(v and v.startswith(("http:", "https:", "//"))
                                                      for k, v in attrs.items() if k in ("src", "href")):
            self.external.append(tag)


def parse(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run folder in the trainer's format, without the cost of training: an untrained model
    evaluated by the real evaluator, train records as `Trainer` logs them, and a baselines.json."""
    from _untrained_run import write_untrained_run

    from reidkit.engine.evaluation import eval_record, evaluate_distances, evaluate_model
    from reidkit.engine.run_writer import MetricsLog

    run, config, dataset, model = write_untrained_run(tmp_path_factory.mktemp("report"))
    metrics = evaluate_model(model, dataset, config.eval, 32, 16, progress=False, protocol="all_gallery").metrics
    log = MetricsLog(run / "metrics.jsonl")
    for step in range(1, 7):
        log.write({"kind": "train", "epoch": 1 + (step > 3), "step": step, "lr": 3.5e-4, "loss": 9.0 / step,
                   "loss/id": 2.0 / step, "loss/trihard": 7.0 / step})
        if step % 3 == 0:
            log.write({"kind": "eval", "epoch": step // 3, **eval_record(metrics)})
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    distmat = np.random.default_rng(0).random((len(dataset.query), len(dataset.gallery)))
    chance = evaluate_distances(distmat, dataset.query, dataset.gallery, config.eval.max_rank)
    (run / "baselines.json").write_text(json.dumps({"random_distances": chance}, indent=2))
    return run


@pytest.fixture(scope="module")
def report(run):
    return run, parse(report_run(run, num_ranked=3, num_worst=3))


def test_every_section_and_image_is_embedded(report):
    run, parsed = report
    assert (run / "report.html").is_file()
    assert RUN_SECTIONS <= set(parsed.sections) and "attributes" not in parsed.sections
    # CMC + training curves + ROC + distance histograms + 3 sample queries + 3 worst queries + PCA scatter
    assert len(parsed.images) == 11
    assert all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in parsed.images)
    assert parsed.external == []


def test_metrics_table_equals_metrics_and_baselines_json(report):
    run, parsed = report
    metrics = json.loads((run / "metrics.json").read_text())
    baselines = json.loads((run / "baselines.json").read_text())
    keys = ("rank1", "rank5", "rank10", "mAP", "mINP")
    assert parsed.cells["this run"] == {key: metrics[key] for key in keys}
    for name, values in baselines.items():
        assert parsed.cells[f"baseline: {name.replace('_', ' ')}"] == {key: values[key] for key in keys}


def test_open_set_table_equals_metrics_json(report):
    run, parsed = report
    figures = json.loads((run / "metrics.json").read_text())["open_set"]
    assert parsed.cells["EER"] == {"": figures["eer"]}
    assert parsed.cells["threshold for FPR ≤ 0.001"] == {"": figures["threshold"]}
    for fpr, tpr in figures["tpr_at_fpr"].items():
        assert parsed.cells[f"TPR at FPR {float(fpr):g}"] == {"": tpr}


def test_trainer_arguments_are_used_without_reloading_the_model(run, tmp_path, monkeypatch):
    import reidkit.engine.reporting
    from reidkit.data.build import build_dataset
    from reidkit.engine.saved_runs import load_run_config

    dataset = build_dataset(load_run_config(run).data, progress=False)
    monkeypatch.setattr(reidkit.engine.reporting, "load_run_model", lambda *args: pytest.fail("model reloaded"))
    rng = np.random.default_rng(0)
    distmat = rng.random((len(dataset.query), len(dataset.gallery)))
    features = rng.normal(size=(len(dataset.gallery), 8))
    path = report_run(run, ranked=rank_distances(distmat, *labels(dataset)), dataset=dataset,
                        gallery_features=features, out_path=tmp_path / "given.html", num_ranked=2, num_worst=1)
    parsed = parse(path)
    assert RUN_SECTIONS <= set(parsed.sections) and len(parsed.images) == 2 + 2 + 2 + 1 + 1
    assert parsed.cells["this run"]["mAP"] == json.loads((run / "metrics.json").read_text())["mAP"]
    table = brute_force_cameras(distmat, *labels(dataset), junk="market")
    for camera, rates in zip(table["query_cameras"], table["rank1"]):
        assert parsed.cells[f"query c{camera + 1}"] == {f"gallery c{g + 1}": rate for g, rate in
                                                        zip(table["gallery_cameras"], rates) if rate is not None}


def labels(dataset):
    """(q_pids, g_pids, q_camids, g_camids) of a data set, the argument order of evaluate_rank."""
    return [np.array([s[i] for s in samples]) for samples, i in
            ((dataset.query, 1), (dataset.gallery, 1), (dataset.query, 2), (dataset.gallery, 2))]


def copy_run(run: Path, out: Path, config_changes: dict | None = None, metric_changes: dict | None = None) -> Path:
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("checkpoints", "ranked", "report.html"))
    config = yaml.safe_load((out / "config.yaml").read_text())
    for section, values in (config_changes or {}).items():
        config[section].update(values)
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = json.loads((out / "metrics.json").read_text()) | (metric_changes or {})
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out


def test_attributes_and_a_missing_data_set(run, tmp_path):
    accuracy = {"gender": 0.75, "backpack": 0.5}
    other = copy_run(run, tmp_path / "moved", {"data": {"dataset": "market1501", "root": str(tmp_path / "none")}},
                     {"attribute_accuracy": accuracy})
    path = report_run(other)
    parsed = parse(path)
    # the open-set section is drawn from metrics.json alone, so it stays
    assert {"config", "dataset", "metrics", "cmc", "training", "open-set", "attributes"} == set(parsed.sections)
    assert parsed.cells["gender"] == {"": 0.75} and parsed.cells["backpack"] == {"": 0.5}
    assert len(parsed.images) == 4 and "data set not available" in path.read_text()


def test_compare_runs(run, tmp_path):
    other = copy_run(run, tmp_path / "other", {"train": {"lr": 0.5}}, {"rank1": 0.125, "cmc": [0.125, 1.0]})
    parsed = parse(compare_run_folders([run, other], tmp_path / "compare.html", labels=["first", "second"]))
    assert parsed.sections == ["metrics", "cmc", "config-diff"] and len(parsed.images) == 1
    assert parsed.cells["first"]["rank1"] == json.loads((run / "metrics.json").read_text())["rank1"]
    assert parsed.cells["second"]["rank1"] == 0.125
    assert "train.lr" in (tmp_path / "compare.html").read_text() and parsed.external == []


def test_pca_and_top_identities():
    along = np.array([-2, -1, 0, 1, 2] * 2, dtype=float)  # orthogonal, zero-mean columns: the PCs are known
    across = np.array([1.0] * 5 + [-1.0] * 5)
    features = np.stack([3 * along, np.zeros(10), across, np.zeros(10)], axis=1) + 7.0
    points, explained = pca_2d(features)
    assert points.shape == (10, 2)
    np.testing.assert_allclose(explained, [180 / 190, 10 / 190])  # sums of squares 9·20 and 10
    np.testing.assert_allclose(np.abs(points), np.abs(np.stack([3 * along, across], axis=1)), atol=1e-12)
    assert top_identities([3, 3, 1, 1, 2, 5, 5, 5], 3) == [5, 1, 3]


def test_worst_queries_are_the_lowest_average_precisions_in_order(run, tmp_path):
    import re

    from reidkit.data.build import build_dataset
    from reidkit.engine.saved_runs import load_run_config

    dataset = build_dataset(load_run_config(run).data, progress=False)
    distmat = np.random.default_rng(3).random((len(dataset.query), len(dataset.gallery)))
    path = report_run(run, ranked=rank_distances(distmat, *labels(dataset)), dataset=dataset,
                        gallery_features=np.ones((len(dataset.gallery), 2)), out_path=tmp_path / "worst.html",
                        num_ranked=1, num_worst=4)
    worst_section = path.read_text(encoding="utf-8").split("id='worst'")[1].split("<section")[0]
    shown = [(int(index), float(ap)) for index, ap in
             re.findall(r"<figcaption>query (\d+) · pid [-\d]+ · camera c\d+ · AP ([\d.]+)</figcaption>", worst_section)]
    precisions = brute_force(distmat, *labels(dataset), junk="market", k=1)[0]
    valid = np.flatnonzero(~np.isnan(precisions))
    expected = valid[np.argsort(precisions[valid], kind="stable")][:4]
    assert [index for index, _ in shown] == expected.tolist()
    assert [ap for _, ap in shown] == pytest.approx(precisions[expected], abs=5e-4)
    assert all(a <= b for (_, a), (_, b) in zip(shown, shown[1:]))


def test_report_of_a_run_with_activation_maps_draws_them_from_the_reloaded_model(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["eval"]["activation_maps"] = True
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    legend = "where the feature comes from"
    plain = report_run(run, out_path=tmp_path / "plain.html", num_ranked=2, num_worst=1)
    assert legend not in plain.read_text(encoding="utf-8")  # the run without the option
    page = report_run(copy, num_ranked=2, num_worst=1).read_text(encoding="utf-8")
    assert page.count(legend) == 2  # the sample queries' and the worst queries' ranked lists
