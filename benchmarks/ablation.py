"""Loss-recipe ablation: every recipe of ``configs/recipes/`` trained with the same budget and seeds.

Run: ``python benchmarks/ablation.py --seeds 0 1 --out runs/ablation [--recipes bot ide ...] [--epochs N]
[--identities N] [--set key=value ...]``.

Each (recipe, seed) pair is trained in this process with ``reidkit.engine.trainer.train`` into
``OUT/<recipe>/seed<seed>/`` (a normal run folder). Afterwards:

- ``OUT/results.json``: the budget (the overrides shared by every run) and one record per finished run
  (rank-1/5/10, mAP, mINP, pair-head re-scored metrics when present, wall seconds of the whole run:
  training, evaluations and the run folder's report);
- ``OUT/table.md``: per recipe, rank-1 / mAP / mINP as mean ± sample standard deviation over the seeds
  (no ± with one seed) and the mean wall time, in the order the recipes were asked for;
- ``OUT/ablation.png``: mAP mean ± std per recipe as a bar chart.

Resuming: pairs already in ``results.json`` are skipped, so an interrupted ablation continues where it
stopped (an unfinished run folder is removed and that run retrained, so every time is a whole run).
``results.json`` belongs to one budget: asking for other epochs, identities or ``--set`` values with the
same ``--out`` is refused. ``--epochs`` keeps each recipe's warm-up epochs; add
``--set train.warmup_epochs=0`` for budgets shorter than the warm-up.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from reidkit.config import load_config
from reidkit.engine.evaluation import eval_record
from reidkit.engine.trainer import train
from reidkit.errors import ReidkitError
from reidkit.outputs import write_file, write_json, write_text

RECIPES_DIR = Path(__file__).resolve().parent.parent / "configs" / "recipes"
METRICS = (("rank1", "rank-1"), ("mAP", "mAP"), ("mINP", "mINP"))


def available_recipes(recipes_dir: Path = RECIPES_DIR) -> list[str]:
    """Names of the recipe files (``<name>.yaml``), sorted."""
    return sorted(path.stem for path in recipes_dir.glob("*.yaml"))


def budget_overrides(epochs: int | None, identities: int | None, extra: list[str]) -> list[str]:
    """The ``key=value`` overrides every run gets: epochs, synthetic set size (own data folder), then `extra`."""
    overrides = []
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    if identities is not None:  # a set of another size in its own folder: an existing one is never reused
        overrides += [f"data.synthetic_identities={identities}", f"data.root=data/synthetic_{identities}ids"]
    return overrides + list(extra)


def load_results(path: Path, budget: list[str]) -> list[dict]:
    """The run records of `path` (none when missing).

    Raises:
        ReidkitError: the file was written for another budget, or is not an ablation results file.
    """
    if not path.is_file():
        return []
    try:
        saved = json.loads(path.read_text())
        saved_budget, runs = saved["budget"], saved["runs"]
    except (ValueError, KeyError, TypeError) as error:
        raise ReidkitError(f"{path} is not an ablation results file ({error}); choose another --out") from error
    if saved_budget != budget:
        raise ReidkitError(f"{path} holds runs with the budget {saved_budget}, not {budget}; use the same "
                           "--epochs/--identities/--set or choose another --out")
    return runs


def save_results(path: Path, budget: list[str], runs: list[dict]) -> None:
    """Write `results.json` atomically (a kill or a full disk mid-write leaves the previous file)."""
    write_json(path, {"budget": budget, "runs": runs})


def run_one(recipe: str, seed: int, out: Path, budget: list[str], recipes_dir: Path = RECIPES_DIR,
            log=print) -> dict:
    """Train `recipe` with `seed` into ``out/<recipe>/seed<seed>`` and return its result record."""
    config = load_config(recipes_dir / f"{recipe}.yaml", budget + [f"train.seed={seed}"])
    run_dir = out / recipe / f"seed{seed}"
    if run_dir.exists():  # not in results.json, so unfinished: start it again
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    metrics = train(config, run_dir, progress=False, log=log)
    seconds = time.perf_counter() - start
    return {"recipe": recipe, "seed": seed, **eval_record(metrics), "seconds": round(seconds, 2),
            "run_dir": str(run_dir)}


def summarize(runs: list[dict], recipes: list[str]) -> list[dict]:
    """Per recipe of `recipes` with at least one run: ``{recipe, seeds, <metric>: (mean, std), seconds}``;
    std is the sample standard deviation over seeds (0 with one seed)."""
    rows = []
    for recipe in recipes:
        mine = [run for run in runs if run["recipe"] == recipe]
        if not mine:
            continue
        row = {"recipe": recipe, "seeds": sorted(run["seed"] for run in mine),
               "seconds": statistics.fmean(run["seconds"] for run in mine)}
        for key, _ in METRICS:
            values = [run[key] for run in mine]
            row[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """The summary rows as a Markdown table (metrics in percent)."""
    def cell(mean: float, std: float, count: int) -> str:
        return f"{100 * mean:.1f} ± {100 * std:.1f}" if count > 1 else f"{100 * mean:.1f}"

    header = "| recipe | seeds | " + " | ".join(f"{label} (%)" for _, label in METRICS) + " | time (s) |"
    lines = [header, "|" + "---|" * (len(METRICS) + 3)]
    for row in rows:
        count = len(row["seeds"])
        metrics = " | ".join(cell(*row[key], count) for key, _ in METRICS)
        seeds = " ".join(map(str, row["seeds"]))
        lines.append(f"| {row['recipe']} | {seeds} | {metrics} | {row['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def plot_map(rows: list[dict], path: Path) -> Path:
    """Bar chart of mAP (%) mean ± std per recipe, written as a PNG (matplotlib, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(6.0, 0.55 * len(rows) + 2), 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    positions = range(len(rows))
    axes.bar(positions, [100 * row["mAP"][0] for row in rows], yerr=[100 * row["mAP"][1] for row in rows],
             capsize=3, color="#4c72b0")
    axes.set_xticks(list(positions), [row["recipe"] for row in rows], rotation=45, ha="right")
    axes.set(ylabel="mAP (%)", title="Loss recipes: mAP, mean ± std over seeds")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return write_file(path, lambda temporary: figure.savefig(temporary, format="png"))


def run_ablation(recipes: list[str], seeds: list[int], out: Path, budget: list[str],
                 recipes_dir: Path = RECIPES_DIR, verbose: bool = False, log=print) -> tuple[list[dict], list[str]]:
    """Train every missing (recipe, seed) pair, then write results.json, table.md and ablation.png.

    Returns:
        (summary rows as `summarize` gives them, failures as "recipe seed N: message").

    Raises:
        ReidkitError: an unknown recipe, a budget override the configs reject, or a results.json of another
            budget.
    """
    unknown = sorted(set(recipes) - set(available_recipes(recipes_dir)))
    if unknown:
        raise ReidkitError(f"unknown recipes {unknown}; choose from {available_recipes(recipes_dir)}")
    for recipe in recipes:  # a bad --set value fails here, before any training
        load_config(recipes_dir / f"{recipe}.yaml", budget)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    runs = load_results(results_path, budget)
    done = {(run["recipe"], run["seed"]) for run in runs}
    failures = []
    for recipe in recipes:
        for seed in seeds:
            if (recipe, seed) in done:
                continue
            prefix = f"[{recipe} seed {seed}]"
            try:
                record = run_one(recipe, seed, out, budget, recipes_dir,
                                 log=(lambda *a: log(prefix, *a)) if verbose else (lambda *a: None))
            except ReidkitError as error:  # e.g. a diverging loss: report it, go on with the others
                failures.append(f"{recipe} seed {seed}: {error}")
                log(f"{prefix} failed: {error}")
                continue
            runs.append(record)
            save_results(results_path, budget, runs)
            log(f"{prefix} rank-1 {record['rank1']:.1%}  mAP {record['mAP']:.1%}  mINP {record['mINP']:.1%}  "
                f"{record['seconds']:.0f} s")
    rows = summarize(runs, recipes)
    budget_text = ", ".join(budget) if budget else "each recipe's own"
    table = format_table(rows)
    write_text(out / "table.md", f"Loss recipes on the same budget ({budget_text}); seeds {seeds}; "
                                 f"mean ± std over seeds.\n\n{table}")
    if rows:
        plot_map(rows, out / "ablation.png")
    return rows, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--recipes", nargs="+", default=None, help="recipe names (default: every recipe)")
    parser.add_argument("--epochs", type=int, default=None, help="override every recipe's train.epochs")
    parser.add_argument("--identities", type=int, default=None, help="synthetic identities (own data folder)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides for every run")
    parser.add_argument("--recipes-dir", type=Path, default=RECIPES_DIR)
    parser.add_argument("--verbose", action="store_true", help="show each run's training log")
    args = parser.parse_args(argv)
    # by default the loss recipes; the distillation recipes need a teacher run (ask for them with
    # --recipes distill_... --set model.teacher=RUN)
    recipes = args.recipes or [name for name in available_recipes(args.recipes_dir) if not name.startswith("distill_")]
    budget = budget_overrides(args.epochs, args.identities, args.set)
    try:
        rows, failures = run_ablation(recipes, args.seeds, args.out, budget, args.recipes_dir, args.verbose)
    except ReidkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(rows), end="")
    print(f"results: {args.out / 'results.json'}, table: {args.out / 'table.md'}, chart: {args.out / 'ablation.png'}")
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
