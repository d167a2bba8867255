"""Search quality and cost of tunelab's TPE (a bounded view of the history) against full-history TPE.

Both samplers are built with the settings ``make_sampler('tpe', space=...)`` uses (multivariate TPE,
``group=True`` for a conditional space): ``full`` is Optuna's ``TPESampler``, ``bounded`` is what
``make_sampler`` returns (``BoundedTPESampler``). Each runs ``--trials`` trials of ``run_study`` in memory on
each test function, for each seed; the table gives the median over seeds of the best value found (all the
functions have their minimum at 0) and the mean cost per trial.

Test functions:

- ``quadratic``: a shifted quadratic in two floats and an int (optimum off the centre of the box);
- ``rosenbrock4``: Rosenbrock's valley in 4 dimensions, on [-2, 2]^4;
- ``conditional``: a categorical that decides which other parameter exists (``when``), plus a log-scaled
  float shared by every branch.

Usage::

    python bench/tpe_quality.py                       # 1000 trials, seeds 0-2 (about 3 minutes)
    python bench/tpe_quality.py --seeds 5 --trials 1000
    python bench/tpe_quality.py --functions quadratic --max-history 64 100

Prints one JSON line per run, then the table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna

from tunelab.search import SearchSpace, make_sampler, run_study
from tunelab.search._bounded_tpe import BoundedTPESampler


def _quadratic(p: dict[str, Any]) -> float:
    return (p["x"] - 1.3) ** 2 + (p["y"] + 2.1) ** 2 + (p["z"] - 2) ** 2


def _rosenbrock(p: dict[str, Any]) -> float:
    x = [p[f"x{i}"] for i in range(4)]
    return sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(3))


def _conditional(p: dict[str, Any]) -> float:
    shared = (math.log10(p["lr"]) + 2) ** 2  # best at lr = 1e-2
    if p["kind"] == "rbf":
        return shared + 10 * (p["gamma"] - 0.3) ** 2
    if p["kind"] == "poly":
        return shared + 0.5 + 0.2 * abs(p["degree"] - 3)
    return shared + 1.0


FUNCTIONS: dict[str, tuple[SearchSpace, Callable[[dict[str, Any]], float]]] = {
    "quadratic": (
        SearchSpace.from_dict(
            {"x": {"float": [-5.0, 5.0]}, "y": {"float": [-5.0, 5.0]}, "z": {"int": [-5, 5]}}
        ),
        _quadratic,
    ),
    "rosenbrock4": (SearchSpace.from_dict({f"x{i}": {"float": [-2.0, 2.0]} for i in range(4)}), _rosenbrock),
    "conditional": (
        SearchSpace.from_dict(
            {
                "kind": {"choice": ["linear", "rbf", "poly"]},
                "lr": {"float": [1e-4, 1.0], "log": True},
                "gamma": {"float": [0.0, 1.0], "when": {"kind": "rbf"}},
                "degree": {"int": [1, 5], "when": {"kind": "poly"}},
            }
        ),
        _conditional,
    ),
}


def full_history_tpe(space: SearchSpace, seed: int) -> optuna.samplers.TPESampler:
    """Optuna's TPE with the settings make_sampler('tpe') uses, modelling every trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=space.is_conditional)


def run_one(function: str, sampler_name: str, seed: int, n_trials: int, max_history: int | None) -> dict:
    space, f = FUNCTIONS[function]
    if sampler_name == "full":
        sampler: optuna.samplers.BaseSampler = full_history_tpe(space, seed)
    elif max_history is None:
        sampler = make_sampler("tpe", seed=seed, space=space)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = BoundedTPESampler(
                seed=seed, multivariate=True, group=space.is_conditional, max_history=max_history
            )
    start = time.perf_counter()
    summary = run_study(lambda handle: f(handle.params), space, sampler=sampler, n_trials=n_trials, seed=seed)
    elapsed = time.perf_counter() - start
    assert summary.best_value is not None
    return {
        "function": function,
        "sampler": sampler_name if max_history is None else f"{sampler_name}-{max_history}",
        "seed": seed,
        "trials": n_trials,
        "best": summary.best_value,
        "ms_per_trial": elapsed / n_trials * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=1000, help="trials per run (default 1000)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per function (default 3)")
    parser.add_argument("--functions", nargs="+", choices=sorted(FUNCTIONS), default=list(FUNCTIONS))
    parser.add_argument(
        "--max-history",
        type=int,
        nargs="+",
        default=None,
        help="bounded views to try (default: only make_sampler's own)",
    )
    parser.add_argument("--no-full", action="store_true", help="skip full-history TPE (the slow one)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    variants: list[tuple[str, int | None]] = [] if args.no_full else [("full", None)]
    variants += [("bounded", m) for m in args.max_history] if args.max_history else [("bounded", None)]
    rows = []
    for function in args.functions:
        for seed in range(args.seeds):
            for name, max_history in variants:
                row = run_one(function, name, seed, args.trials, max_history)
                rows.append(row)
                print(
                    json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}),
                    flush=True,
                )
    print()
    print(f"{'function':<12} {'sampler':<12} {'median best':>12} {'worst best':>12} {'ms/trial':>9}")
    for function in args.functions:
        for sampler in dict.fromkeys(r["sampler"] for r in rows):
            mine = [r for r in rows if r["function"] == function and r["sampler"] == sampler]
            bests = [r["best"] for r in mine]
            cost = statistics.mean(r["ms_per_trial"] for r in mine)
            median, worst = statistics.median(bests), max(bests)
            print(f"{function:<12} {sampler:<12} {median:>12.3g} {worst:>12.3g} {cost:>9.2f}")


if __name__ == "__main__":
    main()
