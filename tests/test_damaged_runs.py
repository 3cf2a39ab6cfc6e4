"""Damaged files inside a run folder: one clear `reidkit: error:` line naming the file and the fix (exit 2),
or, for the partial last line a killed run leaves in metrics.jsonl, a report that skips it and says so."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _cli import reidkit

from reidkit.cli import main
from reidkit.engine.checkpoint import CheckpointManager
from reidkit.errors import ReidkitError

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One finished tiny run (2 epochs: checkpoints epoch_001 and epoch_002), copied per damage."""
    root = tmp_path_factory.mktemp("damaged")
    result = reidkit("train", "--config", TINY, "--out", str(root / "run"), f"data.root={root / 'data'}",
                     "data.height=32", "data.width=16")
    assert result.returncode == 0, result.stderr
    return root / "run"


def copy_run(run: Path, dest: Path, checkpoints: bool = False) -> Path:
    """A copy of `run` to damage; checkpoints (most of the size) only when the case needs them."""
    skip = {"ranked", "plots", "report.html"} | (set() if checkpoints else {"checkpoints"})
    shutil.copytree(run, dest, ignore=lambda folder, names: [n for n in names if folder == str(run) and n in skip])
    return dest


def fails(capsys, *args: str) -> str:
    """Run the CLI in process; it must return 2 with one `reidkit: error:` line; returns that line."""
    assert main(["--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reidkit: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


BAD_YAML = "data:\n  dataset: [synthetic\nmodel: {\n"


@pytest.mark.parametrize("text, message", [
    (BAD_YAML, r"config\.yaml is not valid YAML \(line 3: .*\); restore it"),
    ("", r"config\.yaml is empty; a run folder's config\.yaml is written by `reidkit train`"),
    ("\n# nothing but a comment\n", r"config\.yaml is empty"),
    ("- train\n- eval\n", r"config\.yaml holds a list, not a mapping"),
])
@pytest.mark.parametrize("command", ["eval", "report", "extract", "export"])
def test_damaged_config_yaml_is_one_error_in_every_command(tiny_run, tmp_path, capsys, text, message, command):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "config.yaml").write_text(text)
    extra = {"extract": ["--out", str(tmp_path / "f.safetensors")], "export": ["--out", str(tmp_path / "m.onnx")]}
    err = fails(capsys, command, "--run", str(run), *extra.get(command, []))
    assert str(run / "config.yaml") in err and re.search(message, err), err


def test_damaged_config_yaml_in_a_compared_run(tiny_run, tmp_path, capsys):
    other = copy_run(tiny_run, tmp_path / "other")
    (other / "config.yaml").write_text(BAD_YAML)
    err = fails(capsys, "report", "--run", str(tiny_run), "--compare", str(other), "--out", str(tmp_path / "c.html"))
    assert f"{other / 'config.yaml'} is not valid YAML (line 3" in err


def test_the_command_line_prints_no_traceback(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "config.yaml").write_text(BAD_YAML)
    result = subprocess.run([sys.executable, "-m", "reidkit", "--quiet", "eval", "--run", str(run)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("reidkit: error:"), result.stderr
    assert "Traceback" not in result.stderr and "config.yaml is not valid YAML" in result.stderr


@pytest.mark.parametrize("pointer, message", [
    ('{"name": "epo', r"last\.json is damaged \(not JSON: "),
    ('{"nom": "epoch_002"}', r'last\.json is damaged \(it has no "name"'),
    ('{"name": 2}', r'last\.json is damaged \(its "name" is 2, not a checkpoint name'),
    ('{"name": "../../model"}', r"last\.json is damaged \(its \"name\" is '\.\./\.\./model'"),
    ('["epoch_002"]', r"last\.json is damaged \(a JSON list, not an object"),
    ('{"name": "epoch_009"}', r"names checkpoint 'epoch_009', but epoch_009\.safetensors and epoch_009\.state\.pt "
                              r"are missing"),
    (None, r"last\.json \(the name of the checkpoint to resume from\) is missing"),
])
def test_damaged_last_json_names_the_file_and_the_checkpoints_present(tiny_run, tmp_path, capsys, pointer, message):
    run = copy_run(tiny_run, tmp_path / "run", checkpoints=True)
    last = run / "checkpoints" / "last.json"
    if pointer is None:
        last.unlink()
    else:
        last.write_text(pointer)
    err = fails(capsys, "train", "--resume", str(run))
    assert str(last) in err and re.search(message, err), err
    assert 'checkpoints present: epoch_001, epoch_002; to resume from the newest, write {"name": "epoch_002"}' in err


def test_following_the_last_json_advice_resumes(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run", checkpoints=True)
    last = run / "checkpoints" / "last.json"
    (run / "checkpoints" / "epoch_002.state.pt").unlink()
    err = fails(capsys, "train", "--resume", str(run))
    assert "epoch_002.state.pt is missing; checkpoints present: epoch_001;" in err
    advice = re.search(r"write (\{.*?\}) into", err).group(1)
    last.write_text(advice)
    assert main(["--quiet", "train", "--resume", str(run)]) == 0
    assert json.loads(last.read_text()) == {"name": "epoch_002"}


def test_no_checkpoint_left_says_so(tmp_path):
    (tmp_path / "last.json").write_text("{")
    with pytest.raises(ReidkitError, match="no complete checkpoint .* is left"):
        CheckpointManager(tmp_path).load_last()
    assert CheckpointManager(tmp_path / "none").load_last() is None  # nothing there: nothing to resume


def _set(key, value):
    def damage(metrics: dict) -> dict:
        return {**metrics, key: value}
    return damage


@pytest.mark.parametrize("text, damage, message", [
    ('{"rank1": 0.3, "mAP": ', None, r"metrics\.json is not valid JSON \(line 1 column \d+: Expecting value\)"),
    (None, _set("mAP", "x"), r"""metrics\.json is damaged: "mAP" is 'x', not a number"""),
    (None, _set("rank5", None), r"""metrics\.json is damaged: "rank5" is None, not a number"""),
    (None, _set("cmc", [1, "a"]), r'metrics\.json is damaged: "cmc" is not a list of numbers'),
    (None, _set("reranked", 3), r'metrics\.json is damaged: "reranked" is not an object'),
    (None, lambda m: {k: v for k, v in m.items() if k != "rank1"}, r'metrics\.json is damaged: "rank1" is missing'),
    ("[0.5]", None, r"metrics\.json holds a JSON list, not an object"),
])
def test_damaged_metrics_json_fails_the_report_with_the_file_and_the_fix(tiny_run, tmp_path, capsys, text, damage,
                                                                        message):
    run = copy_run(tiny_run, tmp_path / "run")
    path = run / "metrics.json"
    path.write_text(text if damage is None else json.dumps(damage(json.loads(path.read_text()))))
    err = fails(capsys, "report", "--run", str(run))
    assert str(path) in err and re.search(message, err), err
    assert f"rewrite it with `reidkit eval --run {run} --out {run}`" in err
    err = fails(capsys, "report", "--run", str(tiny_run), "--compare", str(run), "--out", str(tmp_path / "c.html"))
    assert str(path) in err and re.search(message, err), err


def test_damaged_baselines_json_names_the_file(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "baselines.json").write_text('{"colour_histogram": 0.1}')
    err = fails(capsys, "report", "--run", str(run))
    assert f"{run / 'baselines.json'} is damaged" in err and "delete it" in err


def test_partial_last_line_of_metrics_jsonl_is_skipped_with_a_note(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    with open(run / "metrics.jsonl", "a") as handle:  # what a run killed while writing a record leaves
        handle.write('{"kind": "train", "epoch": 3, "step": 11, "lo')
    assert main(["--quiet", "report", "--run", str(run)]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    assert f"metrics.jsonl: skipped unreadable line {len(lines) + 1} (a run killed while writing" in page
    assert "<section id='training'><h2>Training curves</h2><figure><img" in page  # the other records are drawn


@pytest.mark.parametrize("missing, message", [
    ("NOPE", "NOPE does not exist or is not a folder; pass a run folder written by `reidkit train`"),
    ("empty", "empty is not a run folder (no config.yaml or metrics.json)"),
])
def test_compare_with_a_folder_that_is_not_a_run(tiny_run, tmp_path, capsys, missing, message):
    (tmp_path / "empty").mkdir()
    err = fails(capsys, "report", "--run", str(tiny_run), "--compare", str(tmp_path / missing),
                "--out", str(tmp_path / "c.html"))
    assert message in err and "has not finished" not in err


def test_compare_with_an_unfinished_run_says_how_to_finish_it(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "metrics.json").unlink()
    err = fails(capsys, "report", "--run", str(tiny_run), "--compare", str(run), "--out", str(tmp_path / "c.html"))
    assert f"{run} has not finished (no metrics.json); finish it with `reidkit train --resume {run}`" in err


def test_resume_drops_the_partial_last_line_of_a_killed_run(tmp_path):
    """`truncate_after` (run on resume) keeps the records up to the step and drops an unreadable last line, so
    the next record starts on a line of its own."""
    from reidkit.engine.run_writer import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        log.write({"kind": "train", "step": step, "loss": 1.0 / step})
    with open(log.path, "a") as handle:
        handle.write('{"kind": "train", "step": 4, "lo')  # killed mid-write
    assert [r["step"] for r in log.records()] == [1, 2, 3]
    log.truncate_after(2)
    log.write({"kind": "train", "step": 3, "loss": 0.3})
    assert [(r["step"], r["loss"]) for r in log.records()] == [(1, 1.0), (2, 0.5), (3, 0.3)]
    assert len(log.path.read_text().splitlines()) == 3
