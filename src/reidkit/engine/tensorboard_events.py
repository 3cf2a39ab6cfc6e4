"""TensorBoard event files mirroring `metrics.jsonl` (train.tensorboard): every number of every record becomes a
scalar at the record's optimiser step, so TensorBoard shows exactly what the metrics log holds, which stays the
source of truth.

Tags: a train record's keys as they are (`loss`, `loss/id`, ..., `lr`); an eval record's under `eval/` (`eval/mAP`,
or `eval/<test set>/mAP` in a run with several test sets); nested numbers joined by `/`
(`eval/attribute_accuracy/hat`). Written with `torch.utils.tensorboard` (the optional extra reidkit[tensorboard]).
"""

from __future__ import annotations

from pathlib import Path

from reidkit.errors import ReidkitError

EVENTS_FOLDER = "tensorboard"  # inside the run folder
_NOT_VALUES = ("kind", "epoch", "step", "test_set")


def scalars(record: dict) -> dict[str, float]:
    """The TensorBoard tags and values of one metrics.jsonl record (strings and flags left out)."""
    prefix = ""
    if record.get("kind") == "eval":
        prefix = f"eval/{record['test_set']}/" if "test_set" in record else "eval/"
    values: dict[str, float] = {}

    def add(key: str, value) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                add(f"{key}/{name}", item)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values[prefix + key] = float(value)

    for key, value in record.items():
        if key not in _NOT_VALUES:
            add(key, value)
    return values


class TensorBoardEvents:
    """Writes each metrics.jsonl record as scalars into `run_dir/tensorboard/`.

    Raises:
        ReidkitError: the tensorboard package is missing (names the extra to install).
    """

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ReidkitError('train.tensorboard=true needs the tensorboard package: pip install '
                               '"reidkit[tensorboard]" (or set train.tensorboard=false)') from error
        self.writer = SummaryWriter(log_dir=str(run_dir / EVENTS_FOLDER))

    def write(self, record: dict) -> None:
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=record.get("step", 0))

    def close(self) -> None:
        self.writer.close()
