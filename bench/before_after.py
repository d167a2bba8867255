"""The same benchmarks on two source trees, side by side in one run: did a change keep tunelab's speed?

For each round, runs ``bench/overhead.py`` (tunelab's own cost per trial) and ``bench/search_device.py
--device cpu`` (a whole search on the Fashion-MNIST workload: trials and epochs trained in its budget) once
on each tree, alternating which tree goes first, with ``PYTHONPATH`` pointing at the tree's ``src``. The
benchmark scripts are this checkout's. Prints one JSON line per run, then a summary: per tree, the median
of each figure over the rounds, and after / before.

Usage (from the repository root; a tree is a checkout, e.g. ``git worktree add /tmp/before <commit>``)::

    python bench/before_after.py --before /tmp/before --after . --rounds 2 --search-budget 150
    python bench/before_after.py --before /tmp/before --after . --rounds 6 --no-search \
        --overhead-args=--tunelab-only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def _run(script: str, args: list[str], tree: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, script, *args], cwd=BENCH, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{script} on {tree} failed:\n{done.stdout}\n{done.stderr}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _figures(overhead: list[dict], search: list[dict]) -> dict[str, float]:
    """The figures compared: tunelab's ms per trial in each overhead case, and the search's work."""
    figures = {}
    for record in overhead:
        case = record["case"]
        # tunelab's, and plain Optuna's run beside it on the same machine (where drift shows)
        if case.startswith(("tunelab/", "optuna/")):
            figures[f"{case} ms/trial"] = record["ms_per_trial"]
        elif case.startswith("rss_growth"):
            figures["rss_growth_mb"] = record["growth_mb"]
    for run in search:
        figures.update(trials=run["trials"], epochs=run["epochs"], search_end_s=run["search_end_s"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout (its src/ is imported)")
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--search-budget", type=float, default=150.0)
    parser.add_argument("--overhead-args", default="", help="extra arguments for overhead.py, e.g. --quick")
    parser.add_argument("--no-search", action="store_true", help="overhead.py alone")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for round_index in range(args.rounds):
        order = list(trees) if round_index % 2 == 0 else list(reversed(trees))
        for name in order:
            overhead = _run("overhead.py", args.overhead_args.split(), trees[name])
            search_args = ["--device", "cpu", "--budget", str(args.search_budget)]
            search = [] if args.no_search else _run("search_device.py", search_args, trees[name])
            figures = _figures(overhead, search)
            runs[name].append(figures)
            print(json.dumps({"round": round_index, "tree": name, **figures}), flush=True)
    summary = {}
    for key in runs["before"][0]:
        before = statistics.median(r[key] for r in runs["before"])
        after = statistics.median(r[key] for r in runs["after"])
        summary[key] = {"before": before, "after": after, "after/before": round(after / before, 3)}
    print(json.dumps({"summary": summary}, indent=1), flush=True)


if __name__ == "__main__":
    main()
