"""Writing a run folder: checks before writing, the metrics log, and the files written when a run finishes
(`reidkit.engine.saved_runs` reads them back)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from reidkit.config import Config, resolve_protocol, save_config
from reidkit.data.build import test_sources
from reidkit.data.datasets import ReidDataset
from reidkit.engine.baselines import colour_histogram_features
from reidkit.engine.checkpoint import save_weights
from reidkit.engine.evaluation import RANKED_TOP_K, Evaluation, combine_test_sets, evaluate_feature_sets
from reidkit.engine.reporting import report_run
from reidkit.engine.saved_runs import model_metadata, read_metrics_records
from reidkit.errors import ReidkitError
from reidkit.metrics.ranked_lists import RankedLists
from reidkit.outputs import append_line, write_json, write_text
from reidkit.viz.curves import plot_cmc, plot_training_curves
from reidkit.viz.ranked import save_ranked_lists


def check_writable(run_dir: Path) -> None:
    """Create `run_dir` and write/remove a probe file, so an unwritable or full folder fails before
    any work, with the folder named."""
    probe = run_dir / f".write_probe_{os.getpid()}"  # one per process: ranks of a distributed run race
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"\0" * 4096)
        probe.unlink()
    except OSError as error:
        raise ReidkitError(f"cannot write to the run folder {run_dir} ({error}); "
                           "choose a writable --out with free space") from error



def write_model_run(run_dir: Path, config: Config, model: torch.nn.Module) -> None:
    """A run folder of a model that was not trained here: `config.yaml` and `model.safetensors` with the header
    `load_run_model` reads (what `reidkit import` writes; an untrained run for tests and benchmarks)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    save_weights(model, run_dir / "model.safetensors", model_metadata(model, config))

class MetricsLog:
    """Append-only JSON lines file (`metrics.jsonl`): one record per logged step or evaluation, each appended
    whole or not at all (`reidkit.outputs.append_line`); rewritten atomically when cut back on resume. Each
    record is also handed to `mirror` (e.g. `TensorBoardEvents`) when given."""

    def __init__(self, path: Path, mirror=None) -> None:
        self.path, self.mirror = path, mirror

    def write(self, record: dict) -> None:
        append_line(self.path, json.dumps(record))
        if self.mirror is not None:
            self.mirror.write(record)

    def truncate_after(self, step: int) -> None:
        """Drop records logged after optimiser step `step` (work redone after a resume), and the partial last
        line a killed run leaves."""
        if not self.path.is_file():
            return
        kept = [record for record in self.records() if record.get("step", 0) <= step]
        write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    def records(self) -> list[dict]:
        """The readable records (a line that is not a JSON object is skipped)."""
        return read_metrics_records(self.path)[0]


def finish_run(run_dir: Path, evaluations: list[Evaluation], test_sets: list[ReidDataset], config: Config,
               activation=None) -> dict:
    """Write `metrics.json`, the CMC curve, training curves, ranked lists and `report.html` of a finished run
    from its final evaluation of each test set; returns the metrics written.

    The first test set's metrics fill metrics.json's top level and its pictures `plots/` and `ranked/`; with
    several test sets, metrics.json also holds each set's metrics under `test_sets`, and the other sets' CMC
    curves and ranked lists go to `test_sets/<name>/`. `activation` (image file → map) adds activation maps to
    the ranked lists and the report."""
    evaluation = combine_test_sets([test_set.name for test_set in test_sets], evaluations)
    write_json(run_dir / "metrics.json", evaluation.metrics)
    write_test_set_pictures(run_dir, evaluations, test_sets, config, activation)
    curves = plot_training_curves(MetricsLog(run_dir / "metrics.jsonl").records(),
                                  run_dir / "plots" / "training_curves.png")
    report_run(run_dir, ranked=evaluation.ranked, dataset=test_sets[0], gallery_features=evaluation.gallery_features,
               activation=activation, training_curves=curves)
    return evaluation.metrics


def write_test_set_pictures(out: Path, evaluations: list[Evaluation], test_sets: list[ReidDataset],
                            config: Config, activation=None) -> None:
    """CMC curve and ranked lists of each test set: the first in `out`, the others in `out/test_sets/<name>/`."""
    for index, (evaluation, test_set) in enumerate(zip(evaluations, test_sets)):
        folder = out / "test_sets" / test_set.name if index else out
        write_pictures(folder, evaluation.metrics, evaluation.ranked, test_set, config.eval, activation)


def write_baselines(run_dir: Path, dataset: ReidDataset, config: Config, untrained: dict, log=print) -> None:
    """Write `baselines.json`: a colour-histogram baseline and the untrained network, same protocol."""
    query = torch.from_numpy(colour_histogram_features([s[0] for s in dataset.query]))
    gallery = torch.from_numpy(colour_histogram_features([s[0] for s in dataset.gallery]))
    histogram = evaluate_feature_sets(query, gallery, dataset.query, dataset.gallery, "euclidean",
                                      config.eval.max_rank, config.eval.junk,
                                      resolve_protocol(config, test_sources(config)[0][0]),
                                      config.eval.single_shot_repeats)
    untrained = {key: value for key, value in untrained.items() if key != "test_sets"}
    baselines = {"colour_histogram": histogram, "untrained_network": untrained}
    write_json(run_dir / "baselines.json", baselines)
    log(f"colour-histogram baseline: rank-1 {histogram['rank1']:.2%}  mAP {histogram['mAP']:.2%}")


def write_pictures(run_dir: str | Path, metrics: dict, ranked: RankedLists, dataset: ReidDataset,
                   eval_config, activation=None) -> None:
    """Write `plots/cmc.png` and `ranked/query_*.png` (query + top-10 with green/red frames) into `run_dir`.

    The CMC curve is the one of `metrics` (its protocol); the ranked lists always show the whole gallery,
    since a single-gallery-shot draw is one of many and would not explain the metrics by itself. `activation`
    (image file → map, `reidkit.engine.activation.activation_of_files`) adds the activation maps to the lists.
    """
    run_dir = Path(run_dir)
    (run_dir / "plots").mkdir(parents=True, exist_ok=True)
    plot_cmc(np.array(metrics["cmc"]), run_dir / "plots" / "cmc.png", label=dataset.name)
    save_ranked_lists(ranked, dataset.query, dataset.gallery, run_dir / "ranked",
                      num_queries=eval_config.ranked_queries, topk=RANKED_TOP_K, activation=activation)
