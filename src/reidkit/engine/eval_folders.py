"""Where `reidkit eval` writes, so that no evaluation replaces another: one folder per evaluation target (the
query/gallery sets evaluated) under the run, and reading them back for `reidkit report`.

`RUN/eval/<target>/` (`RUN/eval_<model stem>/<target>/` for an exported model), `<target>` being the labels of
the test sets joined by "+" (`market1501`, `duke+msmt17`; a set's label is its `name`, else its dataset name).
Each folder's metrics.json records what was evaluated (`"evaluated_on"`: each set's label, dataset, resolved
root and options). Evaluating the same target again replaces that folder's files (a re-evaluation, e.g. with
eval.flip=true); another target that has the same labels (the same dataset at another root) gets
`<target>-2`, `-3`, ... A folder from before this scheme (`RUN/eval/metrics.json`) is read as `eval`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from reidkit.config.sections import DataSource
from reidkit.engine.saved_runs import read_run_metrics
from reidkit.errors import ReidkitError

EVALUATIONS = ("eval", "eval_*")  # folders of the run holding evaluations: RUN/eval/ and RUN/eval_<model stem>/


def evaluation_target(sources: list[DataSource], labels: list[str]) -> list[dict]:
    """What an evaluation of the test sets `sources` (labelled `labels`, `reidkit.data.build.test_sources`) is
    of: per set, its label and its `DataSource` values (root resolved), the JSON stored as "evaluated_on"."""
    return [{"label": label, **{field.name: getattr(source, field.name) for field in dataclasses.fields(DataSource)},
             "root": str(Path(source.root).resolve())} for source, label in zip(sources, labels)]


def target_folder(base: Path, target: list[dict]) -> tuple[Path, bool]:
    """(folder for the evaluation of `target` under `base`, whether it replaces an earlier evaluation of the
    same target): `<labels joined by +>`, or the first of `-2`, `-3`, ... that is free or holds that target."""
    name = "+".join(entry["label"] for entry in target)
    for number in range(1, 10_000):
        folder = base / (name if number == 1 else f"{name}-{number}")
        if not (folder / "metrics.json").is_file():
            return folder, False
        if _evaluated_on(folder) == target:
            return folder, True
    raise ReidkitError(f"{base} holds 9,999 evaluations named {name}; pass --out")


def read_evaluations(run_dir: str | Path) -> tuple[dict[str, dict], list[str]]:
    """({folder relative to the run: metrics}, notes on unreadable ones) of the evaluations `reidkit eval`
    wrote into `run_dir`, sorted by folder."""
    run_dir = Path(run_dir)
    found = sorted({path.parent for pattern in EVALUATIONS
                    for path in (*run_dir.glob(f"{pattern}/metrics.json"), *run_dir.glob(f"{pattern}/*/metrics.json"))})
    evaluations, notes = {}, []
    for folder in found:
        try:
            evaluations[folder.relative_to(run_dir).as_posix()] = read_run_metrics(folder)
        except ReidkitError as error:
            notes.append(f"evaluation left out: {error}")
    return evaluations, notes


def _evaluated_on(folder: Path) -> list | None:
    """The "evaluated_on" record of the folder's metrics.json; None when absent or unreadable."""
    try:
        return json.loads((folder / "metrics.json").read_text(encoding="utf-8")).get("evaluated_on")
    except (ValueError, AttributeError, OSError):  # not JSON / not an object / unreadable: another target
        return None
