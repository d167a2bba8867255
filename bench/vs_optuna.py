"""tunelab against the strongest plain-Optuna baseline we could write, same workload, same wall-time budget.

Workload (fixed by the issue): Fashion-MNIST, a stratified 50k train / 10k validation split of the 60k
training images (the same rows on both sides, checked before the run), the official 10k test images. An MLP
with learning rate log-uniform [1e-4, 3e-2], weight decay log-uniform [1e-6, 1e-2], 1-3 hidden layers of width
{64, 128, 256, 512} each, dropout [0, 0.5], batch size {64, 128, 256}, optimizer Adam or SGD with Nesterov
momentum 0.9; at most 10 epochs; validation accuracy is the metric.

- **baseline** (``_baseline_optuna.py``): multivariate TPE + ``HyperbandPruner(1, 10)``, a tight tensor loop,
  two single-thread worker processes on one Optuna journal file. Its whole budget is search; the best
  trial's own weights are then tested once (after the budget, not counted).
- **tunelab**: ``tune_experiment`` with the same space, TPE and Hyperband (min 1 epoch, η = 3) and the same
  budget, with ``--workers 2`` (``--tunelab-workers``; each single-thread process packs and trains its own
  fused populations, as the baseline runs two single-thread trials). tunelab splits the budget itself: 80%
  search (running trials stop within a minibatch once it is spent), then the top 3 re-trained with 2
  fresh seeds where a run and the refit still fit, a refit on train + validation, one test evaluation and the
  export, all inside the budget (the refit may run past it).

Both clocks start just before the side begins (process start-up and reading the data count). For each side
the JSON holds every finished trial (start, end, state, value, epochs, params) and the best-so-far validation
accuracy curve, ``[[seconds, best], ...]`` (draw as a step plot up to ``search_end_s``), so the plot can be
made later. The comparison: the time at which each side's best-so-far first reached the other's final search
best (the best among its trials completed within the budget). The issue's goal: tunelab reaches the
baseline's best within a third of the budget.

    python bench/vs_optuna.py                  # 300 s per side, baseline first (about 11 minutes)
    python bench/vs_optuna.py --quick          # smoke test: 30 s per side, at most 2 epochs
    python bench/vs_optuna.py --order tunelab-first

Prints one JSON line per side, a comparison line and a Markdown snippet for BENCHMARKS.md; writes
``bench/results/vs_optuna.json`` (``vs_optuna_quick.json`` with ``--quick``) and its plot, ``.png``
(``python bench/vs_optuna.py --plot bench/results/vs_optuna.json`` redraws it from the JSON alone).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from _baseline_optuna import FASHION_MNIST, N_VALIDATION, WIDTHS, run_baseline, split_rows
from _plot_vs_optuna import plot_result
from _timeline import best_at, best_so_far, time_to_reach, trial_records

RESULTS = Path(__file__).resolve().parent / "results"
N_TRAIN_IMAGES = 60_000
GOAL_FRACTION = 1 / 3  # tunelab should reach the baseline's final best within this share of the budget
SIDES = ("baseline", "tunelab")


# ---------------------------------------------------------------------------------------------- the sides


def tunelab_spec(budget_s: float, *, max_epochs: int, seed: int) -> dict[str, Any]:
    """The workload as a tunelab spec (``search.space`` syntax: ``tunelab.search.space``)."""
    return {
        "name": "vs-optuna",
        "seed": seed,
        "data": {
            "source": "fashion-mnist",
            "split": {"method": "holdout", "val_fraction": N_VALIDATION / N_TRAIN_IMAGES},
        },
        "model": {"type": "mlp"},
        "train": {"epochs": max_epochs, "momentum": 0.9, "seed": seed, "device": "cpu"},
        "search": {
            "space": {
                "train.lr": {"float": [1e-4, 3e-2], "log": True},
                "train.weight_decay": {"float": [1e-6, 1e-2], "log": True},
                "_depth": {"int": [1, 3]},
                "model.hidden": {"per_layer": "_depth", "choice": list(WIDTHS)},
                "model.dropout": {"float": [0.0, 0.5]},
                "train.batch_size": {"choice": [64, 128, 256]},
                "train.optimizer": {"choice": ["adam", "nesterov"]},
            },
            "metric": "val_accuracy",
            "sampler": "tpe",
            "scheduler": {"name": "hyperband", "min_epochs": 1, "reduction_factor": 3},
            "budget": budget_s,
        },
    }


def run_tunelab(
    budget_s: float, *, work_dir: Path, max_epochs: int, seed: int, workers: int = 2
) -> dict[str, Any]:
    """Run ``tune_experiment`` on the workload; the same record shape as ``run_baseline``."""
    # Imported here: the baseline's spawned workers re-import this module and must not pay for tunelab.
    from tunelab.errors import TrainingError
    from tunelab.spec import parse_spec
    from tunelab.tune import tune_experiment

    spec = parse_spec(tunelab_spec(budget_s, max_epochs=max_epochs, seed=seed), source="vs_optuna's spec")
    out_dir = work_dir / "tunelab"
    shutil.rmtree(out_dir, ignore_errors=True)
    started = time.time()
    summary: dict[str, Any] | None = None
    error = None
    try:
        summary = tune_experiment(
            spec, out_dir=out_dir, workers=workers, log=_logger("tunelab", started)
        ).summary
    except TrainingError as err:  # no trial completed within the budget
        error = str(err)
    finished = time.time()
    storage = f"sqlite:///{(out_dir / 'study.db').resolve()}"
    study = optuna.load_study(study_name=spec.name, storage=storage)
    return {
        "started": started,
        "seconds": finished - started,
        "trials": study.get_trials(deepcopy=False),
        "test_accuracy": None if summary is None else summary["test_metrics"].get("accuracy"),
        "summary": summary,
        "error": error,
    }


def _logger(side: str, started: float) -> Any:
    def say(message: str) -> None:
        print(f"[{side} {time.time() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    return say


def check_same_split(seed: int) -> None:
    """Fail before any training if the baseline's validation rows are not tunelab's."""
    from tunelab.data import SplitSpec, split_indices

    with gzip.open(FASHION_MNIST / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    split = SplitSpec(method="holdout", val_fraction=N_VALIDATION / N_TRAIN_IMAGES)
    theirs = split_indices(len(labels), split, seed=seed, labels=labels, has_test_part=True)
    train, val = split_rows(labels, seed=seed)
    if not (np.array_equal(train, theirs.train) and np.array_equal(val, theirs.val)):
        raise SystemExit(
            "the baseline's 50k / 10k split differs from tunelab's for the same seed, so validation "
            "accuracies would not be comparable. Make _baseline_optuna.split_rows match tunelab.data."
        )


# ------------------------------------------------------------------------------------------------ records


BUDGET_COUNTS = {
    "baseline": "the whole budget is search: 2 worker processes (spawn, import, data loading included); a "
    "trial still running at the deadline is stopped (state 'cut'); the test evaluation of the best trial's "
    "kept weights comes after the budget and is not counted",
    "tunelab": "everything: data loading, search (80% of the budget; running trials stop within a "
    "minibatch once it is spent and a trial has completed), re-evaluation of the top 3 with 2 fresh seeds "
    "where a run and the refit still fit, refit on train + validation, test and export; only the search is "
    "on the curve; the refit may end after the budget",
}
TEST_MODEL = {
    "baseline": "the best search trial's own weights (trained on the 50k training rows), no refit",
    "tunelab": "the re-evaluation winner, refit on train + validation (60k rows) for its median best epoch",
}


def side_record(side: str, raw: dict[str, Any], *, budget_s: float) -> dict[str, Any]:
    """JSON-ready summary of one side: counts, the best-so-far curve, the final best, the test accuracy."""
    records = trial_records(raw["trials"], started=raw["started"])
    curve = best_so_far(records)
    final_best = best_at(curve, budget_s)
    counts = {state: sum(r["state"] == state for r in records) for state in ("complete", "pruned", "cut")}
    counts["failed"] = sum(r["state"] == "failed" for r in records)
    search_end = max((r["end_s"] for r in records), default=0.0)
    record: dict[str, Any] = {
        "side": side,
        "trials": counts,
        "final_best": final_best,
        "final_best_at_s": time_to_reach(curve, final_best),
        "test_accuracy": raw["test_accuracy"],
        "first_trial_start_s": min((r["start_s"] for r in records), default=None),
        "search_end_s": round(search_end, 3),
        "total_s": round(raw["seconds"], 3),
        "epochs_reported_in_search": sum(r["epochs"] for r in records),
        "budget_counts": BUDGET_COUNTS[side],
        "test_model": TEST_MODEL[side],
        "curve": curve,
    }
    summary = raw.get("summary")
    if summary is not None:
        winner = summary["candidates"][0]
        record["reevaluated"] = {
            "trial": winner["trial"],
            "mean": winner["mean"],
            "std": winner["std"],
            "n": winner["n"],
        }
        record["best_params"] = summary["best_params"]
    elif records and curve:
        best = max((r for r in records if r["state"] == "complete"), key=lambda r: r["value"])
        record["best_params"] = best["params"]
    if raw.get("error"):
        record["error"] = raw["error"]
    record["trial_log"] = records
    return record


def compare(sides: dict[str, dict[str, Any]], *, budget_s: float) -> dict[str, Any]:
    """When each side first reached the other's final best, and whether the issue's goal is met."""
    base, tune = sides["baseline"], sides["tunelab"]
    tunelab_reach = time_to_reach(tune["curve"], base["final_best"])
    baseline_reach = time_to_reach(base["curve"], tune["final_best"])
    fraction = None if tunelab_reach is None else round(tunelab_reach / budget_s, 4)
    return {
        "side": "comparison",
        "budget_s": budget_s,
        "tunelab_reaches_baseline_best_s": tunelab_reach,
        "baseline_reaches_tunelab_best_s": baseline_reach,
        "tunelab_reach_fraction_of_budget": fraction,
        "goal_fraction": round(GOAL_FRACTION, 4),
        "goal_met": fraction is not None and fraction <= GOAL_FRACTION,
        "best_at_goal_time": {
            name: best_at(sides[name]["curve"], budget_s * GOAL_FRACTION) for name in SIDES
        },
        "final_best_difference": None
        if base["final_best"] is None or tune["final_best"] is None
        else round(tune["final_best"] - base["final_best"], 5),
        "test_accuracy_difference": None
        if base["test_accuracy"] is None or tune["test_accuracy"] is None
        else round(tune["test_accuracy"] - base["test_accuracy"], 5),
    }


def markdown(result: dict[str, Any]) -> str:
    """A snippet for BENCHMARKS.md."""
    base, tune, cmp = result["baseline"], result["tunelab"], result["comparison"]
    budget = cmp["budget_s"]

    def num(value: Any, fmt: str = ".4f") -> str:
        return "—" if value is None else format(value, fmt)

    def secs(value: Any) -> str:
        return "never" if value is None else f"{value:.1f} s"

    def trials(side: dict[str, Any]) -> str:
        t = side["trials"]
        cut = f" ({t['cut']} cut at the deadline)" if t["cut"] else ""
        return f"{t['complete']} / {t['pruned']}{cut}"

    env = result["environment"]
    verdict = (
        f"tunelab reached the baseline's {budget:.0f} s best after "
        f"{secs(cmp['tunelab_reaches_baseline_best_s'])}"
        + (
            f" = {cmp['tunelab_reach_fraction_of_budget']:.2f} of the budget "
            f"(goal ≤ {GOAL_FRACTION:.2f}: {'met' if cmp['goal_met'] else 'not met'})."
            if cmp["tunelab_reach_fraction_of_budget"] is not None
            else f" (goal: within {GOAL_FRACTION:.2f} of the budget: not met)."
        )
    )
    rows = [
        ("trials complete / pruned", trials(base), trials(tune)),
        ("epochs reported in the search", str(base["epochs_reported_in_search"]),
         str(tune["epochs_reported_in_search"])),
        (f"best validation accuracy (search, by {budget:.0f} s)", num(base["final_best"]),
         num(tune["final_best"])),
        ("… first reached at", secs(base["final_best_at_s"]), secs(tune["final_best_at_s"])),
        ("reached the other side's best at", secs(cmp["baseline_reaches_tunelab_best_s"]),
         secs(cmp["tunelab_reaches_baseline_best_s"])),
        (f"best at {budget * GOAL_FRACTION:.0f} s", num(cmp["best_at_goal_time"]["baseline"]),
         num(cmp["best_at_goal_time"]["tunelab"])),
        ("test accuracy of the chosen model", num(base["test_accuracy"]), num(tune["test_accuracy"])),
        ("first trial started at", secs(base["first_trial_start_s"]), secs(tune["first_trial_start_s"])),
        ("load average before / after", "{:.1f} / {:.1f}".format(*base["load_average"]),
         "{:.1f} / {:.1f}".format(*tune["load_average"])),
        ("search ended / side ended", f"{base['search_end_s']:.0f} s / {base['total_s']:.0f} s",
         f"{tune['search_end_s']:.0f} s / {tune['total_s']:.0f} s"),
    ]  # fmt: skip
    lines = [
        f"### tunelab vs plain Optuna: Fashion-MNIST MLP, {budget:.0f} s each",
        "",
        f"`{result['command']}` ({env['date']}, {env['cpus']} CPUs, torch {env['torch']}, "
        f"optuna {env['optuna']}, order: {result['order']}, at most {result['max_epochs']} epochs)",
        "",
        "| | plain Optuna (TPE + Hyperband, 2 × 1-thread workers) | tunelab |",
        "| --- | --- | --- |",
        *(f"| {name} | {left} | {right} |" for name, left, right in rows),
        "",
        verdict,
        "",
        f"Budget. Baseline: {BUDGET_COUNTS['baseline']}. tunelab: {BUDGET_COUNTS['tunelab']}.",
        f"Test model. Baseline: {TEST_MODEL['baseline']}. tunelab: {TEST_MODEL['tunelab']}.",
        "Validation accuracy on 10k images has a standard error of about 0.3 points; smaller gaps are noise.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- main


def main() -> None:
    # tunelab's side runs in this process: flush denormals before any torch work, as the `tunelab` command
    # does (the baseline's workers do the same).
    torch.set_flush_denormal(True)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=None, help="seconds per side (default 300)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 30 s per side, at most 2 epochs")
    parser.add_argument("--max-epochs", type=int, default=None, help="epochs per trial (default 10)")
    parser.add_argument("--order", choices=["baseline-first", "tunelab-first"], default="baseline-first")
    parser.add_argument("--seed", type=int, default=0, help="data split and sampler seed")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file to write")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep both studies here (default: temp)")
    parser.add_argument(
        "--plot", type=Path, default=None, metavar="JSON", help="only draw JSON (a past run) as a PNG"
    )
    parser.add_argument(
        "--tunelab-workers",
        type=int,
        default=2,
        help="tunelab's --workers (default 2: one single-thread process per core, each training its own "
        "fused populations; 1: one process with two threads, as before the third session)",
    )
    args = parser.parse_args()
    if args.plot is not None:
        print(f"wrote {plot_result(args.plot)}")
        return
    budget_s = args.budget or (30.0 if args.quick else 300.0)
    max_epochs = args.max_epochs or (2 if args.quick else 10)
    out = args.out or RESULTS / ("vs_optuna_quick.json" if args.quick else "vs_optuna.json")
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        raise SystemExit(
            f"Fashion-MNIST is not in {FASHION_MNIST}; install it with "
            "`sudo apt-get install -y dataset-fashion-mnist`."
        )
    check_same_split(args.seed)

    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="vs_optuna_"))
    runners = {
        "baseline": lambda: run_baseline(
            budget_s, work_dir=work_dir / "baseline", max_epochs=max_epochs, seed=args.seed
        ),
        "tunelab": lambda: run_tunelab(
            budget_s, work_dir=work_dir, max_epochs=max_epochs, seed=args.seed, workers=args.tunelab_workers
        ),
    }
    order = list(SIDES) if args.order == "baseline-first" else list(SIDES)[::-1]
    sides: dict[str, dict[str, Any]] = {}
    try:
        for name in order:
            load_before = os.getloadavg()[0]
            if load_before > 0.5:
                print(
                    f"warning: the 1-minute load average is {load_before:.1f} before the {name} run; other "
                    "processes will slow it (2-thread torch suffers most). Time it on a quiet machine.",
                    file=sys.stderr,
                )
            print(f"running {name} for {budget_s:.0f} s ...", file=sys.stderr, flush=True)
            sides[name] = side_record(name, runners[name](), budget_s=budget_s)
            sides[name]["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            brief = {k: v for k, v in sides[name].items() if k != "trial_log"}
            print(json.dumps(brief, default=str), flush=True)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)

    comparison = compare(sides, budget_s=budget_s)
    print(json.dumps(comparison), flush=True)
    result = {
        "bench": "vs_optuna",
        "command": "python bench/vs_optuna.py " + shlex.join(sys.argv[1:]),
        "budget_s": budget_s,
        "max_epochs": max_epochs,
        "order": args.order,
        "seed": args.seed,
        "environment": {
            "date": datetime.date.today().isoformat(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "optuna": optuna.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "plot": "step plot of each side's curve ([seconds, best-so-far]) with where='post', extended to "
        "search_end_s; trial_log holds every finished trial",
        **sides,
        "comparison": comparison,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    print(f"wrote {plot_result(out)}", file=sys.stderr)
    print(markdown(result))


if __name__ == "__main__":
    main()
