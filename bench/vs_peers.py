"""A fair race on one workload: tunelab, the plain-Optuna baseline and Ray Tune, several seeds per side.

Workload (``vs_optuna.py``'s, fixed by issue #3): the Fashion-MNIST MLP, a stratified 50k / 10k split (the
same rows on every side), the official 10k test images, at most 10 epochs a trial, validation accuracy.

- **tunelab**: ``tune_experiment`` with TPE and Hyperband, ``--workers 2`` (``vs_optuna.run_tunelab``); the
  budget holds everything (search, re-evaluation, refit, test, export).
- **optuna**: the strongest plain-Optuna baseline we wrote (``_baseline_optuna``: multivariate TPE +
  Hyperband, two single-thread workers on a journal file); its best trial's own weights are tested.
- **ray**: Ray Tune, ASHA + OptunaSearch, 2 trials x 1 thread, reused actors (``_ray_side``), the
  baseline's training loop; its best trial's own weights are tested.

Per side and seed: the time its best-so-far validation accuracy (complete trials, at their end) first
reached 0.87 and 0.88, its best at 100 s and at the budget, and the delivered model's test accuracy. Reported
per side as the median and range over the seeds. The sides run one after another, their order rotated by
seed, each with the machine to itself; the load average is recorded.

Ray listens on every address by default: this script re-runs itself in a private network namespace with only
loopback up (``unshare -n``, as root) whenever the Ray side runs; Ray's usage statistics are off.

    python bench/vs_peers.py                            # 300 s per side, seeds 0 1 2 (about 50 minutes)
    python bench/vs_peers.py --quick                    # 30 s per side, one seed, at most 2 epochs
    python bench/vs_peers.py --sides tunelab optuna     # without Ray

Writes ``bench/results/vs_peers.json`` and prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from _baseline_optuna import run_baseline
from _timeline import best_at, best_so_far, time_to_reach, trial_records
from vs_optuna import check_same_split, run_tunelab

RESULTS = Path(__file__).resolve().parent / "results"
SIDES = ("tunelab", "optuna", "ray")
TARGETS = (0.87, 0.88)
EARLY_S = 100.0
_ISOLATED = "TUNELAB_BENCH_ISOLATED"


def isolate(argv: list[str]) -> None:
    """Re-run this script in a network namespace of its own with only loopback (Ray binds every address)."""
    if os.environ.get(_ISOLATED) or set(os.listdir("/sys/class/net")) <= {"lo"}:
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        raise SystemExit(
            "the Ray side must run without network access beyond loopback: run this as root (it re-runs "
            "itself under `unshare -n`), or leave Ray out with --sides tunelab optuna."
        )
    inner = f"ip link set lo up && exec {shlex.join([sys.executable, *argv])}"
    env = {**os.environ, _ISOLATED: "1", "RAY_USAGE_STATS_ENABLED": "0"}
    raise SystemExit(subprocess.run(["unshare", "-n", "sh", "-c", inner], env=env, check=False).returncode)


def run_side(side: str, budget_s: float, *, work_dir: Path, max_epochs: int, seed: int) -> dict[str, Any]:
    """One side's raw record: ``started``, ``seconds``, ``records`` (one per finished trial), ``test``."""
    if side == "ray":
        from _ray_side import run_ray

        raw = run_ray(budget_s, work_dir=work_dir / "ray", max_epochs=max_epochs, seed=seed)
        return {**raw, "records": raw["trials"]}
    if side == "optuna":
        raw = run_baseline(budget_s, work_dir=work_dir / "optuna", max_epochs=max_epochs, seed=seed)
    else:
        raw = run_tunelab(budget_s, work_dir=work_dir, max_epochs=max_epochs, seed=seed, workers=2)
    return {**raw, "records": trial_records(raw["trials"], started=raw["started"])}


def figures(raw: dict[str, Any], budget_s: float) -> dict[str, Any]:
    curve = best_so_far(raw["records"])
    return {
        **{f"t_{target}": time_to_reach(curve, target) for target in TARGETS},
        f"best_at_{EARLY_S:.0f}s": best_at(curve, EARLY_S),
        "best_at_budget": best_at(curve, budget_s),
        "test_accuracy": raw["test_accuracy"],
        "trials_complete": sum(r["state"] == "complete" for r in raw["records"]),
        "trials_finished": len(raw["records"]),
        "seconds": round(raw["seconds"], 1),
        "curve": curve,
    }


def aggregate(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Median and range over seeds. A time never reached counts as infinite, a best never had as minus
    infinite; a median that is one of those is None (printed "never")."""
    values = [run[key] for run in runs]
    worst = math.inf if key.startswith("t_") else -math.inf
    median = statistics.median([worst if v is None else v for v in values])
    reached = [v for v in values if v is not None]
    return {
        "median": None if math.isinf(median) else median,
        "min": min(reached, default=None),
        "max": max(reached, default=None),
        "missing": len(values) - len(reached),
    }


def markdown(result: dict[str, Any]) -> str:
    sides = result["sides"]
    keys = [*(f"t_{t}" for t in TARGETS), f"best_at_{EARLY_S:.0f}s", "best_at_budget", "test_accuracy"]
    names = {
        "t_0.87": "time to validation 0.87",
        "t_0.88": "time to validation 0.88",
        f"best_at_{EARLY_S:.0f}s": f"best validation at {EARLY_S:.0f} s",
        "best_at_budget": f"best validation at {result['budget_s']:.0f} s",
        "test_accuracy": "delivered test accuracy",
    }

    def cell(stats: dict[str, Any], key: str) -> str:
        fmt = (lambda v: f"{v:.1f} s") if key.startswith("t_") else (lambda v: f"{v:.4f}")
        if stats["median"] is None and stats["min"] is None:
            return "never"
        median = "never" if stats["median"] is None else fmt(stats["median"])
        extra = f", {stats['missing']} never" if stats["missing"] else ""
        return f"{median} ({fmt(stats['min'])}-{fmt(stats['max'])}{extra})"

    lines = [
        f"`{result['command']}` ({result['date']}; seeds {', '.join(map(str, result['seeds']))}; median "
        "(range) over seeds)",
        "",
        "| | " + " | ".join(sides) + " |",
        "| --- |" + " --- |" * len(sides),
    ]
    for key in keys:
        lines.append(
            f"| {names[key]} | " + " | ".join(cell(sides[s]["stats"][key], key) for s in sides) + " |"
        )
    lines.append("| trials complete / finished (per seed) | " + " | ".join(
        ", ".join(f"{r['trials_complete']}/{r['trials_finished']}" for r in sides[s]["runs"]) for s in sides
    ) + " |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=None, help="seconds per side (default 300)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--quick", action="store_true", help="30 s per side, seed 0, at most 2 epochs")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if "ray" in args.sides:
        isolate(sys.argv)
    torch.set_flush_denormal(True)  # tunelab's side runs in this process, as the `tunelab` command does
    budget_s = args.budget or (30.0 if args.quick else 300.0)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    max_epochs = args.max_epochs or (2 if args.quick else 10)
    out = args.out or RESULTS / ("vs_peers_quick.json" if args.quick else "vs_peers.json")
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in args.sides}
    for index, seed in enumerate(seeds):
        check_same_split(seed)
        order = args.sides[index % len(args.sides) :] + args.sides[: index % len(args.sides)]
        for side in order:
            load = os.getloadavg()[0]
            print(
                f"seed {seed}: {side} for {budget_s:.0f} s (load {load:.1f}) ...", file=sys.stderr, flush=True
            )
            work_dir = Path(tempfile.mkdtemp(prefix=f"vs_peers_{side}_"))
            try:
                raw = run_side(side, budget_s, work_dir=work_dir, max_epochs=max_epochs, seed=seed)
            finally:
                shutil.rmtree(work_dir, ignore_errors=True)
            record = {"seed": seed, "load_before": round(load, 2), **figures(raw, budget_s)}
            runs[side].append(record)
            print(json.dumps({"side": side, **{k: v for k, v in record.items() if k != "curve"}}), flush=True)
    keys = [*(f"t_{t}" for t in TARGETS), f"best_at_{EARLY_S:.0f}s", "best_at_budget", "test_accuracy"]
    result = {
        "bench": "vs_peers",
        "command": "python bench/vs_peers.py " + shlex.join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "budget_s": budget_s,
        "max_epochs": max_epochs,
        "seeds": seeds,
        "sides": {
            side: {"stats": {key: aggregate(records, key) for key in keys}, "runs": records}
            for side, records in runs.items()
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    print(markdown(result))


if __name__ == "__main__":
    main()
