"""Ray Tune on the Fashion-MNIST MLP workload of ``vs_optuna.py``: the peer ``vs_peers.py`` races.

What a practitioner writes with Ray Tune: ``OptunaSearch`` (multivariate TPE, the workload's define-by-run
space from ``_baseline_optuna.sample_params``) and ``ASHAScheduler`` (grace 1 epoch, reduction factor 3, at
most ``max_epochs``), two concurrent trials of one CPU and one torch thread each, reused actors, a time
budget. The trainable is the baseline's own tight loop (``_baseline_optuna``: the same model, optimizer, data
and split); each actor reads the data once. A trial reports validation accuracy after each epoch with its
wall-clock time, stops within a few minibatches once the budget is spent, and on completing its epochs saves
its weights (Ray then delivers its best trial's own weights, tested once after the budget, as the baseline
does).

Ray is a bench-only dependency (``pip install -e '.[bench-peers]'``). It must run with no network beyond
loopback: ``vs_peers.py`` re-runs itself in a private network namespace (``unshare -n``, as root) with only
``lo`` up, usage statistics off, the dashboard off and every address bound to 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from _baseline_optuna import (
    accuracy,
    build_mlp,
    load_split,
    make_optimizer,
    params_from_trial,
    sample_params,
    tested_accuracy,
    train_epoch,
)

_DATA: dict[int, Any] = {}  # per actor process: the split, read once


def _trainable(config: dict[str, Any]) -> None:
    from ray import tune

    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    setup = config["_setup"]
    seed = setup["seed"]
    if seed not in _DATA:
        _DATA[seed] = load_split(seed=seed)
    data = _DATA[seed]
    params = params_from_trial({k: v for k, v in config.items() if k != "_setup"})
    trial_id = tune.get_context().get_trial_id()
    trial_seed = seed + int(hashlib.sha256(trial_id.encode()).hexdigest()[:6], 16)  # its own init and order
    torch.manual_seed(trial_seed)
    model = build_mlp(params["hidden"], params["dropout"], seed=trial_seed)
    optimizer = make_optimizer(model, params)
    generator = torch.Generator().manual_seed(trial_seed)
    for epoch in range(1, setup["max_epochs"] + 1):
        if not train_epoch(
            model,
            optimizer,
            data,
            batch_size=params["batch_size"],
            generator=generator,
            deadline=setup["deadline"],
        ):
            return  # the budget is spent: stop here, as the baseline does
        value = accuracy(model, data.X_val, data.y_val)
        finished = epoch == setup["max_epochs"]
        if finished:
            torch.save(model.state_dict(), Path(setup["weights_dir"]) / f"{trial_id}.pt")
        tune.report({"val_accuracy": value, "epoch": epoch, "wall": time.time(), "finished": finished})


def _define_by_run(trial: Any) -> None:
    """The workload's space, asked of Optuna's trial as the baseline asks it (flat names: lr, width_0)."""
    sample_params(trial)


def run_ray(budget_s: float, *, work_dir: Path, max_epochs: int = 10, seed: int = 0) -> dict[str, Any]:
    """Race Ray Tune for ``budget_s`` seconds of wall time (Ray's start included); return its record:
    ``started``, ``seconds``, ``trials`` (one dict per trial: start, end, state, value, epochs, params),
    ``test_accuracy`` (the best completed trial's own weights)."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    deadline = started + budget_s
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # A trial the deadline stops mid-epoch ends without a last report, which Tune would call an error.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate TPE is "experimental": chosen deliberately
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
        search = OptunaSearch(
            space=_define_by_run,
            metric="val_accuracy",
            mode="max",
            sampler=sampler,
        )
        setup = {"seed": seed, "max_epochs": max_epochs, "deadline": deadline, "weights_dir": str(work_dir)}
        tuner = tune.Tuner(
            tune.with_resources(_trainable, {"cpu": 1}),
            param_space={"_setup": setup},
            tune_config=tune.TuneConfig(
                metric="val_accuracy",
                mode="max",
                search_alg=search,
                scheduler=ASHAScheduler(
                    time_attr="training_iteration", max_t=max_epochs, grace_period=1, reduction_factor=3
                ),
                num_samples=-1,
                max_concurrent_trials=2,
                time_budget_s=max(deadline - time.time(), 1.0),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(storage_path=str(work_dir / "ray"), verbose=0),
        )
        grid = tuner.fit()
        finished = time.time()
        trials = [_trial_record(result, started) for result in grid]
    finally:
        ray.shutdown()
    trials = [t for t in trials if t is not None]
    return {
        "started": started,
        "seconds": finished - started,
        "trials": trials,
        "test_accuracy": _test_best(trials, work_dir, seed=seed),
    }


def _trial_record(result: Any, started: float) -> dict[str, Any] | None:
    frame = result.metrics_dataframe
    if frame is None or len(frame) == 0 or "wall" not in frame:
        return None
    walls, values = list(frame["wall"]), list(frame["val_accuracy"])
    complete = bool(frame["finished"].iloc[-1])
    config = {k: v for k, v in result.config.items() if k != "_setup"}
    trial_started = float(frame["timestamp"].iloc[0]) - float(frame["time_this_iter_s"].iloc[0])
    return {
        "trial_id": result.metrics.get("trial_id"),
        "state": "complete" if complete else "pruned",
        "start_s": round(trial_started - started, 3),
        "end_s": round(walls[-1] - started, 3),
        "value": values[-1],
        "epochs": int(frame["epoch"].iloc[-1]),
        "params": config,
    }


def _test_best(trials: list[dict[str, Any]], work_dir: Path, *, seed: int) -> float | None:
    complete = [t for t in trials if t["state"] == "complete" and not math.isnan(t["value"])]
    if not complete:
        return None
    best = max(complete, key=lambda t: t["value"])
    return tested_accuracy(best["params"], work_dir / f"{best['trial_id']}.pt", seed=seed)
