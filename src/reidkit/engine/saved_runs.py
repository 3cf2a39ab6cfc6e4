"""Reopen a finished run folder: its config (plus overrides), its trained model, and its metrics files read
with checks, so a damaged file is one clear error naming it (or, for metrics.jsonl, skipped lines)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reidkit.config import Config, apply_overrides, config_from_dict, read_yaml
import torch

from reidkit.data.parsing import parse_id
from reidkit.engine.checkpoint import check_fits, load_into, load_weights
from reidkit.errors import ReidkitError
from reidkit.models.reid import MAX_CLASSES, ReidModel, build_model, model_kwargs

OPEN_SET_NUMBERS = ("threshold", "target_fpr", "eer")  # the open-set figures a decision reads


def load_run_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """The `config.yaml` of `run_dir` with ``key=value`` overrides applied (e.g. eval.flip=true).

    Raises:
        ReidkitError: not a run folder, or its config.yaml is empty, not YAML or not a mapping.
    """
    return config_from_dict(apply_overrides(read_run_config(run_dir), overrides or []))


def read_run_config(run_dir: str | Path) -> dict:
    """The plain values of the `config.yaml` of `run_dir`, checked to be a non-empty YAML mapping."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        problem = "is a file, not a run folder" if Path(run_dir).is_file() else "is not a run folder (no config.yaml)"
        raise ReidkitError(f"{run_dir} {problem}; pass the --out of `reidkit train`")
    restore = "restore it from a copy, or write there the config file (and overrides) the run was trained with"
    values = read_yaml(path, restore)
    if values is None:
        raise ReidkitError(f"{path} is empty; a run folder's config.yaml is written by `reidkit train`: {restore}")
    if not isinstance(values, dict):
        raise ReidkitError(f"{path} holds a {type(values).__name__}, not a mapping of config sections; {restore}")
    return values


def model_metadata(model: ReidModel, config: Config) -> dict[str, str]:
    """The string header saved with the weights: what `load_run_model` needs to rebuild the model."""
    classes = {name: head.out_features for name, head in model.attribute_heads.classifiers.items()} \
        if model.attribute_heads is not None else None
    return {"num_classes": str(model.num_classes), "backbone": config.model.backbone,
            "attributes": json.dumps(classes), "pair_head": json.dumps(model.pair_head is not None)}


def load_run_model(run_dir: str | Path, config: Config, weights: str | Path | None = None) -> ReidModel:
    """Rebuild the model of a run and load `weights` (default: the run's final `model.safetensors`).

    Every tensor of the file is checked against the shape the config builds for it before the model is
    allocated: the model is first built on the meta device (shapes, no memory), so a header and tensors that
    agree but lie (a classifier of [10⁷, 0], zero bytes in the file) cannot ask for gigabytes.

    Raises:
        ReidkitError: a damaged header (also more classes than `MAX_CLASSES`), or tensors that do not fit.
    """
    path = Path(weights) if weights else Path(run_dir) / "model.safetensors"
    state, metadata = load_weights(path)
    num_classes, attributes, pair_head = _checked_header(path, state, metadata)
    cameras = state["backbone.camera_embedding"].shape[0] if "backbone.camera_embedding" in state else 0
    arguments = model_kwargs(config.model, config.data) | {  # trained weights replace any ImageNet init
        "weights": None, "num_classes": num_classes, "attributes": attributes, "pair_head": pair_head,
        "cameras": cameras}
    with torch.device("meta"):
        check_fits(build_model(**arguments).state_dict(), state, path)
    model = build_model(**arguments)
    load_into(model, state, path)
    return model.eval()


def _checked_header(path: Path, state: dict, metadata: dict[str, str]) -> tuple[int, dict[str, int] | None, bool]:
    """(num_classes, attribute classes, pair head) of a weights file's header, each checked against the
    tensors the file holds before anything is built from it (a damaged or edited header would otherwise
    build a wrong model or ask for gigabytes)."""
    def refuse(problem: str) -> ReidkitError:
        return ReidkitError(f"{path} has a damaged header ({problem}); use the run's model.safetensors or a "
                            "checkpoint written by reidkit")

    if "num_classes" not in metadata:
        raise ReidkitError(f"{path} has no num_classes metadata; it was not written by reidkit")
    classifier, num_classes = state.get("head.classifier.weight"), parse_id(metadata["num_classes"])
    if num_classes is None or num_classes < 1 or classifier is None or classifier.dim() != 2 \
            or num_classes != classifier.shape[0]:
        rows = tuple(classifier.shape) if classifier is not None else "absent"
        raise refuse(f"num_classes {metadata['num_classes']!r} for a classifier of shape {rows}")
    if num_classes > MAX_CLASSES:
        raise refuse(f"num_classes {num_classes} is over the ceiling of {MAX_CLASSES:,} classes")
    try:
        attributes = json.loads(metadata.get("attributes", "null"))
    except json.JSONDecodeError:
        attributes = "not JSON"
    if attributes is not None:
        shapes = {name: state.get(f"attribute_heads.classifiers.{name}.weight") for name in attributes} \
            if isinstance(attributes, dict) else {}
        if not isinstance(attributes, dict) or not all(
                isinstance(count, int) and 1 <= count <= MAX_CLASSES and shapes[name] is not None
                and shapes[name].shape[0] == count for name, count in attributes.items()):
            raise refuse(f"attributes {metadata.get('attributes')!r} do not match the attribute heads it holds")
    pair_head = metadata.get("pair_head", "false")
    if pair_head not in ("true", "false") or (pair_head == "true") != ("pair_head.classifier.weight" in state):
        raise refuse(f"pair_head {pair_head!r} does not match the tensors")
    return num_classes, attributes, pair_head == "true"


def read_run_metrics(run_dir: str | Path) -> dict:
    """The run's metrics.json, checked to hold what reports show (rank1, mAP, mINP numbers; cmc numbers).

    Raises:
        ReidkitError: `run_dir` is not a folder, has no metrics.json, or it is not valid JSON or mistyped.
    """
    run_dir = Path(run_dir)
    path, fix = run_dir / "metrics.json", f"rewrite it with `reidkit eval --run {run_dir} --out {run_dir}`"
    if not run_dir.is_dir():
        raise ReidkitError(f"{run_dir} does not exist or is not a folder; pass a run folder written by `reidkit train`")
    if not path.is_file():
        raise ReidkitError(f"{run_dir} has not finished (no metrics.json); finish it with "
                           f"`reidkit train --resume {run_dir}`" if (run_dir / "config.yaml").is_file()
                           else f"{run_dir} is not a run folder (no config.yaml or metrics.json); pass the --out "
                                "of `reidkit train`")
    metrics = read_json_object(path, fix)
    problems = [f'"{key}" is missing' for key in ("rank1", "mAP", "mINP") if key not in metrics]
    problems += [f'"{key}" is {value!r}, not a number' for key, value in metrics.items()
                 if key in ("rank1", "rank5", "rank10", "mAP", "mINP") and not _is_number(value)]
    if "cmc" in metrics and not (isinstance(metrics["cmc"], list) and all(map(_is_number, metrics["cmc"]))):
        problems.append('"cmc" is not a list of numbers')
    for key in ("attribute_accuracy", "verification_rescored", "reranked", "query_expanded", "open_set"):
        if key in metrics and not isinstance(metrics[key], dict):
            problems.append(f'"{key}" is not an object')
    test_sets = metrics.get("test_sets", {})
    if not (isinstance(test_sets, dict) and all(isinstance(values, dict) and all(
            _is_number(values.get(key)) for key in ("rank1", "mAP", "mINP")) for values in test_sets.values())):
        problems.append('"test_sets" is not an object of test set metrics (rank1, mAP, mINP numbers)')
    accuracy = metrics.get("attribute_accuracy")
    if isinstance(accuracy, dict) and not all(map(_is_number, accuracy.values())):
        problems.append('"attribute_accuracy" holds a value that is not a number')
    open_set = metrics.get("open_set")
    if isinstance(open_set, dict) and not all(_is_number(open_set.get(key)) for key in OPEN_SET_NUMBERS):
        problems.append(f'"open_set" lacks one of the numbers {", ".join(OPEN_SET_NUMBERS)}')
    if not isinstance(metrics.get("protocol", ""), str):
        problems.append('"protocol" is not a string')
    if problems:
        raise ReidkitError(f"{path} is damaged: {'; '.join(problems[:3])}; {fix}")
    return metrics


def run_threshold(run_dir: str | Path, metric: str, override: float | None = None) -> tuple[float, str]:
    """The distance below which two images are the same person, for distances of `metric`, and where it
    comes from: `override` when given, else the run's open-set threshold (metrics.json "open_set").

    Raises:
        ReidkitError: no override and the run has no open-set figures (evaluated before they existed), or
            they are for another metric.
    """
    if override is not None:
        return override, "given threshold"
    figures = read_run_metrics(run_dir).get("open_set")
    if figures is None:
        raise ReidkitError(f"{run_dir} has no open-set threshold in metrics.json (evaluated before reidkit computed "
                           f"one); run `reidkit eval --run {run_dir} --out {run_dir}` or pass --threshold")
    if figures.get("metric") != metric:
        raise ReidkitError(f"the open-set threshold of {run_dir} is for {figures.get('metric')} distances, not "
                           f"{metric}; use eval.metric={figures.get('metric')} or pass --threshold")
    return float(figures["threshold"]), (f"the run's threshold for FPR ≤ {figures['target_fpr']:g} on "
                                         f"{figures['pairs']} pairs")


def read_json_object(path: Path, fix: str) -> dict:
    """The JSON object in `path`; a ReidkitError naming the file, what is wrong and `fix` otherwise."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ReidkitError(f"{path} is not valid JSON (line {error.lineno} column {error.colno}: {error.msg}); "
                           f"{fix}") from error
    except UnicodeDecodeError as error:
        raise ReidkitError(f"{path} is not a text file ({error}); {fix}") from error
    if not isinstance(values, dict):
        raise ReidkitError(f"{path} holds a JSON {type(values).__name__}, not an object; {fix}")
    return values


def read_metrics_records(path: Path) -> tuple[list[dict], list[int]]:
    """(records, numbers of the lines skipped) of a metrics.jsonl; a line that is not a JSON object (a run
    killed while writing leaves a partial last line) is skipped."""
    if not path.is_file():
        return [], []
    records, skipped = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped.append(number)
    return records, skipped


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
