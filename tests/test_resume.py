"""Reliability with real fault injection: SIGKILL and exact resume, damaged checkpoints, malicious pickles,
unwritable folders, corrupt images, diverging losses."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _cli import reidkit

from reidkit.cli import main
from reidkit.engine.checkpoint import CheckpointManager, load_weights
from reidkit.errors import ReidkitError

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "tiny"
    assert main(["--quiet", "synth", "--out", str(root), "--identities", "16", "--cameras", "3"]) == 0
    return root


def assert_same_weights(a: Path, b: Path) -> None:
    first, _ = load_weights(a)
    second, _ = load_weights(b)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(data_root, tmp_path):
    # a per-step warm-up and a backbone freeze still running where the run is killed (about step 8): the resumed
    # run recomputes the rate and the freeze from the step number; fast-reid's epoch length (6 batches of 16 from
    # 100 images: the identities' first pass gives 4, a second pass the rest) is rebuilt from (seed, epoch, pass)
    args = ["--config", TINY, f"data.root={data_root}", "train.checkpoint_every_steps=1", "train.epochs=3",
            "train.warmup_epochs=0", "train.warmup_iters=10", "train.freeze_iters=8", "train.bias_lr_factor=2",
            "data.epoch_length=images"]
    assert main(["--quiet", "train", "--out", str(tmp_path / "reference"), *args]) == 0

    run = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "reidkit", "--quiet", "train", "--out", str(run), *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = run / "checkpoints" / "last.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill once a mid-epoch checkpoint of epoch 2 exists
        if pointer.is_file() and json.loads(pointer.read_text())["name"] >= "step_00000007":
            break
        time.sleep(0.05)
    time.sleep(0.3)  # land somewhere inside the next step or checkpoint write
    assert process.poll() is None, "training finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "model.safetensors").exists()

    result = reidkit("train", "--resume", str(run))
    assert result.returncode == 0, result.stderr
    assert_same_weights(tmp_path / "reference" / "model.safetensors", run / "model.safetensors")
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "train"]
    assert steps == sorted(set(steps))  # work redone after the resume is not logged twice
    assert steps[-1] == 3 * (100 // 16)  # 3 epochs of ⌊100 images / P·K⌋ steps


def test_changed_config_is_refused_unless_forced(data_root, tmp_path):
    run = tmp_path / "run"
    assert main(["--quiet", "train", "--config", TINY, "--out", str(run), f"data.root={data_root}",
                 "train.epochs=1"]) == 0
    refused = reidkit("train", "--resume", str(run), "train.epochs=2", "train.lr=0.01")
    assert refused.returncode == 2
    assert "train.epochs: 1 -> 2" in refused.stderr and "train.lr" in refused.stderr
    assert "--force" in refused.stderr
    accepted = reidkit("train", "--resume", str(run), "train.epochs=2", "--force")
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads((run / "checkpoints" / "last.json").read_text())["name"] == "epoch_002"
    again = reidkit("train", "--config", TINY, "--out", str(run), f"data.root={data_root}")
    assert again.returncode == 2 and "already holds a run" in again.stderr
    nothing = reidkit("train", "--resume", str(tmp_path))
    assert nothing.returncode == 2 and "no config.yaml" in nothing.stderr


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_truncated_and_malicious_checkpoints_are_refused(data_root, tmp_path):
    run = tmp_path / "run"
    assert main(["--quiet", "train", "--config", TINY, "--out", str(run), f"data.root={data_root}",
                 "train.epochs=1"]) == 0
    checkpoints = run / "checkpoints"
    weights = checkpoints / "epoch_001.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = reidkit("train", "--resume", str(run), "train.epochs=2", "--force")
    assert result.returncode == 2 and "truncated" in result.stderr and "Traceback" not in result.stderr

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    shutil.copy(run / "model.safetensors", weights)
    (checkpoints / "epoch_001.state.pt").write_bytes(pickle.dumps({"position": Exploit()}))
    with pytest.raises(Exception, match="not a readable training state"):
        CheckpointManager(checkpoints).load_last()
    assert not marker.exists()

    (run / "model.safetensors").write_bytes(b"this is not a checkpoint")
    result = reidkit("eval", "--run", str(run))
    assert result.returncode == 2 and "not a readable .safetensors" in result.stderr


def test_weights_of_another_architecture_name_the_keys(data_root, tmp_path):
    run = tmp_path / "run"
    assert main(["--quiet", "train", "--config", TINY, "--out", str(run), f"data.root={data_root}",
                 "train.epochs=1"]) == 0
    result = reidkit("eval", "--run", str(run), "model.backbone=resnet34")
    assert result.returncode == 2 and "does not fit this model" in result.stderr
    assert "missing ['backbone.layer1.2" in result.stderr


@pytest.mark.parametrize("out", ["/sys/reidkit_run", "file_not_folder/run"])
def test_unwritable_output_fails_before_any_work(data_root, tmp_path, out):
    (tmp_path / "file_not_folder").write_text("a file, not a folder")
    result = reidkit("train", "--config", TINY, "--out", out, f"data.root={data_root}", cwd=tmp_path)
    assert result.returncode == 2 and "cannot write to the run folder" in result.stderr


def test_checkpoint_write_failure_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path)
    model = torch.nn.Linear(2, 2)
    manager.save("epoch_001", model, {}, {"position": {"epoch": 2}})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(ReidkitError, match=r"no space left on device writing .*epoch_002\.state\.pt: .*the earlier "
                                           r"checkpoints in .* are intact"):
        manager.save("epoch_002", model, {}, {"position": {"epoch": 3}})
    monkeypatch.undo()
    assert not (tmp_path / "epoch_002.safetensors").exists()  # no half checkpoint left beside the earlier one
    _, state = manager.load_last()
    assert state["position"]["epoch"] == 2
    assert not list(tmp_path.glob("*.tmp"))


@pytest.fixture
def corrupt_copy(data_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    train = sorted((root / "bounding_box_train").glob("*.jpg"))
    train[0].write_bytes(train[0].read_bytes()[:200])  # truncated JPEG
    train[1].write_bytes(b"")  # zero-byte file
    return root, train[0]


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_images_stop_with_the_file_named(corrupt_copy, tmp_path, workers):
    root, bad = corrupt_copy
    result = reidkit("train", "--config", TINY, "--out", str(tmp_path / "run"), f"data.root={root}",
                     f"data.workers={workers}", "train.epochs=1")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot read image" in result.stderr
    assert "skip_bad_images" in result.stderr and "Traceback" not in result.stderr


def test_corrupt_images_skipped_and_counted(corrupt_copy, tmp_path):
    root, _ = corrupt_copy
    run = tmp_path / "run"
    assert main(["--quiet", "train", "--config", TINY, "--out", str(run), f"data.root={root}",
                 "data.skip_bad_images=true", "train.epochs=1"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    # Each bad image is skipped every time it is drawn: count its draws in epoch 1's P×K batches, which
    # depend only on (train.seed, epoch) (a small identity repeats an image to fill K, so a count can exceed 1).
    from reidkit.config import load_config
    from reidkit.data.build import build_dataset
    from reidkit.data.samplers import PKSampler

    config = load_config(TINY, [f"data.root={root}"])
    dataset = build_dataset(config.data, progress=False)
    bad_names = {path.name for path in sorted((root / "bounding_box_train").glob("*.jpg"))[:2]}
    bad = {index for index, (path, _, _) in enumerate(dataset.train) if Path(path).name in bad_names}
    assert len(bad) == 2
    sampler = PKSampler([pid for _, pid, _ in dataset.train], config.data.p, config.data.k, config.train.seed)
    sampler.set_epoch(1)
    draws = sum(index in bad for batch in sampler for index in batch)
    assert draws >= 1 and metrics["skipped_images"] == draws


def test_diverging_loss_stops_naming_the_step_or_is_skipped(data_root, tmp_path):
    args = ["--config", TINY, f"data.root={data_root}", "train.optimizer=sgd", "train.lr=1", "loss.id.weight=1e30",
            "train.warmup_epochs=0", "train.checkpoint_every_steps=1"]
    result = reidkit("train", "--out", str(tmp_path / "stop"), *args)
    assert result.returncode == 2
    assert "non-finite loss at epoch 1, step" in result.stderr and "loss/" in result.stderr
    assert CheckpointManager(tmp_path / "stop" / "checkpoints").load_last() is not None


def test_transient_nonfinite_batches_are_skipped_and_counted(data_root, tmp_path, monkeypatch):
    from reidkit.losses.objective import Objective

    calls = []
    original = Objective.forward

    def nan_on_second_step(self, outputs, labels):
        calls.append(1)
        total, terms = original(self, outputs, labels)
        return (total * float("nan"), terms) if len(calls) == 2 else (total, terms)

    monkeypatch.setattr(Objective, "forward", nan_on_second_step)
    run = tmp_path / "skip"
    assert main(["--quiet", "train", "--config", TINY, "--out", str(run), f"data.root={data_root}",
                 "train.epochs=1", "train.nonfinite=skip", "train.log_every=3"]) == 0
    assert json.loads((run / "metrics.json").read_text())["skipped_batches"] == 1


@pytest.mark.parametrize("override, message", [
    ("data.p=100", "only 8"),
    ("data.k=1", "data.k=1"),
])
def test_impossible_batches_are_refused_before_training(data_root, tmp_path, override, message):
    result = reidkit("train", "--config", TINY, "--out", str(tmp_path / "run"), f"data.root={data_root}", override)
    assert result.returncode == 2 and message in result.stderr
