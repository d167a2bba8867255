"""The search phase: one process asking, training and telling until a budget is spent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from tunelab.data import n_splits
from tunelab.search import (
    AshaScheduler,
    BaseScheduler,
    HyperbandScheduler,
    MedianStoppingScheduler,
    NoScheduler,
    SearchSpec,
    StudySummary,
    WriteBehind,
    make_sampler,
    run_study,
)
from tunelab.search._fusion import choose_fusion
from tunelab.search._population_study import run_population_study
from tunelab.spec import ExperimentSpec
from tunelab.tune._trials import Evaluator, Objective, trial_spec

SEARCH_SHARE = 0.8  # of a wall-time budget; the rest is for re-evaluation and the refit


@dataclass
class Plan:
    """Everything a search process needs (picklable, for worker processes)."""

    spec: ExperimentSpec
    data_spec: Any
    folds: list[int | None]
    run_dir: Path
    storage_url: str
    workers: int
    n_trials: int | None
    timeout_s: float | None
    metric: str = ""
    direction: str = "minimize"
    fusion: dict[str, Any] | None = None  # how the search trained its trials (fused or not, and why)


def make_plan(
    spec: ExperimentSpec, search: SearchSpec, run_dir: Path, storage_url: str, workers: int, *, task: str
) -> Plan:
    folds: list[int | None] = [None]
    data_spec = spec.data
    if search.cv:
        method = "stratified_kfold" if task == "classification" else "kfold"
        if data_spec.split.method == "timeseries" or task == "forecasting":
            method = "timeseries"
        data_spec = data_spec.model_copy(
            update={"split": data_spec.split.model_copy(update={"method": method, "n_folds": search.cv})}
        )
        folds = list(range(n_splits(data_spec)))
    budget_s = search.budget_seconds
    n_trials = search.n_trials
    if n_trials is None and budget_s is None and search.max_total_epochs is None:
        n_trials = 20
    timeout_s = None if budget_s is None else budget_s * SEARCH_SHARE
    return Plan(spec, data_spec, folds, run_dir, storage_url, workers, n_trials, timeout_s)


def run_search(plan: Plan, evaluator: Evaluator, say: Any, *, worker: int = 0) -> StudySummary:
    """One search process: ask the sampler, train, report, tell, until a budget is spent."""
    search = plan.spec.search or SearchSpec()
    space = search.search_space()
    sampler = make_sampler(
        search.sampler, seed=plan.spec.seed + worker, space=space, constant_liar=plan.workers > 1
    )
    if plan.workers > 1:
        # Several processes write to the storage: every change goes straight to it.
        storage: Any = optuna.storages.get_storage(plan.storage_url)
    elif plan.storage_url.startswith("sqlite:///"):
        storage = WriteBehind(plan.storage_url, flush_every=1, flush_interval_s=0.0)
    else:
        storage = plan.storage_url
    scheduler = make_scheduler(search, plan.spec.train.epochs * len(plan.folds), plan.direction)
    # What both search loops share: where trials go, how they are proposed and stopped, and the budgets.
    loop: dict[str, Any] = {
        "direction": plan.direction,
        "sampler": sampler,
        "scheduler": scheduler,
        "storage": storage,
        "study_name": plan.spec.name,
        "n_trials": plan.n_trials,
        "timeout_s": plan.timeout_s,
        "max_total_epochs": search.max_total_epochs,
        "target": search.target,
    }
    if plan.workers == 1:
        # Fused populations where they apply and pay (see tunelab.search._fusion); the summary says which.
        fusion = choose_fusion(
            search,
            evaluator.bundle(plan.folds[0]),
            make_spec=lambda p: trial_spec(plan.spec, p),
            seed=plan.spec.seed,
        )
        plan.fusion = fusion.to_dict()
        say(
            f"fused populations of {fusion.population_size}: {fusion.reason}"
            if fusion.fused
            else f"sequential trials: {fusion.reason}"
        )
        if fusion.fused:
            return run_population_study(
                lambda p: trial_spec(plan.spec, p),
                evaluator,
                space,
                population_size=fusion.population_size,
                metric=plan.metric,
                folds=plan.folds,
                events=say,
                **loop,
            )
    return run_study(
        Objective(plan.spec, evaluator, plan.folds, plan.metric, plan.direction, plan.run_dir, say),
        space,
        seed=plan.spec.seed + worker,
        **loop,
    )


def make_scheduler(search: SearchSpec, max_epochs: int, direction: Any) -> BaseScheduler:
    cfg = search.scheduler
    if cfg.name == "none" or max_epochs <= cfg.min_epochs:
        return NoScheduler(direction=direction)
    if cfg.name == "median":
        return MedianStoppingScheduler(
            n_startup_trials=max(1, cfg.n_startup_trials), grace_epochs=cfg.min_epochs, direction=direction
        )
    kind = AshaScheduler if cfg.name == "asha" else HyperbandScheduler
    return kind(
        min_resource=cfg.min_epochs,
        max_resource=max_epochs,
        reduction_factor=cfg.reduction_factor,
        direction=direction,
    )
