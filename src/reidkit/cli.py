"""The `reidkit` command line: synth, train, adapt, import, eval, extract, rerank, verify, index, search, report,
export, serve, delete, token.

Each command loads its config, calls one library function and prints a short summary. Errors in the
user's input print one line (`reidkit: error: ...`) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import threading
from pathlib import Path

from reidkit.config.sections import MIN_HEIGHT, MIN_WIDTH
from reidkit.errors import ReidkitError
from reidkit.export.formats import CALIBRATION_METHODS, FORMATS
from reidkit.outputs import output_file, output_folder, write_file, write_json

OVERRIDES_HELP = "config overrides as section.key=value, e.g. train.epochs=10 model.backbone=resnet18"
TRUST_FEATURES_HELP = ("accept an index or query feature file that records no model digest (written by an older "
                       "reidkit, from an exported model, or edited): skips the check that its features come from "
                       "the run's model; one recording another model is refused all the same")
RUN_OVERRIDES_HELP = ("overrides of the run's config as section.key=value, e.g. eval.flip=true "
                      "eval.metric=euclidean (the model keys must stay those the run was trained with)")


def cmd_synth(args: argparse.Namespace) -> int:
    from reidkit.data.synthetic import SyntheticSpec, generate_dataset
    from reidkit.data.synthetic_video import VideoSpec, generate_video_dataset

    spec = SyntheticSpec(identities=args.identities, cameras=args.cameras)
    if args.tracklets:
        counts = generate_video_dataset(args.out, VideoSpec(args.identities, args.cameras, images=spec), seed=args.seed,
                                        progress=not args.quiet)
        print(f"wrote synthetic tracklets (MARS layout) to {args.out}: {json.dumps(counts)}")
        return 0
    counts = generate_dataset(args.out, spec, seed=args.seed, progress=not args.quiet)
    print(f"wrote synthetic data set to {args.out}: {json.dumps(counts)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from reidkit.config import load_config
    from reidkit.distributed import launch_local
    from reidkit.engine.evaluation import describe_test_sets
    from reidkit.engine.saved_runs import load_run_config
    from reidkit.engine.trainer import train

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch_local(args.nproc, without_option(args.argv, "--nproc"))
    if args.resume:
        config = load_run_config(args.resume, args.overrides) if not args.config else \
            load_config(args.config, args.overrides)
        out = args.resume
    elif args.out:
        config, out = load_config(args.config, args.overrides), args.out
    else:
        raise ReidkitError("train needs --out RUN_DIR (a new run) or --resume RUN_DIR (continue one)")
    metrics = train(config, out, progress=not args.quiet, resume=bool(args.resume), force=args.force)
    if metrics:  # empty on the non-main ranks of a distributed run
        print(f"run folder: {out}  {describe_test_sets(metrics)}\nreport: {Path(out) / 'report.html'}")
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from reidkit.config import load_config
    from reidkit.distributed import launch_local
    from reidkit.engine.adaptation import adapt, adaptation_config
    from reidkit.engine.evaluation import describe_metrics, describe_test_sets
    from reidkit.engine.saved_runs import load_run_config

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch_local(args.nproc, without_option(args.argv, "--nproc"))
    if args.resume:
        config, out = load_run_config(args.resume, args.overrides), args.resume
    elif args.out and args.source:
        config, out = adaptation_config(load_config(args.config, args.overrides), args.source), args.out
    else:
        raise ReidkitError("adapt needs --source RUN_DIR and --out RUN_DIR (a new run), or --resume RUN_DIR")
    metrics = adapt(config, out, progress=not args.quiet, resume=bool(args.resume), force=args.force)
    if metrics:  # empty on the non-main ranks of a distributed run
        adabn = (f"\nsource model, target BatchNorm statistics (adapt.target_bn): "
                 f"{describe_metrics(metrics['target_bn'])}") if "target_bn" in metrics else ""
        print(f"run folder: {out}  {describe_test_sets(metrics)}\ndirect transfer (the source model): "
              f"{describe_metrics(metrics['direct_transfer'])}{adabn}\nreport: {Path(out) / 'report.html'}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from reidkit.engine.peer_run import import_peer_run

    config, model = import_peer_run(args.weights, args.out, args.config, args.overrides)
    print(f"wrote run folder {args.out}: {config.model.backbone}"
          f"{f' + {config.model.embedding_dim}-d embedding' if config.model.embedding_dim else ''}, "
          f"{model.num_classes} classes, feature {config.eval.feature} ({model.feat_dim}-d); "
          f"try `reidkit eval --run {args.out}`")
    return 0


def _open_run(args: argparse.Namespace):
    """(config, device, model) of the run folder `args.run` with `args.overrides` and `args.weights`."""
    from reidkit.devices import resolve_device
    from reidkit.engine.saved_runs import load_run_config, load_run_model

    config = load_run_config(args.run, args.overrides)
    device = resolve_device(config.train.device)
    return config, device, load_run_model(args.run, config, args.weights).to(device)


def _eval_folder(args: argparse.Namespace, target: list[dict], folder: str) -> Path:
    """--out, or RUN/FOLDER/<target> (`reidkit.engine.eval_folders`): never another target's evaluation."""
    from reidkit.engine.eval_folders import target_folder

    if args.out:
        return output_folder(args.out)
    out, replaces = target_folder(Path(args.run) / folder, target)
    if replaces and not args.quiet:
        print(f"re-evaluating the same data: replacing the evaluation in {out}")
    return output_folder(out)


def cmd_eval(args: argparse.Namespace) -> int:
    from reidkit.config import resolve_protocol
    from reidkit.data.attributes import load_attributes
    from reidkit.data.build import DatasetLoader, build_dataset, build_test_sets, test_sources
    from reidkit.devices import uses_amp
    from reidkit.engine.activation import activation_of_files
    from reidkit.engine.eval_folders import evaluation_target
    from reidkit.engine.evaluation import combine_test_sets, describe_metrics, describe_test_sets, evaluate_model
    from reidkit.engine.run_writer import write_pictures, write_test_set_pictures
    from reidkit.export.evaluation import evaluate_exported

    if args.model:  # an exported file: its own runtime, no PyTorch model; evaluated on the set of data.*
        from reidkit.engine.saved_runs import load_run_config

        if args.weights:
            raise ReidkitError("--model and --weights exclude each other: an exported file holds its weights")
        config = load_run_config(args.run, args.overrides)
        target = evaluation_target([config.data], [config.data.name or config.data.dataset])
        out = _eval_folder(args, target, f"eval_{Path(args.model).stem}")
        dataset = build_dataset(config.data, progress=not args.quiet)
        metrics, ranked, _, _ = evaluate_exported(args.model, dataset, config.eval, protocol=resolve_protocol(config),
                                                  progress=not args.quiet)
        write_json(out / "metrics.json", {**metrics, "evaluated_on": target})
        write_pictures(out, metrics, ranked, dataset, config.eval)
        print(f"{out}: {describe_metrics(metrics)}  ({metrics['num_valid_queries']} valid queries)"
              f"  [{metrics['format']} model {args.model}]")
        return 0
    config, device, model = _open_run(args)
    target = evaluation_target(*test_sources(config))
    out = _eval_folder(args, target, "eval")
    test_sets, data = build_test_sets(config, DatasetLoader(progress=not args.quiet)), config.data
    evaluations = [evaluate_model(model, test_set, config.eval, data.height, data.width, device, workers=data.workers,
                                  amp=uses_amp(config.train, device), progress=not args.quiet,
                                  pair_feature=config.loss.verification.feature,
                                  protocol=resolve_protocol(config, source), interpolation=data.interpolation,
                                  seq_len=data.seq_len,
                                  attributes=load_attributes(source.dataset, source.root, source.attributes)
                                  if model.attribute_heads else None)
                   for test_set, source in zip(test_sets, test_sources(config)[0])]
    metrics = combine_test_sets([test_set.name for test_set in test_sets], evaluations).metrics
    write_json(out / "metrics.json", {**metrics, "evaluated_on": target})
    activation = activation_of_files(model, data.height, data.width, device, data.interpolation) \
        if config.eval.activation_maps else None
    write_test_set_pictures(out, evaluations, test_sets, config, activation)
    valid = ", ".join(str(evaluation.metrics["num_valid_queries"]) for evaluation in evaluations)
    print(f"{out}: {describe_test_sets(metrics)}  ({valid} valid queries)")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from reidkit.data.build import build_dataset
    from reidkit.engine.extraction import extract_split

    args.out = output_file(args.out)
    if args.model:  # the exported file's runtime: no PyTorch model is built
        from reidkit.engine.saved_runs import load_run_config
        from reidkit.export import extract_split_model

        config = load_run_config(args.run, args.overrides)
        samples = getattr(build_dataset(config.data, progress=not args.quiet), args.split)
        features = extract_split_model(args.model, samples, args.out, batch_size=config.eval.batch_size,
                                       progress=not args.quiet)
    else:
        from reidkit.engine.indexing import weights_digest

        config, device, model = _open_run(args)
        samples = getattr(build_dataset(config.data, progress=not args.quiet), args.split)
        digest = weights_digest(args.weights or Path(args.run) / "model.safetensors")
        features = extract_split(model, samples, config, device, args.out, progress=not args.quiet,
                                 model_digest=digest)
    print(f"wrote {features.shape[0]} × {features.shape[1]} {args.split} features to {args.out}")
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    import numpy as np

    from reidkit.metrics import evaluate_features, evaluate_rank, re_ranking_features
    from reidkit.retrieval.feature_files import feature_file_metadata, load_feature_file

    q_features, q_pids, q_camids, _ = load_feature_file(args.query)
    g_features, g_pids, g_camids, _ = load_feature_file(args.gallery)
    out = output_file(args.out, ".npy") if args.out else None
    if args.metric is None:  # the metric the run evaluates these features with
        args.metric = feature_file_metadata(args.query).get("metric", "euclidean")
    try:
        original = evaluate_features(q_features, g_features, q_pids, g_pids, q_camids, g_camids, metric=args.metric,
                                     junk=args.junk)
        distances = re_ranking_features(q_features, g_features, args.metric, args.k1, args.k2, args.lambda_value,
                                        progress=not args.quiet)
        reranked = evaluate_rank(distances, q_pids, g_pids, q_camids, g_camids, junk=args.junk)
    except ValueError as error:
        raise ReidkitError(f"cannot re-rank: {error}") from error
    for name, result in (("original", original), ("re-ranked", reranked)):
        print(f"{name:>9}: rank-1 {result['cmc'][0]:.2%}  mAP {result['mAP']:.2%}  mINP {result['mINP']:.2%}  "
              f"({result['num_valid_queries']} valid queries, {args.metric} distance)")
    if out:
        def save(temporary: Path) -> None:
            with temporary.open("wb") as handle:  # a file name would gain numpy's ".npy"
                np.save(handle, distances)

        write_file(out, save)
        print(f"wrote the [{distances.shape[0]}, {distances.shape[1]}] re-ranked distances to {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from reidkit.engine.reporting import compare_run_folders, report_run

    out = output_file(args.out) if args.out else None
    if args.compare:
        out = compare_run_folders([args.run, *args.compare], out or Path(args.run) / "compare.html")
    else:
        out = report_run(args.run, out_path=out)
    print(f"wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from reidkit.config.rules import VIDEO_DATASETS
    from reidkit.engine.saved_runs import load_run_config
    from reidkit.export import export

    result = export(args.run, args.format, output_file(args.out), opset=args.opset, height=args.height,
                    width=args.width, weights=args.weights, parity_images=args.parity_images,
                    calibration_images=args.calibration_images, calibration_method=args.calibration_method,
                    per_channel=args.per_channel, min_cosine=args.min_cosine, overrides=args.overrides)
    info, parity = result.info, result.parity
    video = load_run_config(args.run, args.overrides).data.dataset in VIDEO_DATASETS
    inputs = f"tracklets [batch, frames, 3, {info.height}, {info.width}]" if video else \
        f"images [batch, 3, {info.height}, {info.width}]"
    print(f"wrote {result.path} ({info.format}): {inputs} → {info.feature} "
          f"[batch, {result.feat_dim}]{', flip-averaged' if info.flip else ''}\nparity on {parity.images} query "
          f"images: max |Δ feature| = {parity.max_abs_diff:.2e}, min cosine = {parity.min_cosine:.6f} "
          f"(tolerance {result.tolerance.describe()})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from reidkit.serve.app import serve

    serve(args.index, args.run, host=args.host, port=args.port, query_features=args.queries, topk=args.topk,
          max_upload_bytes=args.max_upload_bytes, max_uploads=args.max_uploads,
          max_waiting=args.max_waiting, max_decodes=args.max_decodes,
          max_batch=args.max_batch, body_timeout=args.body_timeout, allow_add=args.allow_add,
          added_images=args.added_images, trust_features=args.trust_features, tokens=args.tokens,
          audit_log=args.audit_log, rate_limit=args.rate_limit, allow_delete=args.allow_delete,
          insecure_no_auth=args.insecure_no_auth)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from reidkit.retrieval.filters import format_time
    from reidkit.serve.security import add_token, read_tokens, remove_token

    if args.action == "add":
        if not args.id or not args.scopes:
            raise ReidkitError("token add needs --id NAME and --scopes search [write]")
        secret = add_token(args.tokens, args.id, args.scopes, args.days)
        print(f"token {args.id} ({' '.join(sorted(args.scopes))}) added to {args.tokens}; it is shown only now, keep "
              f"it secret:\n{secret}")
    elif args.action == "remove":
        if not args.id:
            raise ReidkitError("token remove needs --id NAME")
        remove_token(args.tokens, args.id)
        print(f"token {args.id} removed from {args.tokens}; a running service refuses it from its next request")
    else:
        for token in read_tokens(args.tokens):
            expiry = "never expires" if token.expires is None else f"expires {format_time(token.expires)}"
            print(f"{token.id}  {' '.join(sorted(token.scopes))}  {expiry}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import torch

    from reidkit.distances import pairwise_distance
    from reidkit.engine.extraction import image_outputs
    from reidkit.engine.saved_runs import run_threshold

    config, device, model = _open_run(args)
    key, metric = config.eval.feature, config.eval.metric
    try:
        threshold, source = run_threshold(args.run, metric, args.threshold)
    except ReidkitError:
        if model.pair_head is None:
            raise
        threshold, source = None, ""  # the pair head decides alone
    keys = tuple(dict.fromkeys((key, config.loss.verification.feature) if model.pair_head is not None else (key,)))
    outputs = image_outputs(model, [args.image_a, args.image_b], config, device, keys)
    distance = float(pairwise_distance(outputs[key][:1], outputs[key][1:], metric)[0, 0])
    if threshold is not None:
        same = distance < threshold
        print(f"{'same person' if same else 'no match'}: {metric} distance {distance:.4f} "
              f"{'<' if same else '>='} {threshold:.4f} ({source})")
    if model.pair_head is not None:
        pair = outputs[config.loss.verification.feature].to(device)
        with torch.no_grad():
            probability = float(model.verify(pair[:1], pair[1:]))
        print(f"P(same person) = {probability:.4f}  ({'same' if probability >= 0.5 else 'different'}, pair head)")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from reidkit.engine.indexing import build_gallery_index, sampled_recall
    from reidkit.retrieval.gallery import is_milvus_location

    milvus = args.backend.startswith("milvus")
    out = args.out or str(Path(args.run) / ("gallery.db" if milvus else "index.safetensors"))
    if milvus != is_milvus_location(out):
        raise ReidkitError(f"--out {out}: a {args.backend} gallery is " + ("a Milvus Lite file FILE.db or a server URI "
                           "(http://host:19530)" if milvus else "a .safetensors file (.db names a Milvus gallery)"))
    out = out if milvus and not out.endswith(".db") else output_file(out)
    params = {name: value for name, value in (("nlist", args.nlist), ("nprobe", args.nprobe),
                                              ("hnsw_m", args.hnsw_m), ("ef_search", args.ef_search))
              if value is not None}
    index = build_gallery_index(args.run, args.gallery, backend=args.backend, metric=args.metric,
                                progress=not args.quiet, out=out, faiss_params=params)
    index.save(out)
    print(f"indexed {index.count()} images ({index.dim}-d, {index.metric}, {index.backend}) into {out}")
    if index.backend not in ("exact", "milvus-flat") and not milvus:
        print(f"recall@10 against exact search, {min(len(index), 256)} gallery images as queries: "
              f"{sampled_recall(index):.3f}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from reidkit.engine.indexing import search_images
    from reidkit.engine.saved_runs import run_threshold
    from reidkit.retrieval.filters import format_time
    from reidkit.retrieval.gallery import open_gallery

    index = open_gallery(args.index)
    result = search_images(index, args.images, topk=args.topk, trust_features=args.trust_features,
                           where=gallery_filter(args), tracklet=args.tracklet)
    try:
        threshold, source = run_threshold(index.run_dir, index.metric, args.threshold)
    except ReidkitError as error:  # results without a decision
        threshold, source = None, str(error)
    print(f"same person below {index.metric} distance {threshold:.4f} ({source})" if threshold is not None
          else f"no same-person decision: {source}")
    queries = [f"tracklet of {len(args.images)} images ({args.images[0]} ...)"] if args.tracklet else args.images
    for query, ids, distances in zip(queries, result.ids, result.distances):
        decision = "" if threshold is None or not len(ids) or ids[0] < 0 else \
            "  → same person as #1" if distances[0] < threshold else "  → no match"
        print(f"query {query}{decision}" + ("" if len(ids) and ids[0] >= 0 else "  (no gallery item passes the filter)"))
        found = ids >= 0
        for rank, (distance, item) in enumerate(zip(distances[found], index.items(ids[found].tolist())), start=1):
            if item is not None:
                camera = item.camid + 1 if item.camid >= 0 else "?"
                same = "  same" if threshold is not None and distance < threshold else ""
                print(f"  {rank:3d}  {distance:.4f}  id {item.id:>6}  pid {item.pid:>5}  cam {camera:>2}  "
                      f"{format_time(item.timestamp)}  {item.path}{same}")
    return 0


PLAIN_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?")
PLAIN_INT = re.compile(r"[-+]?[0-9]{1,18}")


def gallery_filter(args: argparse.Namespace):
    """The SearchFilter of `--cameras`, `--after`, `--before` (camera numbers are 1-based, as printed)."""
    from reidkit.retrieval.filters import SearchFilter

    try:
        return SearchFilter(camids=None if args.cameras is None else tuple(camera - 1 for camera in args.cameras),
                            after=args.after, before=args.before)
    except ValueError as error:
        raise ReidkitError(str(error)) from error


def cmd_delete(args: argparse.Namespace) -> int:
    import time

    from reidkit.retrieval.gallery import open_gallery

    if args.older_than is not None:
        if args.before is not None:
            raise ReidkitError("--older-than and --before both set the end of the window; give one")
        args.before = time.time() - args.older_than * 86400
    where = gallery_filter(args)
    if args.ids is None and where.is_empty:
        raise ReidkitError("say what to delete: --ids, --cameras, --before/--older-than or --after")
    gallery = open_gallery(args.index)
    removed = gallery.delete(ids=args.ids, where=where)
    gallery.save(args.index)
    print(f"deleted {len(removed)} items from {args.index}; {gallery.count()} left"
          + (f" (ids {', '.join(map(str, removed[:20]))}{', …' if len(removed) > 20 else ''})" if removed else ""))
    return 0


def time_value(text: str) -> float:
    """argparse type: a time (ISO 8601, UTC unless offset, or seconds since the epoch) in seconds since the epoch."""
    from reidkit.retrieval.filters import parse_time

    try:
        return parse_time(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


time_value.__name__ = "time"


def finite_float(text: str) -> float:
    """argparse type: a finite number in ASCII decimal notation, with an optional exponent (`0.3`, `1e-3`); not
    `1_0`, `inf`, `0x1p-3` or other scripts' digits, which Python's float() accepts."""
    value = float(text) if PLAIN_FLOAT.fullmatch(text) else math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite decimal number such as 0.3 or 1e-3")
    return value


finite_float.__name__ = "number"


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds > 0")
    return value


positive_seconds.__name__ = "number"


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    value = finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in 0..1")
    return value


fraction.__name__ = "number"


def int_in(low: int, high: int | None = None):
    """argparse type: an int in [low, high] (no upper bound when high is None)."""
    def parse(text: str) -> int:
        if not PLAIN_INT.fullmatch(text):  # int() also takes `1_0`, ` 7 ` and other scripts' digits
            raise argparse.ArgumentTypeError(f"{text} is not a whole number in ASCII digits")
        value = int(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high if high is not None else ''}")
        return value
    parse.__name__ = "integer"  # argparse names the type in its "invalid integer value" message
    return parse


def positive_days(text: str) -> float:
    """argparse type: a finite number of days ≥ 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of days >= 0")
    return value


positive_days.__name__ = "number"


def add_filter_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """--cameras, --after, --before of `search` and `delete`."""
    parser.add_argument("--cameras", type=int_in(1), nargs="+", metavar="CAMERA", help=f"{verb} items of these "
                        "cameras (numbers from 1, as printed: c3 in a Market-style name is camera 3)")
    parser.add_argument("--after", type=time_value, help=f"{verb} items timestamped at or after this time (ISO 8601 "
                        "such as 2026-12-06T14:00, UTC unless it has an offset, or seconds since the epoch)")
    parser.add_argument("--before", type=time_value, help=f"{verb} items timestamped before this time (same forms)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reidkit", description="Person re-identification toolkit.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    quiet = argparse.ArgumentParser(add_help=False)  # --quiet also after the command name
    quiet.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = commands.add_parser("synth", parents=[quiet], help="generate the synthetic multi-camera data set (Market-1501 layout)")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--identities", type=int_in(4, 9999), default=300,
                       help="number of identities, half train and half test (4 to 9999; default 300)")
    synth.add_argument("--cameras", type=int_in(2, 9), default=6, help="number of cameras (2 to 9; default 6)")
    synth.add_argument("--seed", type=int_in(0), default=0, help="random seed, 0 or more (same seed, same files)")
    synth.add_argument("--tracklets", action="store_true", help="write tracklets (frames of walks) in the MARS layout "
                       "instead of images (cameras 2 to 6; data.dataset=synthetic_video reads them)")
    synth.set_defaults(func=cmd_synth)

    train = commands.add_parser("train", parents=[quiet], help="train a model and evaluate it; writes a run folder")
    train.add_argument("--config", help="YAML config (defaults: the BoT recipe)")
    train.add_argument("--out", help="run folder to write (must not hold a run yet)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint "
                       "(its config.yaml, plus overrides; a changed config is refused without --force)")
    train.add_argument("--force", action="store_true", help="resume even if the config changed")
    train.add_argument("--nproc", type=int, default=1, help="processes on this machine (DistributedDataParallel "
                       "via torchrun; gloo on CPU, cpu:gloo,cuda:nccl on GPU); same as `torchrun --standalone "
                       "--nproc_per_node N -m reidkit train ...`; see model.sync_bn, loss.<term>.cross_rank, "
                       "loss.id.sharded, train.dist_timeout_minutes")
    train.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    train.set_defaults(func=cmd_train)

    adapt = commands.add_parser("adapt", parents=[quiet], help="adapt a trained run to unlabelled images of other "
                                "cameras (clustering pseudo labels, cluster memory); writes a run folder")
    adapt.add_argument("--source", metavar="RUN_DIR", help="the run to start from (`reidkit train` or `reidkit "
                       "import`); its model section and input size are kept")
    adapt.add_argument("--config", help="YAML config: the unlabelled images (adapt.unlabeled_sets, "
                       "adapt.unlabeled_folders; default the train split of data.*, labels hidden), the labelled "
                       "test set (data.* or eval.test_sets), clustering and loss, e.g. configs/adapt/cluster_contrast.yaml")
    adapt.add_argument("--out", help="run folder to write (must not hold a run yet)")
    adapt.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint (the round's "
                       "pseudo labels and cluster memory included)")
    adapt.add_argument("--force", action="store_true", help="resume even if the config or the images changed")
    adapt.add_argument("--nproc", type=int, default=1, help="processes on this machine (as for train): each "
                       "extracts a share of the images, rank 0 clusters and broadcasts the labels")
    adapt.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    adapt.set_defaults(func=cmd_adapt)

    peer = commands.add_parser("import", parents=[quiet], help="make a run folder from a Torchreid or fast-reid "
                               "checkpoint, for eval / extract / index / serve / export")
    peer.add_argument("--weights", required=True, help="torchreid:PATH or fastreid:PATH (a state dict or a "
                      "checkpoint of Torchreid 0.2.5's resnet/osnet or fast-reid's BoT ResNet(-IBN)); a plain PATH "
                      "is recognised from its keys")
    peer.add_argument("--out", required=True, help="run folder to write (must not hold a run yet)")
    peer.add_argument("--config", help="YAML config giving the data set and eval settings (default: the built-in "
                      "defaults); the model keys and eval.feature are set to what the checkpoint needs")
    peer.add_argument("overrides", nargs="*", help="config overrides as section.key=value applied last, e.g. "
                      "data.root=data/market1501 model.last_stride=2 (a fast-reid model trained with LAST_STRIDE 2)")
    peer.set_defaults(func=cmd_import)

    evaluate = commands.add_parser("eval", parents=[quiet], help="evaluate a trained run on its query/gallery sets, or "
                                   "on others (cross-domain): data.dataset=... data.root=... or eval.test_sets=[...]")
    evaluate.add_argument("--run", required=True, help="run folder written by `reidkit train`")
    evaluate.add_argument("--weights", help="a checkpoint to use instead of RUN/model.safetensors")
    evaluate.add_argument("--model", metavar="FILE", help="evaluate a file written by `reidkit export` instead "
                          "(.onnx, .xml, .engine, .pt; its own runtime, its baked-in feature and flip)")
    evaluate.add_argument("--out", help="folder for metrics and pictures (default RUN/eval/SETS, or "
                          "RUN/eval_STEM/SETS with --model: one folder per evaluated data; SETS is the test sets' "
                          "labels joined by +, with -2, -3, ... for other data under the same labels)")
    evaluate.add_argument("overrides", nargs="*", help=RUN_OVERRIDES_HELP)
    evaluate.set_defaults(func=cmd_eval)

    extract = commands.add_parser("extract", parents=[quiet], help="write features of a data set split to .safetensors")
    extract.add_argument("--run", required=True, help="run folder written by `reidkit train`")
    extract.add_argument("--split", choices=["query", "gallery", "train"], default="gallery",
                         help="data set split to extract (default gallery)")
    extract.add_argument("--weights", help="a checkpoint to use instead of RUN/model.safetensors")
    extract.add_argument("--out", required=True, help="output .safetensors file (features, pids, camids)")
    extract.add_argument("overrides", nargs="*", help=RUN_OVERRIDES_HELP)
    extract.add_argument("--model", "--onnx", dest="model", metavar="FILE", help="a file from `reidkit export` "
                         "(.onnx, .xml, .engine, .pt): extract with its runtime, no PyTorch model")
    extract.set_defaults(func=cmd_extract)

    verify = commands.add_parser("verify", parents=[quiet], help="whether two images show the same person: their "
                                 "distance against the run's open-set threshold (and the pair head's probability)")
    verify.add_argument("image_a", help="first image file")
    verify.add_argument("image_b", help="second image file")
    verify.add_argument("--run", required=True, help="run folder written by `reidkit train`")
    verify.add_argument("--weights", help="a checkpoint to use instead of RUN/model.safetensors")
    verify.add_argument("--threshold", type=finite_float, help="same person below this distance (default: the run's "
                        "threshold for eval.open_set_fpr, in metrics.json)")
    verify.add_argument("overrides", nargs="*", help=RUN_OVERRIDES_HELP)
    verify.set_defaults(func=cmd_verify)

    index = commands.add_parser("index", parents=[quiet], help="embed a folder of gallery images into a searchable index")
    index.add_argument("--run", required=True, help="run folder whose model embeds the images")
    index.add_argument("--gallery", required=True, help="folder of gallery images (searched recursively)")
    index.add_argument("--out", help="index file (default RUN/index.safetensors), or for milvus-* a Milvus Lite "
                       "file FILE.db (default RUN/gallery.db) or server URI http://host:19530 (#name: the collection)")
    index.add_argument("--backend", default="exact", choices=["exact", "faiss-flat", "faiss-ivf", "faiss-hnsw",
                                                              "milvus-flat", "milvus-ivf", "milvus-hnsw"],
                       help="exact torch search, faiss (pip install \"reidkit[search]\") or a Milvus gallery that "
                            "add and delete change in place (pip install \"reidkit[milvus]\")")
    index.add_argument("--metric", choices=["cosine", "euclidean"], help="default: the run's eval.metric")
    index.add_argument("--nlist", type=int_in(1), help="faiss-ivf cells (default round(4·√N))")
    index.add_argument("--nprobe", type=int_in(1), help="faiss-ivf cells visited per query (default 8)")
    index.add_argument("--hnsw-m", type=int_in(2), help="faiss-hnsw neighbours per node (default 32)")
    index.add_argument("--ef-search", type=int_in(1), help="faiss-hnsw candidates per query (default 64)")
    index.set_defaults(func=cmd_index)

    search = commands.add_parser("search", parents=[quiet], help="rank the indexed gallery for query images")
    search.add_argument("--index", required=True, help="file written by `reidkit index`")
    search.add_argument("images", nargs="+", help="query image files")
    search.add_argument("--tracklet", action="store_true", help="the images are frames of one person: one query, "
                        "their features aggregated by the run's model.temporal")
    search.add_argument("--topk", type=int_in(1), default=10, help="results per query (default 10)")
    search.add_argument("--threshold", type=finite_float, help="same person below this distance (default: the "
                        "threshold of the index's run for eval.open_set_fpr, in metrics.json)")
    search.add_argument("--trust-features", action="store_true", help=TRUST_FEATURES_HELP)
    add_filter_arguments(search, "search only")
    search.set_defaults(func=cmd_search)

    delete = commands.add_parser("delete", parents=[quiet], help="retention: delete gallery items by id, camera "
                                 "and/or age (every criterion given must hold)")
    delete.add_argument("--index", required=True, help="gallery written by `reidkit index` (.safetensors, .db or "
                        "a Milvus URI)")
    delete.add_argument("--ids", type=int_in(0), nargs="+", help="item ids (as `reidkit search` prints them)")
    add_filter_arguments(delete, "delete only")
    delete.add_argument("--older-than", type=positive_days, metavar="DAYS",
                        help="items whose timestamp is more than DAYS days ago (same as --before now − DAYS)")
    delete.set_defaults(func=cmd_delete)

    report = commands.add_parser("report", parents=[quiet], help="write a self-contained HTML report of a run, or compare runs")
    report.add_argument("--run", required=True, help="run folder written by `reidkit train`")
    report.add_argument("--compare", nargs="+", metavar="RUN", help="more run folders: write a comparison instead")
    report.add_argument("--out", help="HTML file (default RUN/report.html, or RUN/compare.html with --compare)")
    report.set_defaults(func=cmd_report)

    rerank = commands.add_parser("rerank", parents=[quiet], help="k-reciprocal re-ranking of extracted query/gallery features, "
                                 "with metrics before and after")
    rerank.add_argument("--query", required=True, help="query feature file from `reidkit extract --split query`")
    rerank.add_argument("--gallery", required=True, help="gallery feature file from `reidkit extract --split gallery`")
    rerank.add_argument("--metric", choices=["euclidean", "cosine"],
                        help="distance that is re-ranked (default: the run's eval.metric, stored in the query "
                             "file by `reidkit extract`; euclidean for files without it)")
    rerank.add_argument("--k1", type=int, default=20, help="k-reciprocal neighbourhood size (default 20)")
    rerank.add_argument("--k2", type=int, default=6, help="local query expansion size, 1 = off (default 6)")
    rerank.add_argument("--lambda", dest="lambda_value", type=float, default=0.3,
                        help="weight of the original distance in [0, 1] (default 0.3)")
    rerank.add_argument("--junk", choices=["market", "none"], default="market",
                        help="junk rule of the evaluation (default market: same pid and camera removed)")
    rerank.add_argument("--out", help="save the [Q, G] float32 re-ranked distances as .npy")
    rerank.set_defaults(func=cmd_rerank)

    export = commands.add_parser("export", parents=[quiet], help="export a run's retrieval feature (ONNX, fp16, int8, "
                                 "OpenVINO, TensorRT, TorchScript), checked against PyTorch")
    export.add_argument("--run", required=True, help="run folder written by `reidkit train`")
    export.add_argument("--format", choices=FORMATS, default="onnx",
                        help="onnx (float32, default), onnx-fp16, onnx-int8 (static quantisation calibrated on "
                             "training images), openvino (IR for Intel CPUs, pip install \"reidkit[openvino]\"), "
                             "tensorrt (needs tensorrt and a CUDA GPU), torchscript")
    export.add_argument("--out", required=True, help="output file: .onnx (onnx*), .xml (openvino; its .bin is written "
                                                     "beside it), .engine (tensorrt), .pt (torchscript)")
    export.add_argument("--opset", type=int_in(9, 23), default=17, help="ONNX opset version, 9 to 23 (default 17; 18 and newer "
                                                               "need the onnxscript package)")
    export.add_argument("--parity-images", type=int_in(1), default=16,
                        help="query images of the parity check against PyTorch (default 16)")
    export.add_argument("--calibration-images", type=int_in(1), default=128,
                        help="training images that calibrate onnx-int8, evenly spaced over the training set "
                             "(default 128)")
    export.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="minmax",
                        help="how onnx-int8 sets activation ranges: minmax (observed range, default), percentile "
                             "(clips at the 99.999th percentile of |x|), entropy (onnxruntime's KL-divergence "
                             "search; on its 128-bin histogram it keeps the whole range, like minmax)")
    export.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                        help="onnx-int8 weights with one scale per output channel (default), or with "
                             "--no-per-channel one per tensor")
    export.add_argument("--min-cosine", type=fraction, metavar="X",
                        help="accept the file when its min cosine to PyTorch is at least X, 0 to 1, instead of the "
                             "format's bound (e.g. 0.98 for onnx-int8), after measuring its accuracy with "
                             "`reidkit eval --model`; max |Δ| bounds still apply")
    export.add_argument("--height", type=int_in(MIN_HEIGHT), help="input height (default: the run's data.height)")
    export.add_argument("--width", type=int_in(MIN_WIDTH), help="input width (default: the run's data.width)")
    export.add_argument("--weights", help="a checkpoint to use instead of RUN/model.safetensors")
    export.add_argument("overrides", nargs="*", help=RUN_OVERRIDES_HELP)
    export.set_defaults(func=cmd_export)

    serve = commands.add_parser("serve", parents=[quiet], help="web page and JSON API searching a gallery index by image")
    serve.add_argument("--index", required=True, help="gallery index written by `reidkit index`")
    serve.add_argument("--run", help="run folder of the model that made the index (needed to search by upload)")
    serve.add_argument("--queries", help="query features from `reidkit extract --split query` "
                                         "(default: the run's query split, embedded at start-up)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int_in(1, 65535), default=8000, help="port to listen on (default 8000)")
    serve.add_argument("--topk", type=int_in(1), default=10, help="gallery images per search (default 10)")
    serve.add_argument("--max-upload-bytes", type=int_in(1), default=5_000_000,
                       help="largest accepted image file in bytes (default 5000000)")
    serve.add_argument("--max-uploads", type=int_in(1), default=16, help="uploads held at once, a batch counting "
                       "as --max-batch; the next ones wait for a slot before their body is read (default 16; "
                       "bounds memory)")
    serve.add_argument("--max-waiting", type=int_in(0), default=256, help="uploads waiting for a slot (each at most "
                       "--body-timeout); more are answered 503 with Retry-After (default 256)")
    serve.add_argument("--max-decodes", type=int_in(1), default=2, help="images decoded at once, in worker threads "
                       "(default 2)")
    serve.add_argument("--max-batch", type=int_in(1), default=8, help="files per /search/batch, /search/tracklet or "
                       "/gallery request (default 8)")
    serve.add_argument("--body-timeout", type=positive_seconds, default=30.0,
                       help="seconds a request body may take to arrive; slower bodies are answered 408 (default 30)")
    serve.add_argument("--allow-add", action="store_true", help="enable POST /gallery: add images to the gallery "
                       "at run time (the index file is rewritten atomically)")
    serve.add_argument("--added-images", help="folder for images added at run time (default: INDEX_images beside "
                                              "the index file)")
    serve.add_argument("--trust-features", action="store_true", help=TRUST_FEATURES_HELP)
    serve.add_argument("--tokens", help="tokens file (`reidkit token add`): every request then needs a token with "
                       "the route's scope (search, write); required off loopback")
    serve.add_argument("--insecure-no-auth", action="store_true", help="allow a --host reachable from other "
                       "machines without --tokens (anyone who reaches the port can search and read images)")
    serve.add_argument("--audit-log", help="JSON-lines audit log of every request (default INDEX_audit.jsonl "
                       "beside the index)")
    serve.add_argument("--rate-limit", type=positive_seconds, default=50.0, metavar="PER_SECOND",
                       help="requests per second per token (per client address without tokens), bursts of 5x; "
                            "more get 429 with Retry-After (default 50)")
    serve.add_argument("--allow-delete", action="store_true", help="enable POST /gallery/delete (retention; the "
                       "write scope with --tokens)")
    serve.set_defaults(func=cmd_serve)

    token = commands.add_parser("token", parents=[quiet], help="API tokens of `reidkit serve --tokens`: add (prints "
                                "the secret once; the file keeps its SHA-256), remove, list")
    token.add_argument("action", choices=["add", "remove", "list"])
    token.add_argument("--tokens", required=True, help="tokens file (created by the first add)")
    token.add_argument("--id", help="the token's name, shown in the audit log (letters, digits, _ . -)")
    token.add_argument("--scopes", nargs="+", choices=["search", "write"], help="search: search and read images; "
                       "write: add and delete gallery items")
    token.add_argument("--days", type=positive_seconds, help="valid for this many days (default: until removed)")
    token.set_defaults(func=cmd_token)
    return parser


def user_message(error: Exception) -> str:
    """The message of `error`; for an error re-raised from a DataLoader worker (whose message embeds the
    worker's traceback), only the original message."""
    text = str(error)
    if "Traceback (most recent call last)" not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if last.startswith("reidkit.errors.") else last


def without_option(argv: list[str], option: str) -> list[str]:
    """`argv` without `option VALUE` / `option=VALUE`."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == option:
            skip = True
        elif not token.startswith(option + "="):
            kept.append(token)
    return kept


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in t and not t.startswith("-") for t in extra):
        args.overrides = [*args.overrides, *extra]  # key=value overrides after the options
    elif extra:
        parser.parse_args(argv)  # argparse's own message for the unrecognised arguments
    args.argv = argv
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past `ulimit -f` a write fails (EFBIG): one line, no core dump
    try:
        return args.func(args)
    except ReidkitError as error:
        print(f"reidkit: error: {user_message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reidkit: interrupted", file=sys.stderr)
        return 130
