"""End to end through the command line on configs/tiny.yaml: train, eval, extract, errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file as save_weights_file

from _cli import reidkit

from reidkit.cli import main
from reidkit.engine.checkpoint import load_weights
from reidkit.retrieval.feature_files import load_feature_file

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    result = reidkit("train", "--config", TINY, "--out", str(root / "run"), f"data.root={root / 'data'}")
    assert result.returncode == 0, result.stderr
    return root, result


def test_train_writes_the_run_folder(tiny_run):
    root, result = tiny_run
    run = root / "run"
    for name in ("config.yaml", "metrics.jsonl", "metrics.json", "model.safetensors",
                 "checkpoints/epoch_001.safetensors", "checkpoints/epoch_002.safetensors",
                 "plots/cmc.png", "plots/training_curves.png"):
        assert (run / name).is_file(), name
    assert len(list((run / "ranked").glob("query_*.png"))) == 3
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert train_records and all({"loss", "loss/id", "loss/trihard", "lr"} <= r.keys() for r in train_records)
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [1, 2]
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["mAP"] <= 1 and 0 <= metrics["rank1"] <= 1 and len(metrics["cmc"]) == 50
    assert "rank-1" in result.stdout and "run folder" in result.stdout


def test_eval_reproduces_the_training_metrics(tiny_run):
    root, _ = tiny_run
    result = reidkit("eval", "--run", str(root / "run"))
    assert result.returncode == 0, result.stderr
    trained = json.loads((root / "run" / "metrics.json").read_text())
    evaluated = json.loads((root / "run" / "eval" / "synthetic" / "metrics.json").read_text())
    assert evaluated["mAP"] == pytest.approx(trained["mAP"], abs=1e-6)
    assert evaluated["cmc"] == pytest.approx(trained["cmc"], abs=1e-6)


def test_each_evaluated_data_set_gets_its_own_folder_and_the_report_lists_them(tiny_run, tmp_path):
    """Issue 23, item 11: `eval` on other data never replaces an earlier evaluation; the same data again replaces
    only its own folder; `report` and `--compare` list every evaluation folder."""
    root, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run, ignore=shutil.ignore_patterns("eval*", "checkpoints"))
    shutil.copytree(root / "data", tmp_path / "other")  # the same layout and label at another root
    assert main(["--quiet", "eval", "--run", str(run)]) == 0
    own = (run / "eval" / "synthetic" / "metrics.json").read_bytes()
    assert json.loads(own)["evaluated_on"][0]["root"] == str((root / "data").resolve())
    assert main(["--quiet", "eval", "--run", str(run), f"data.root={tmp_path / 'other'}", "eval.flip=true"]) == 0
    assert (run / "eval" / "synthetic" / "metrics.json").read_bytes() == own  # kept
    other = json.loads((run / "eval" / "synthetic-2" / "metrics.json").read_text())
    assert other["evaluated_on"][0]["root"] == str((tmp_path / "other").resolve())
    assert main(["eval", "--run", str(run), "eval.max_rank=5"]) == 0  # the first data again: its folder only
    assert len(json.loads((run / "eval" / "synthetic" / "metrics.json").read_text())["cmc"]) == 5
    assert json.loads((run / "eval" / "synthetic-2" / "metrics.json").read_text()) == other
    assert sorted(path.name for path in (run / "eval").iterdir()) == ["synthetic", "synthetic-2"]
    assert main(["--quiet", "report", "--run", str(run), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "Evaluations" in page and ">eval/synthetic<" in page and ">eval/synthetic-2<" in page
    assert main(["--quiet", "report", "--run", str(run), "--compare", str(root / "run"),
                 "--out", str(tmp_path / "compare.html")]) == 0
    assert "run: eval/synthetic-2" in (tmp_path / "compare.html").read_text()


def test_re_ranking_in_eval_and_from_feature_files(tiny_run, tmp_path):
    from reidkit.config import load_config
    from reidkit.distances import pairwise_distance
    from reidkit.metrics import alpha_query_expansion, evaluate_rank, re_ranking_features

    root, _ = tiny_run
    result = reidkit("eval", "--run", str(root / "run"), "--out", str(tmp_path / "eval"), "eval.rerank=true",
                     "eval.rerank_k1=6", "eval.rerank_k2=3", "eval.query_expansion=alpha", "eval.qe_top_k=2")
    assert result.returncode == 0, result.stderr
    assert "re-ranked: rank-1" in result.stdout and "query expansion: rank-1" in result.stdout
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    features = {}
    for split in ("query", "gallery"):
        out = tmp_path / f"{split}.safetensors"
        assert main(["--quiet", "extract", "--run", str(root / "run"), "--split", split, "--out", str(out)]) == 0
        features[split] = load_feature_file(out)
    metric = load_config(root / "run" / "config.yaml").eval.metric
    reranked = re_ranking_features(features["query"][0], features["gallery"][0], metric, k1=6, k2=3)
    expected = evaluate_rank(reranked, features["query"][1], features["gallery"][1], features["query"][2],
                             features["gallery"][2])
    assert metrics["reranked"]["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert metrics["reranked"]["cmc"] == pytest.approx(expected["cmc"].tolist(), abs=1e-6)
    assert metrics["reranked"]["mAP"] != pytest.approx(metrics["mAP"], abs=1e-6)  # re-ranking changed the order
    expanded = alpha_query_expansion(features["query"][0], features["gallery"][0], top_k=2, alpha=3.0)
    expected_qe = evaluate_rank(pairwise_distance(*expanded, metric), features["query"][1], features["gallery"][1],
                                features["query"][2], features["gallery"][2])
    assert metrics["query_expanded"]["mAP"] == pytest.approx(expected_qe["mAP"], abs=1e-6)
    # `reidkit rerank` on the extracted files: same distances, same metrics, before and after; without
    # --metric it re-ranks the distance the run evaluates with, which `extract` stored in the file.
    assert metric == "cosine"
    result = reidkit("rerank", "--query", str(tmp_path / "query.safetensors"), "--gallery",
                     str(tmp_path / "gallery.safetensors"), "--k1", "6", "--k2", "3",
                     "--out", str(tmp_path / "new" / "reranked"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "cosine distance" in result.stdout
    assert result.stdout.rstrip().endswith(f"to {tmp_path / 'new' / 'reranked.npy'}")  # the file numpy wrote
    np.testing.assert_array_equal(np.load(tmp_path / "new" / "reranked.npy"), reranked)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f" original: rank-1 {metrics['rank1']:.2%}  mAP {metrics['mAP']:.2%}")
    assert lines[1].startswith(f"re-ranked: rank-1 {expected['cmc'][0]:.2%}  mAP {expected['mAP']:.2%}")
    folder = reidkit("rerank", "--query", str(tmp_path), "--gallery", str(tmp_path / "x"))
    assert folder.returncode == 2 and f"{tmp_path} is a folder; write one with `reidkit extract" in folder.stderr
    missing = reidkit("rerank", "--query", str(tmp_path / "nope.safetensors"), "--gallery", str(tmp_path / "x"))
    assert missing.returncode == 2 and "does not exist; write one with `reidkit extract" in missing.stderr
    (tmp_path / "bad.safetensors").write_text("not a tensor file")
    corrupt = reidkit("rerank", "--query", str(tmp_path / "bad.safetensors"), "--gallery", str(tmp_path / "x"))
    assert corrupt.returncode == 2 and "is not a feature file written by `reidkit extract`" in corrupt.stderr
    assert "Traceback" not in missing.stderr + corrupt.stderr


def test_extract_writes_features(tiny_run):
    root, _ = tiny_run
    out = root / "query.safetensors"
    assert main(["--quiet", "extract", "--run", str(root / "run"), "--split", "query", "--out", str(out)]) == 0
    features, pids, camids, paths = load_feature_file(out)
    assert features.shape == (len(paths), 512) and pids.shape == camids.shape == (len(paths),)
    assert torch.isfinite(features).all()


def test_training_is_reproducible_on_cpu(tiny_run, tmp_path):
    root, _ = tiny_run
    assert main(["--quiet", "train", "--config", TINY, "--out", str(tmp_path / "again"),
                 f"data.root={root / 'data'}"]) == 0
    first, _ = load_weights(root / "run" / "model.safetensors")
    second, _ = load_weights(tmp_path / "again" / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.parametrize("args, message", [
    (["train", "--config", TINY, "--out", "x", "train.epoch=3"], "did you mean 'epochs'"),
    (["train", "--config", "missing.yaml", "--out", "x"], "does not exist"),
    (["eval", "--run", "no_such_run"], "not a run folder"),
    (["train", "--config", TINY, "--out", "x", "data.dataset=market1501", "data.root=/nonexistent"], "Market"),
    (["train", "--config", TINY, "--out", "x", "data.dataset=cuhk03", "data.cuhk03_protocol=classic",
      "data.cuhk03_split=20"], "data.cuhk03_split: 20 is not allowed"),
    (["train", "--config", TINY, "--out", "x", "data.synthetic_cameras=1"], "cameras must be in 2..9"),
])
def test_errors_are_one_clear_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = reidkit(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("reidkit: error:") and message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_output_paths_are_refused_before_the_work(tiny_run, tmp_path):
    run = str(tiny_run[0] / "run")
    (tmp_path / "file.txt").write_text("")
    cases = [(["extract", "--run", run, "--out", str(tmp_path)], f"--out {tmp_path} is a folder"),
             (["extract", "--run", run, "--out", str(tmp_path / "file.txt" / "q.safetensors")],
              f"{tmp_path / 'file.txt'} is a file, not a folder"),
             (["index", "--run", run, "--gallery", str(tmp_path), "--out", str(tmp_path)], "is a folder"),
             (["eval", "--run", run, "--out", str(tmp_path / "file.txt")], "is a file; give a folder"),
             (["export", "--run", run, "--out", str(tmp_path)], "is a folder"),
             (["report", "--run", run, "--out", str(tmp_path)], "is a folder")]
    for args, message in cases:
        result = reidkit(*args)
        assert result.returncode == 2 and result.stderr.startswith("reidkit: error:"), (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # nothing half-written


@pytest.mark.parametrize("args, message", [
    (["search", "--index", "i", "q.jpg", "--topk", "0"], "argument --topk: 0 is not in 1.."),
    (["export", "--run", "r", "--out", "m.onnx", "--opset", "5"], "argument --opset: 5 is not in 9..23"),
    (["export", "--run", "r", "--out", "m.onnx", "--height", "0"], "argument --height: 0 is not in 16.."),
    (["serve", "--index", "i", "--port", "70000"], "argument --port: 70000 is not in 1..65535"),
    (["synth", "--out", "x", "--cameras", "10"], "argument --cameras: 10 is not in 2..9"),
    (["search", "--index", "i", "q.jpg", "--topk", "x"], "argument --topk: x is not a whole number in ASCII"),
    # Python's int() and float() read these; a command line takes plain ASCII decimals only (issue #23, item 10)
    (["search", "--index", "i", "q.jpg", "--topk", "1_0"], "argument --topk: 1_0 is not a whole number in ASCII"),
    (["search", "--index", "i", "q.jpg", "--topk", "\u0967"], "is not a whole number in ASCII digits"),
    (["search", "--index", "i", "q.jpg", "--topk", " 7"], "is not a whole number in ASCII digits"),
    (["search", "--index", "i", "q.jpg", "--threshold", "1_0"], "argument --threshold: 1_0 is not a finite decimal"),
    (["search", "--index", "i", "q.jpg", "--threshold", "\u0967"], "is not a finite decimal number"),
    (["search", "--index", "i", "q.jpg", "--threshold", "inf"], "argument --threshold: inf is not a finite decimal"),
    (["search", "--index", "i", "q.jpg", "--threshold", "0x1p-3"], "is not a finite decimal number"),
])
def test_out_of_range_options_are_refused_by_the_parser(args, message):
    result = reidkit(*args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_overrides_may_follow_the_options(tmp_path):
    """`verify A B --run R eval.flip=true` (README order): the override is taken, not "unrecognized"."""
    result = reidkit("verify", "a.jpg", "b.jpg", "--run", str(tmp_path / "none"), "eval.flip=true")
    assert result.returncode == 2 and "not a run folder" in result.stderr
    result = reidkit("verify", "a.jpg", "b.jpg", "--run", str(tmp_path / "none"), "--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr


def test_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "reidkit", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("synth", "train", "eval", "extract", "rerank", "verify", "index", "search", "report", "export",
                    "serve"):
        assert f"\n    {command} " in result.stdout


def test_attribute_and_verification_heads_end_to_end(tiny_run, tmp_path):
    root, _ = tiny_run
    run = tmp_path / "heads"
    assert main(["--quiet", "train", "--config", TINY, "--out", str(run), f"data.root={root / 'data'}",
                 "train.epochs=1", "loss.attribute.weight=1", "loss.verification.weight=1",
                 "eval.verify_topk=5"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["attribute_accuracy"]) >= {"gender", "backpack", "age"}
    assert all(0 <= value <= 1 for value in metrics["attribute_accuracy"].values())
    assert 0 <= metrics["verification_rescored"]["mAP"] <= 1
    queries = sorted((root / "data" / "query").glob("*.jpg"))
    result = reidkit("verify", str(queries[0]), str(queries[1]), "--run", str(run))
    assert result.returncode == 0, result.stderr
    decision, pair_head = result.stdout.splitlines()
    assert decision.startswith(("same person: cosine distance", "no match: cosine distance"))
    probability = float(pair_head.split("=")[1].split()[0])
    assert pair_head.startswith("P(same person)") and 0 <= probability <= 1


def test_verify_decides_by_the_runs_open_set_threshold(tiny_run):
    root, _ = tiny_run
    run, image = root / "run", str(sorted((root / "data" / "query").glob("*.jpg"))[0])
    threshold = json.loads((run / "metrics.json").read_text())["open_set"]["threshold"]
    assert threshold > 0
    same = reidkit("verify", image, image, "--run", str(run))  # distance 0 < the run's threshold
    assert same.returncode == 0 and same.stdout.startswith("same person: cosine distance 0.0000 < "
                                                           f"{threshold:.4f} (the run's threshold for FPR ≤ 0.001")
    strict = reidkit("verify", image, image, "--run", str(run), "--threshold", "0")  # 0 < 0 is false
    assert strict.returncode == 0 and strict.stdout.startswith("no match: cosine distance 0.0000 >= 0.0000")
    other = reidkit("verify", image, image, "--run", str(run), "eval.metric=euclidean")
    assert other.returncode == 2 and "is for cosine distances, not euclidean" in other.stderr


def test_index_and_search_find_the_true_match(tiny_run, tmp_path):
    root, _ = tiny_run
    index_file = tmp_path / "gallery.safetensors"
    result = reidkit("index", "--run", str(root / "run"), "--gallery", str(root / "data" / "bounding_box_test"),
                     "--out", str(index_file))
    assert result.returncode == 0, result.stderr
    gallery = sorted((root / "data" / "bounding_box_test").glob("*.jpg"))
    assert f"indexed {len(gallery)} images" in result.stdout
    assert "recall@10" not in result.stdout  # exact search: nothing to measure
    # A gallery image searched against its own gallery comes back first, at distance ~0.
    result = reidkit("search", "--index", str(index_file), str(gallery[5]), "--topk", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("same person below cosine distance ") and "FPR ≤ 0.001 on test pairs" in lines[0]
    assert lines[1] == f"query {gallery[5]}  → same person as #1"  # distance ~0: below any positive threshold
    first = lines[2].split()
    assert first[0] == "1" and float(first[1]) < 1e-4 and first[-2:] == [str(gallery[5]), "same"]
    assert len(lines) == 5
    strict = reidkit("search", "--index", str(index_file), str(gallery[5]), "--topk", "3", "--threshold", "-1")
    assert strict.stdout.splitlines()[1].endswith("→ no match") and "same" not in strict.stdout.splitlines()[2]
    missing = reidkit("search", "--index", str(index_file), str(tmp_path / "nope.jpg"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    # An index built with a relative --run is searchable from any folder; a changed model is refused.
    shutil.copytree(root / "run", tmp_path / "copy", ignore=shutil.ignore_patterns("checkpoints"))
    built = subprocess.run([sys.executable, "-m", "reidkit", "--quiet", "index", "--run", "copy", "--gallery",
                            str(root / "data" / "bounding_box_test"), "--out", "copy.safetensors"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    elsewhere = subprocess.run([sys.executable, "-m", "reidkit", "--quiet", "search", "--index",
                                str(tmp_path / "copy.safetensors"), str(gallery[5]), "--topk", "3"],
                               capture_output=True, text=True, cwd=root)
    assert elsewhere.returncode == 0 and elsewhere.stdout == result.stdout, elsewhere.stderr
    weights, metadata = load_weights(tmp_path / "copy" / "model.safetensors")
    save_weights_file({name: value + 0.01 if value.is_floating_point() else value for name, value in weights.items()},
                      str(tmp_path / "copy" / "model.safetensors"), metadata=metadata)
    changed = reidkit("search", "--index", str(tmp_path / "copy.safetensors"), str(gallery[5]))
    assert changed.returncode == 2 and "changed after this index was built" in changed.stderr
    pytest.importorskip("faiss")
    result = reidkit("index", "--run", str(root / "run"), "--gallery", str(root / "data" / "bounding_box_test"),
                     "--out", str(tmp_path / "flat.safetensors"), "--backend", "faiss-flat")
    assert result.returncode == 0, result.stderr
    queries = min(len(gallery), 256)
    assert f"recall@10 against exact search, {queries} gallery images as queries: 1.000" in result.stdout


@pytest.fixture(scope="module")
def cuhk03_root(tmp_path_factory):
    """The tiny CUHK03 release of test_cuhk03 (12 identities, 5x3-pixel images) plus a new-protocol file."""
    pytest.importorskip("h5py")
    from test_cuhk03 import IDENTITIES, write_new_protocol_config, write_release_mat

    root = tmp_path_factory.mktemp("cuhk03")
    write_release_mat(root / "cuhk-03.mat")
    write_new_protocol_config(root / "cuhk03_new_protocol_config_labeled.mat", "labeled", IDENTITIES[:7],
                              IDENTITIES[7:])
    return root


def test_cuhk03_classic_split_trains_and_evaluates_single_gallery_shot(cuhk03_root, tmp_path):
    from test_cuhk03 import EMPTY, split_identities

    run = tmp_path / "classic"
    assert main(["--quiet", "train", "--config", TINY, "--out", str(run), "data.dataset=cuhk03",
                 f"data.root={cuhk03_root}", "data.cuhk03_protocol=classic", "data.cuhk03_split=2", "train.epochs=1",
                 "eval.baselines=true", "loss.verification.weight=1", "eval.verify_topk=5"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["protocol"], metrics["repeats"]) == ("single_gallery_shot", 10)
    # Every first-camera image of the 3 test identities is a query with a match in the second camera.
    queries = sum((pair, person, slot) not in EMPTY["labeled"] for pair, person in split_identities(2)
                  for slot in range(1, 6))
    assert metrics["num_valid_queries"] == queries == 15
    assert metrics["cmc"][2] == 1.0  # one drawn image for each of the 3 gallery identities
    assert metrics["verification_rescored"]["protocol"] == "single_gallery_shot"
    baselines = json.loads((run / "baselines.json").read_text())
    assert {values["protocol"] for values in baselines.values()} == {"single_gallery_shot"}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["protocol"] for r in records if r["kind"] == "eval"] == ["single_gallery_shot"] * 2  # epochs 0, 1
    assert main(["--quiet", "eval", "--run", str(run), "eval.protocol=all_gallery"]) == 0
    evaluated = json.loads((run / "eval" / "cuhk03" / "metrics.json").read_text())
    assert evaluated["protocol"] == "all_gallery" and "repeats" not in evaluated
    assert evaluated["num_valid_queries"] == 15


def test_cuhk03_new_protocol_evaluates_all_gallery_and_eval_overrides_it(cuhk03_root, tmp_path, capsys):
    run = tmp_path / "new"
    assert main(["--quiet", "train", "--config", TINY, "--out", str(run), "data.dataset=cuhk03",
                 f"data.root={cuhk03_root}", "train.epochs=1"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["protocol"] == "all_gallery" and "repeats" not in metrics
    assert metrics["num_valid_queries"] == 10  # one query per camera of each of the 5 test identities
    capsys.readouterr()
    assert main(["--quiet", "eval", "--run", str(run), "eval.protocol=single_gallery_shot",
                 "eval.single_shot_repeats=3"]) == 0
    evaluated = json.loads((run / "eval" / "cuhk03" / "metrics.json").read_text())
    assert (evaluated["protocol"], evaluated["repeats"], evaluated["num_valid_queries"]) == \
        ("single_gallery_shot", 3, 10)
    assert evaluated["cmc"][4] == 1.0  # 5 gallery identities, one drawn image each
    assert "single-gallery-shot, mean of 3 draws" in capsys.readouterr().out


def test_index_takes_the_faiss_settings(tiny_run, tmp_path):
    """`reidkit index --nlist/--nprobe` reach the saved index; a setting of another backend or out of range for
    the gallery is one error line."""
    from reidkit.retrieval import GalleryIndex

    root, _ = tiny_run
    gallery = str(root / "data" / "bounding_box_test")
    out = tmp_path / "ivf.safetensors"
    result = reidkit("index", "--run", str(root / "run"), "--gallery", gallery, "--out", str(out),
                     "--backend", "faiss-ivf", "--nlist", "4", "--nprobe", "3")
    assert result.returncode == 0, result.stderr
    assert GalleryIndex.load(out).params == {"nlist": 4, "nprobe": 3}
    other = reidkit("index", "--run", str(root / "run"), "--gallery", gallery, "--out", str(tmp_path / "x.safetensors"),
                    "--nprobe", "3")
    assert other.returncode == 2 and "--nprobe: not a setting of the exact backend" in other.stderr
    too_many = reidkit("index", "--run", str(root / "run"), "--gallery", gallery, "--out", str(tmp_path / "y.safetensors"),
                       "--backend", "faiss-ivf", "--nlist", "100000")
    assert too_many.returncode == 2 and "nlist must be an int in" in too_many.stderr and "gallery images" in too_many.stderr
