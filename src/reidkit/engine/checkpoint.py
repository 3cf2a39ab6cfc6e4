"""Checkpoints on disk: model weights in `*.safetensors` (no pickled code) with a small string header,
training state (optimiser, RNG, position) in a side file read with `weights_only=True`.

Files go through `reidkit.outputs.write_file` (temporary name, fsync, rename), so a crash or a full disk never
leaves a half-written checkpoint under the final name, and the earlier checkpoints stay intact.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np

import torch
from torch import nn

from reidkit.errors import ReidkitError
from reidkit.models.weights import state_mismatch
from reidkit.outputs import input_problem, write_file, write_text

CHECKPOINT_NAME = re.compile(r"(epoch|step)_(\d+)")  # epoch_003, step_00000120


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write the state dict of `model` to `path` atomically (temporary file, fsync, rename)."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    return write_file(path, lambda temporary: save_file(state, str(temporary), metadata=metadata or {}))


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read `(state_dict, metadata)` from a `.safetensors` file.

    Raises:
        ReidkitError: the file is missing or is not a safetensors file (e.g. truncated).
    """
    from safetensors import safe_open

    path = Path(path)
    problem = input_problem(path)
    if problem:
        raise ReidkitError(f"weights file {path} {problem}; give a .safetensors file written by reidkit (train "
                           "first or give the right run folder)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises several error types for a damaged header or body
        raise ReidkitError(f"{path} is not a readable .safetensors file ({error}); "
                           "it may be truncated: use an earlier checkpoint") from error


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load `state` into `model` strictly, naming mismatched keys and shapes in one error."""
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise ReidkitError(f"{source} does not fit this model: {mismatch}; check model.backbone and the data set "
                           "the run was trained on")
    model.load_state_dict(state)


def capture_rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) random states, as tensors and plain values only."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {"python": [version, list(python_state), gauss],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng_state(state: dict) -> None:
    """Undo `capture_rng_state`: every generator continues exactly where it was captured."""
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """Checkpoints of a run in `directory`: NAME.safetensors (model weights) + NAME.state.pt (everything
    else, loaded with `weights_only=True`), and `last.json` naming the newest complete pair.

    `last.json` is replaced only after both files of a checkpoint are on disk, so a crash at any moment
    leaves a consistent last checkpoint. The newest `keep` epoch checkpoints are kept; mid-epoch ones
    are removed once a newer checkpoint exists. `best.safetensors` holds the weights of the best mAP.
    """

    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep

    def save(self, name: str, model: nn.Module, metadata: dict[str, str], state: dict) -> None:
        """Write checkpoint `name` (e.g. "epoch_003" or "step_00000120") and make it the last one.

        Raises:
            ReidkitError: a file could not be written (e.g. a full disk); the files of `name` are removed,
                and `last.json` still names the earlier checkpoint.
        """
        files = [self.directory / f"{name}{suffix}" for suffix in (".safetensors", ".state.pt")]
        new = [path for path in files if not path.exists()]
        try:
            save_weights(model, files[0], metadata)
            write_file(files[1], lambda path: torch.save(state, path))
            write_text(self.directory / "last.json", json.dumps({"name": name}))
        except ReidkitError as error:
            for path in new:  # half a checkpoint, which last.json does not name
                path.unlink(missing_ok=True)
            raise ReidkitError(f"{error}; the earlier checkpoints in {self.directory} are intact "
                               "(`reidkit train --resume RUN` continues from the last one)") from error
        self._prune(name)

    def save_best(self, model: nn.Module, metadata: dict[str, str], summary: dict) -> None:
        """Write `best.safetensors` and `best.json` (the epoch and metrics that made it best)."""
        save_weights(model, self.directory / "best.safetensors", metadata)
        write_text(self.directory / "best.json", json.dumps(summary))

    def load_last(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(model state dict, training state) of the last checkpoint, or None when there is none.

        Raises:
            ReidkitError: `last.json` is damaged, names files that are missing or damaged, or is missing
                while complete checkpoints are present.
        """
        pointer = self.directory / "last.json"
        if not pointer.is_file():
            if self.complete_checkpoints():  # resuming without it would start over and lose the work
                raise ReidkitError(f"{pointer} (the name of the checkpoint to resume from) is missing; "
                                   + self._repair(pointer))
            return None
        name = self._pointed_name(pointer)
        missing = [f"{name}{suffix}" for suffix in (".safetensors", ".state.pt")
                   if not (self.directory / f"{name}{suffix}").is_file()]
        if missing:
            raise ReidkitError(f"{pointer} names checkpoint {name!r}, but {' and '.join(missing)} "
                               f"{'is' if len(missing) == 1 else 'are'} missing; {self._repair(pointer)}")
        weights, _ = load_weights(self.directory / f"{name}.safetensors")
        state_path = self.directory / f"{name}.state.pt"
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling refusals and truncation both mean "not a state file"
            raise ReidkitError(f"{state_path} is not a readable training state ({error})") from error
        return weights, state

    def complete_checkpoints(self) -> list[str]:
        """Names of the checkpoints with both files on disk, oldest first (by the time they were written)."""
        names = [path.name.removesuffix(".state.pt") for path in self.directory.glob("*.state.pt")]
        names = [name for name in names
                 if CHECKPOINT_NAME.fullmatch(name) and (self.directory / f"{name}.safetensors").is_file()]
        return sorted(names, key=lambda name: ((self.directory / f"{name}.state.pt").stat().st_mtime_ns, name))

    def _pointed_name(self, pointer: Path) -> str:
        """The checkpoint name in `last.json`; a ReidkitError naming the file when it is damaged."""
        try:
            values = json.loads(pointer.read_text(encoding="utf-8"))
        except ValueError as error:  # not JSON, or not UTF-8
            raise ReidkitError(f"{pointer} is damaged (not JSON: {error}); {self._repair(pointer)}") from error
        if not isinstance(values, dict):
            raise ReidkitError(f"{pointer} is damaged (a JSON {type(values).__name__}, not an object like "
                               f"{{\"name\": \"epoch_002\"}}); {self._repair(pointer)}")
        name = values.get("name")
        if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):
            found = f"its \"name\" is {name!r}" if "name" in values else "it has no \"name\""
            raise ReidkitError(f"{pointer} is damaged ({found}, not a checkpoint name such as epoch_002); "
                               + self._repair(pointer))
        return name

    def _repair(self, pointer: Path) -> str:
        """How to fix a damaged or missing `last.json`: the checkpoints present and the newest one."""
        names = self.complete_checkpoints()
        if not names:
            return (f"no complete checkpoint (NAME.safetensors + NAME.state.pt) is left in {self.directory}; "
                    "train again without --resume into a new --out")
        return (f"checkpoints present: {', '.join(names)}; to resume from the newest, write "
                f"{{\"name\": \"{names[-1]}\"}} into {pointer} and run `reidkit train --resume` again")

    def _prune(self, newest: str) -> None:
        # oldest first by number: "epoch_1000" is newer than "epoch_999" although it sorts before it as text
        found = (CHECKPOINT_NAME.fullmatch(path.name.removesuffix(".state.pt"))
                 for path in self.directory.glob("*.state.pt"))
        names = [match.group(0) for match in sorted(filter(None, found), key=lambda m: (m[1], int(m[2])))]
        epochs = [n for n in names if n.startswith("epoch_")]
        stale = [n for n in names if n.startswith("step_") and n != newest] + epochs[:-self.keep]
        for name in stale:
            for suffix in (".safetensors", ".state.pt"):
                (self.directory / f"{name}{suffix}").unlink(missing_ok=True)
