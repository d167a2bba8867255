"""How fast can the winning configurations of a vs_optuna run get there at all, known in advance?

Each side's best configuration from a ``bench/vs_optuna.py`` result, trained alone from a fresh process with
several seeds, exactly as the baseline trains (``_baseline_optuna``: its data split, model, optimizer and
tight loop, one thread per process, two processes at a time as its two workers). Clocks start just before
the process does, as vs_optuna's do, so they include start-up and reading the data. An oracle that skips
the search entirely: if it does not reach the baseline's final best within the issue's third of the budget,
a search that must also find the configuration will not either, on this machine.

    python bench/vs_optuna_oracle.py                                  # bench/results/vs_optuna.json, 4 seeds
    python bench/vs_optuna_oracle.py --result R.json --seeds 8 --out O.json

Prints one JSON line per run, then a Markdown table; writes ``bench/results/vs_optuna_oracle.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

from vs_optuna import GOAL_FRACTION, RESULTS

PARALLEL = 2  # processes at a time: the baseline's two workers


def baseline_form(side: str, params: dict[str, Any]) -> dict[str, Any]:
    """A side's ``best_params`` (Optuna's flat names, or tunelab's nested overrides) in
    ``_baseline_optuna.sample_params`` form."""
    if side == "baseline":
        from _baseline_optuna import params_from_trial

        return params_from_trial(params)
    train, model = params["train"], params["model"]
    return {
        "lr": train["lr"],
        "weight_decay": train["weight_decay"],
        "hidden": list(model["hidden"]),
        "dropout": model["dropout"],
        "batch_size": train["batch_size"],
        "optimizer": train["optimizer"],
    }


def train_alone(
    side: str, params: dict[str, Any], seed: int, max_epochs: int, split_seed: int, started: float, out: Any
) -> None:
    """One run in a fresh process: validation accuracy after each epoch, seconds since ``started`` (the
    parent's clock just before it started this process)."""
    import torch
    from _baseline_optuna import accuracy, build_mlp, load_split, make_optimizer, train_epoch

    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    data = load_split(seed=split_seed)
    torch.manual_seed(seed)
    model = build_mlp(params["hidden"], params["dropout"], seed=seed)
    optimizer = make_optimizer(model, params)
    generator = torch.Generator().manual_seed(seed)
    curve = []
    for _ in range(max_epochs):
        batch_size = params["batch_size"]
        train_epoch(model, optimizer, data, batch_size=batch_size, generator=generator, deadline=float("inf"))
        curve.append([round(time.time() - started, 1), accuracy(model, data.X_val, data.y_val)])
    out.put({"config": side, "seed": seed, "curve": curve})


def summarize(runs: list[dict[str, Any]], target: float, goal_s: float) -> list[dict[str, Any]]:
    rows = []
    for side in dict.fromkeys(r["config"] for r in runs):
        mine = [r for r in runs if r["config"] == side]
        finals = [r["curve"][-1] for r in mine]
        by_goal = [max((v for t, v in r["curve"] if t <= goal_s), default=None) for r in mine]
        rows.append(
            {
                "config": side,
                "seeds": [r["seed"] for r in mine],
                "final": [v for _, v in finals],
                "final_at_s": [t for t, _ in finals],
                "best_epoch_by_goal": by_goal,
                "runs_reaching_target_by_goal": sum(v is not None and v >= target for v in by_goal),
                "runs_reaching_target_at_all": sum(max(v for _, v in r["curve"]) >= target for r in mine),
            }
        )
    return rows


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (the JSON is committed)."""
    root = RESULTS.parent.parent
    resolved = path.resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--result", type=Path, default=RESULTS / "vs_optuna.json", help="a vs_optuna.py result"
    )
    parser.add_argument("--seeds", type=int, default=4, help="runs per configuration (default 4)")
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS / "vs_optuna_oracle.json")
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    target = result["baseline"]["final_best"]
    goal_s = result["budget_s"] * GOAL_FRACTION
    configs = {side: baseline_form(side, result[side]["best_params"]) for side in ("baseline", "tunelab")}
    plan = [(side, seed) for side in configs for seed in range(args.first_seed, args.first_seed + args.seeds)]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    runs: list[dict[str, Any]] = []
    for start in range(0, len(plan), PARALLEL):
        batch = plan[start : start + PARALLEL]
        processes = [
            context.Process(
                target=train_alone,
                args=(side, configs[side], seed, result["max_epochs"], result["seed"], time.time(), queue),
            )
            for side, seed in batch
        ]
        for process in processes:
            process.start()
        for _ in processes:
            run = queue.get()
            runs.append(run)
            print(json.dumps(run), flush=True)
        for process in processes:
            process.join()
    rows = summarize(runs, target, goal_s)
    record = {
        "bench": "vs_optuna_oracle",
        "result": _shown(args.result),
        "target": target,
        "goal_s": goal_s,
        "configs": configs,
        "summary": rows,
        "runs": runs,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\ntarget: the baseline's final best {target}; goal: by {goal_s:.0f} s\n")
    print("| configuration | final val. accuracy (seconds) | best epoch by the goal | reaching the target |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        finals = ", ".join(
            f"{v:.4f} ({t:.0f} s)" for v, t in zip(row["final"], row["final_at_s"], strict=True)
        )
        by_goal = ", ".join("-" if v is None else f"{v:.4f}" for v in row["best_epoch_by_goal"])
        print(
            f"| {row['config']}'s winner | {finals} | {by_goal} | {row['runs_reaching_target_by_goal']} of "
            f"{len(row['seeds'])} by the goal, {row['runs_reaching_target_at_all']} at any epoch |"
        )


if __name__ == "__main__":
    main()
