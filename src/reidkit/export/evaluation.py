"""Evaluating an exported model file: the same metrics as `reidkit.engine.evaluation.evaluate_model`."""

from __future__ import annotations

from pathlib import Path

import torch

from reidkit.data.datasets import ReidDataset
from reidkit.engine.evaluation import Evaluation, check_protocol, score_features
from reidkit.errors import ReidkitError
from reidkit.export.runtime import extract_with_model, load_model


def evaluate_exported(model_path: str | Path, dataset: ReidDataset, eval_config, *, protocol: str,
                      progress: bool = True) -> Evaluation:
    """`evaluate_model` for a file written by `reidkit export` (any format, `reidkit.export.load_model`): the
    same metrics of the same query/gallery, so that the accuracy cost of a format is a measured number.

    The feature and flip are those baked into the file (recorded in the summary with `model` and `format`);
    `eval_config`'s metric, junk rule, protocol, re-ranking and query expansion apply as usual.

    Raises:
        ReidkitError: `eval_config.verify_topk` > 0 (the pair head is not exported), or as `load_model`.
    """
    if eval_config.verify_topk > 0:
        raise ReidkitError("an exported model holds only the retrieval feature, not the pair head: set "
                           "eval.verify_topk=0 to evaluate it")
    check_protocol(protocol)
    model = load_model(model_path)
    query, gallery = (torch.from_numpy(extract_with_model(model, [s[0] for s in samples],
                                                          batch_size=eval_config.batch_size, progress=progress))
                      for samples in (dataset.query, dataset.gallery))
    metrics, ranked = score_features(query, gallery, dataset, eval_config, protocol, progress)
    metrics.update(model=str(model_path), format=model.info.format, feature=model.info.feature, flip=model.info.flip)
    return Evaluation(metrics, ranked, query, gallery)
