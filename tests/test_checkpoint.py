"""CheckpointManager: which files survive pruning, what `load_last` returns, what `save_best` writes."""

import json

import pytest
import torch

from reidkit.engine.checkpoint import CheckpointManager, load_weights
from reidkit.errors import ReidkitError


def _linear(value: float) -> torch.nn.Linear:
    """A 2→1 linear layer whose weight and bias all equal `value`, so each checkpoint is recognisable."""
    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.fill_(value)
        layer.bias.fill_(value)
    return layer


def _files(directory) -> set[str]:
    return {path.name for path in directory.iterdir()}


def test_keep_two_epochs_drops_older_epochs_and_superseded_step_checkpoints(tmp_path):
    """keep=2: the two newest epoch_* pairs survive; a step_* pair survives only while it is the newest."""
    manager = CheckpointManager(tmp_path, keep=2)
    for epoch in (1, 2, 3):
        manager.save(f"epoch_{epoch:03d}", _linear(epoch), {"epoch": str(epoch)}, {"position": {"epoch": epoch}})
    assert _files(tmp_path) == {"epoch_002.safetensors", "epoch_002.state.pt", "epoch_003.safetensors",
                                "epoch_003.state.pt", "last.json"}
    manager.save("step_00000120", _linear(3.5), {}, {"position": {"epoch": 4, "step_in_epoch": 2}})
    assert _files(tmp_path) == {"epoch_002.safetensors", "epoch_002.state.pt", "epoch_003.safetensors",
                                "epoch_003.state.pt", "step_00000120.safetensors", "step_00000120.state.pt",
                                "last.json"}  # the newest checkpoint is mid-epoch: it stays
    assert manager.load_last()[1]["position"] == {"epoch": 4, "step_in_epoch": 2}
    manager.save("epoch_004", _linear(4), {"epoch": "4"}, {"position": {"epoch": 5}})
    assert _files(tmp_path) == {"epoch_003.safetensors", "epoch_003.state.pt", "epoch_004.safetensors",
                                "epoch_004.state.pt", "last.json"}
    assert json.loads((tmp_path / "last.json").read_text()) == {"name": "epoch_004"}
    weights, state = manager.load_last()
    assert state == {"position": {"epoch": 5}}
    assert weights.keys() == {"weight", "bias"}
    assert torch.equal(weights["weight"], torch.full((1, 2), 4.0))
    assert torch.equal(weights["bias"], torch.full((1,), 4.0))
    kept, metadata = load_weights(tmp_path / "epoch_003.safetensors")
    assert torch.equal(kept["bias"], torch.full((1,), 3.0)) and metadata == {"epoch": "3"}


def test_save_best_writes_weights_and_summary_beside_the_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path, keep=1)
    manager.save("epoch_001", _linear(1), {}, {"position": {"epoch": 2}})
    summary = {"epoch": 1, "rank1": 0.5, "mAP": 0.25}
    manager.save_best(_linear(7), {"backbone": "tiny"}, summary)
    manager.save("epoch_002", _linear(2), {}, {"position": {"epoch": 3}})  # pruning leaves best.* alone
    assert _files(tmp_path) == {"epoch_002.safetensors", "epoch_002.state.pt", "last.json", "best.safetensors",
                                "best.json"}
    assert json.loads((tmp_path / "best.json").read_text()) == summary
    best, metadata = load_weights(tmp_path / "best.safetensors")
    assert torch.equal(best["weight"], torch.full((1, 2), 7.0)) and metadata == {"backbone": "tiny"}
    assert manager.load_last()[1] == {"position": {"epoch": 3}}  # best is not the last checkpoint


def test_no_checkpoint_and_bad_keep(tmp_path):
    assert CheckpointManager(tmp_path / "none").load_last() is None
    with pytest.raises(ValueError, match="keep must be >= 1"):
        CheckpointManager(tmp_path, keep=0)


def test_pruning_orders_checkpoints_by_number_past_epoch_999(tmp_path):
    """"epoch_1000" sorts before "epoch_999" as text; pruning must keep the numerically newest."""
    manager = CheckpointManager(tmp_path, keep=1)
    for epoch in (999, 1000):
        manager.save(f"epoch_{epoch:03d}", _linear(epoch), {}, {"position": {"epoch": epoch + 1}})
    manager.save("step_100000000", _linear(1.5), {}, {"position": {"epoch": 1001, "step_in_epoch": 1}})
    manager.save("step_99999999", _linear(0.5), {}, {"position": {"epoch": 1001, "step_in_epoch": 2}})
    assert _files(tmp_path) == {"epoch_1000.safetensors", "epoch_1000.state.pt", "step_99999999.safetensors",
                                "step_99999999.state.pt", "last.json"}
    assert manager.load_last()[1]["position"]["step_in_epoch"] == 2


class TrainerInfo:
    """Stands in for the custom objects Torchreid and fast-reid pickle beside the state dict."""

    def __init__(self) -> None:
        self.epoch = 3


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy format"])
def test_a_pickled_peer_checkpoint_is_one_line_with_the_safe_way(tmp_path, capsys, legacy):
    """Issue 23, item 4: refused without unpickling, in one line that names the file and says how to re-save its
    state dict, never torch's advice to load it with weights_only=False; torch's warnings silenced."""
    import warnings

    from reidkit.cli import main

    path = tmp_path / "model.pth.tar"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(2)}, "info": TrainerInfo()}, path,
               _use_new_zipfile_serialization=not legacy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be more lines on the terminal
        assert main(["--quiet", "import", "--weights", f"torchreid:{path}", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"reidkit: error: {path} ")
    assert "TrainerInfo" in err and "torch.load(" in err and "weights_only=False)['state_dict']" in err
    assert "only if you trust" in err and "Re-running" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, problem", [
    (None, "is not a readable training state: it holds pickled Python objects (test_checkpoint.TrainerInfo)"),
    (b"garbage\n", "is not a readable training state (Unsupported operand"),
    (b"", "is not a readable training state (cut short or empty)"),
])
def test_a_training_state_holding_pickled_objects_or_garbage_is_one_line(tmp_path, content, problem):
    manager = CheckpointManager(tmp_path)
    manager.save("epoch_001", _linear(1.0), {}, {"position": {"epoch": 1}})
    path = tmp_path / "epoch_001.state.pt"
    if content is None:
        torch.save({"position": TrainerInfo()}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ReidkitError) as info:
        manager.load_last()
    assert f"{path} {problem}" in str(info.value) and "\n" not in str(info.value)
    assert "weights_only" not in str(info.value)
