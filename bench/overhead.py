"""tunelab's own cost per trial, side by side with plain Optuna, on a trivial objective (no training).

Prints one JSON line per case (each case runs ``--repeats`` times, plain Optuna and tunelab alternating; the
line gives the median run's ms per trial and every run's, since this machine's speed drifts by about 10%):

- ``optuna`` vs ``tunelab``, in memory and on SQLite (a file in a temporary directory), with TPE (Optuna's
  default TPESampler for plain Optuna; for tunelab, what ``make_sampler('tpe')`` returns: multivariate TPE
  modelling a bounded view of the history, ``BoundedTPESampler``) and with the random sampler, which
  isolates the framework's bookkeeping from TPE's model. (Optuna 5's default TPE is multivariate for one
  objective, as tunelab's, but models the whole history: its cost per trial grows with it.) The ``sampler``
  field names the sampler each case ran;
- ``rss_growth``: resident memory before and after a long in-memory tunelab study (random sampler, so the run
  measures what the study loop keeps per trial rather than TPE's time).

Usage::

    python bench/overhead.py            # 1000 trials per case, 3 runs each; 10,000 for the memory check
    python bench/overhead.py --quick    # 200 and 2,000
    python bench/overhead.py --trials 500 --rss-trials 5000
    python bench/overhead.py --tunelab-only  # tunelab's side alone (to compare two versions of tunelab)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import optuna

from tunelab.search import SearchSpace, make_sampler, run_study

SPACE = SearchSpace.from_dict(
    {"x": {"float": [-5.0, 5.0]}, "y": {"float": [-5.0, 5.0]}, "z": {"int": [-5, 5]}}
)


def tunelab_objective(handle) -> float:
    p = handle.params
    return p["x"] ** 2 + p["y"] ** 2 + p["z"] ** 2


def optuna_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5.0, 5.0)
    y = trial.suggest_float("y", -5.0, 5.0)
    z = trial.suggest_int("z", -5, 5)
    return x**2 + y**2 + z**2


def rss_mb() -> float:
    """Resident set size now (VmRSS), in MB; falls back to the peak from getrusage off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def describe(sampler: optuna.samplers.BaseSampler) -> str:
    bound = getattr(sampler, "max_history", None)
    return type(sampler).__name__ + (f"(max_history={bound})" if bound is not None else "")


def run_optuna(sampler_name: str, storage: str | None, n_trials: int) -> dict:
    sampler = (
        optuna.samplers.TPESampler(seed=0) if sampler_name == "tpe" else optuna.samplers.RandomSampler(seed=0)
    )
    start = time.perf_counter()
    study = optuna.create_study(storage=storage, sampler=sampler, study_name="bench")
    study.optimize(optuna_objective, n_trials=n_trials)
    elapsed = time.perf_counter() - start
    return {"elapsed_s": elapsed, "best": study.best_value, "sampler": describe(sampler)}


def run_tunelab(sampler_name: str, storage: str | None, n_trials: int) -> dict:
    sampler = make_sampler(sampler_name, seed=0, space=SPACE)  # what run_study(sampler=name) builds
    start = time.perf_counter()
    summary = run_study(tunelab_objective, SPACE, sampler=sampler, storage=storage, n_trials=n_trials, seed=0)
    elapsed = time.perf_counter() - start
    return {"elapsed_s": elapsed, "best": summary.best_value, "sampler": describe(sampler)}


def report(case: str, n_trials: int, results: list[dict]) -> None:
    """One JSON line: the median run's ms per trial (the figure to quote), and every run's."""
    per_trial = sorted(result["elapsed_s"] / n_trials * 1e3 for result in results)
    print(
        json.dumps(
            {
                "case": case,
                "sampler": results[0]["sampler"],
                "trials": n_trials,
                "ms_per_trial": round(statistics.median(per_trial), 3),
                "runs_ms_per_trial": [round(ms, 3) for ms in per_trial],
                "best": round(results[0]["best"], 6),
            }
        ),
        flush=True,
    )


def measure(n_trials: int, directory: Path, repeats: int, *, tunelab_only: bool = False) -> None:
    # Warm-up: the first SQLite study pays for importing SQLAlchemy and alembic; neither side should carry it.
    run_optuna("random", f"sqlite:///{directory / 'warmup.db'}", 2)
    run_tunelab("random", f"sqlite:///{directory / 'warmup2.db'}", 2)
    for sampler_name in ("tpe", "random"):
        for where in ("memory", "sqlite"):
            results: dict[str, list[dict]] = (
                {"tunelab": []} if tunelab_only else {"optuna": [], "tunelab": []}
            )
            for repeat in range(repeats):  # the two sides alternate, so a slow spell hits both
                for framework, runner in (("optuna", run_optuna), ("tunelab", run_tunelab)):
                    if framework not in results:
                        continue
                    name = f"{framework}-{sampler_name}-{repeat}.db"
                    storage = None if where == "memory" else f"sqlite:///{directory / name}"
                    results[framework].append(runner(sampler_name, storage, n_trials))
            for framework, runs in results.items():
                report(f"{framework}/{where}/{sampler_name}", n_trials, runs)


def measure_rss(n_trials: int) -> None:
    run_study(tunelab_objective, SPACE, sampler="random", n_trials=50, seed=0)  # warm caches and imports
    before = rss_mb()
    start = time.perf_counter()
    run_study(tunelab_objective, SPACE, sampler="random", n_trials=n_trials, seed=1)
    elapsed = time.perf_counter() - start
    after = rss_mb()
    print(
        json.dumps(
            {
                "case": "rss_growth/tunelab/memory/random",
                "trials": n_trials,
                "rss_before_mb": round(before, 1),
                "rss_after_mb": round(after, 1),
                "growth_mb": round(after - before, 1),
                "ms_per_trial": round(elapsed / n_trials * 1e3, 3),
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="200 trials per case and 2,000 for the memory check"
    )
    parser.add_argument("--trials", type=int, default=None, help="trials per timing case (default 1000)")
    parser.add_argument(
        "--rss-trials", type=int, default=None, help="trials for the memory check (default 10000)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per case, sides alternating; the median is reported"
    )
    parser.add_argument("--tunelab-only", action="store_true", help="skip plain Optuna's side")
    args = parser.parse_args()
    n_trials = args.trials or (200 if args.quick else 1000)
    n_rss = args.rss_trials or (2000 if args.quick else 10_000)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    measure_rss(n_rss)  # first, before the timing cases grow the heap that a later run would reuse
    with tempfile.TemporaryDirectory() as directory:
        measure(n_trials, Path(directory), args.repeats, tunelab_only=args.tunelab_only)


if __name__ == "__main__":
    main()
