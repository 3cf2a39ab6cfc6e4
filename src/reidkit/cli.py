"""The `reidkit` command line: synth, train, eval, extract, verify.

Each command loads its config, calls one library function and prints a short summary. Errors in the
user's input print one line (`reidkit: error: ...`) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reidkit.errors import ReidkitError

OVERRIDES_HELP = "config overrides as section.key=value, e.g. train.epochs=10 model.backbone=resnet18"


def cmd_synth(args: argparse.Namespace) -> int:
    from reidkit.data.synthetic import SyntheticSpec, generate_dataset

    spec = SyntheticSpec(identities=args.identities, cameras=args.cameras)
    counts = generate_dataset(args.out, spec, seed=args.seed, progress=not args.quiet)
    print(f"wrote synthetic data set to {args.out}: {json.dumps(counts)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from reidkit.config import load_config
    from reidkit.engine.trainer import describe_metrics, train

    config = load_config(args.config, args.overrides)
    metrics = train(config, args.out, progress=not args.quiet)
    print(f"run folder: {args.out}  {describe_metrics(metrics)}")
    return 0


def _open_run(args: argparse.Namespace):
    """(config, device, model) of the run folder `args.run` with `args.overrides` and `args.weights`."""
    from reidkit.engine.runs import load_run_config, load_run_model
    from reidkit.engine.trainer import resolve_device

    config = load_run_config(args.run, args.overrides)
    device = resolve_device(config.train.device)
    return config, device, load_run_model(args.run, config, args.weights).to(device)


def cmd_eval(args: argparse.Namespace) -> int:
    from reidkit.data.attributes import load_attributes
    from reidkit.data.build import build_dataset
    from reidkit.engine.evaluator import evaluate_model, write_pictures
    from reidkit.engine.trainer import describe_metrics

    config, device, model = _open_run(args)
    dataset, data = build_dataset(config.data, progress=not args.quiet), config.data
    attributes = load_attributes(data.dataset, data.root, data.attributes) if model.attribute_heads else None
    metrics, distmat = evaluate_model(model, dataset, config.eval, data.height, data.width, device,
                                      workers=data.workers, amp=config.train.amp, progress=not args.quiet,
                                      pair_feature=config.loss.verification.feature, attributes=attributes)
    out = Path(args.out or Path(args.run) / "eval")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_pictures(out, metrics, distmat, dataset, config.eval)
    print(f"{out}: {describe_metrics(metrics)}  ({metrics['num_valid_queries']} valid queries)")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from reidkit.data.build import build_dataset
    from reidkit.engine.features import extract_split

    config, device, model = _open_run(args)
    samples = getattr(build_dataset(config.data, progress=not args.quiet), args.split)
    features = extract_split(model, samples, config, device, args.out, progress=not args.quiet)
    print(f"wrote {features.shape[0]} × {features.shape[1]} {args.split} features to {args.out}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from reidkit.engine.features import image_outputs

    config, device, model = _open_run(args)
    if model.pair_head is None:
        raise ReidkitError(f"{args.run} has no pair head; train with loss.verification.weight > 0 to use verify")
    key = config.loss.verification.feature
    features = image_outputs(model, [args.image_a, args.image_b], config, device, (key,))[key].to(device)
    probability = float(model.verify(features[:1], features[1:]))
    print(f"P(same person) = {probability:.4f}  ({'same' if probability >= 0.5 else 'different'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reidkit", description="Person re-identification toolkit.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = commands.add_parser("synth", help="generate the synthetic multi-camera data set (Market-1501 layout)")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--identities", type=int, default=300, help="number of identities (half train)")
    synth.add_argument("--cameras", type=int, default=6, help="number of cameras")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    synth.set_defaults(func=cmd_synth)

    train = commands.add_parser("train", help="train a model and evaluate it; writes a run folder")
    train.add_argument("--config", help="YAML config (defaults: the BoT recipe)")
    train.add_argument("--out", required=True, help="run folder to write")
    train.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("eval", help="evaluate a trained run on its query/gallery sets")
    evaluate.add_argument("--run", required=True, help="run folder written by `reidkit train`")
    evaluate.add_argument("--weights", help="a checkpoint to use instead of RUN/model.safetensors")
    evaluate.add_argument("--out", help="folder for metrics and pictures (default RUN/eval)")
    evaluate.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    evaluate.set_defaults(func=cmd_eval)

    extract = commands.add_parser("extract", help="write features of a data set split to .safetensors")
    extract.add_argument("--run", required=True, help="run folder written by `reidkit train`")
    extract.add_argument("--split", choices=["query", "gallery", "train"], default="gallery")
    extract.add_argument("--weights", help="a checkpoint to use instead of RUN/model.safetensors")
    extract.add_argument("--out", required=True, help="output .safetensors file (features, pids, camids)")
    extract.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    extract.set_defaults(func=cmd_extract)

    verify = commands.add_parser("verify", help="probability that two images show the same person (pair head)")
    verify.add_argument("image_a", help="first image file")
    verify.add_argument("image_b", help="second image file")
    verify.add_argument("--run", required=True, help="run trained with loss.verification.weight > 0")
    verify.add_argument("--weights", help="a checkpoint to use instead of RUN/model.safetensors")
    verify.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    verify.set_defaults(func=cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ReidkitError as error:
        print(f"reidkit: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reidkit: interrupted", file=sys.stderr)
        return 130
