"""The search phase: one process asking, training and telling until a budget is spent."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.data import n_splits
from tunelab.errors import SpecError
from tunelab.search import (
    AshaScheduler,
    BaseScheduler,
    HyperbandScheduler,
    MedianStoppingScheduler,
    NoScheduler,
    PbtScheduler,
    SearchSpec,
    StudySummary,
    WriteBehind,
    make_sampler,
    run_study,
)
from tunelab.search._fusion import FusionDecision, _sample_spec, choose_fusion, fusion_blocker
from tunelab.search._population_study import run_population_study
from tunelab.search._tune_spec import pbt_mutable
from tunelab.spec import ExperimentSpec
from tunelab.tune._trials import Evaluator, Objective, trial_spec

SEARCH_SHARE = 0.8  # of a wall-time budget; the rest is for re-evaluation and the refit
_MIN_TIMEOUT_S = 1e-3  # a search whose share is already spent: it runs one trial (or population) and stops
# PBT's population size when none is configured: the measured one, but no fewer members than this, since
# members rank and copy one another (with 4 and quantile_fraction 0.25, the worst copies the best).
PBT_MIN_POPULATION = 4


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
    timeout_s: float | None  # the search's share of a time budget
    # When that share ends (``time.monotonic()``, the same clock in every process of this machine): counted
    # from the start of tune_experiment, so that data loading, the fusion probe and starting worker
    # processes come out of it rather than after it.
    search_deadline: float | None = None
    metric: str = ""
    direction: str = "minimize"
    fusion: dict[str, Any] | None = None  # how the search trained its trials (fused or not, and why)


def make_plan(
    spec: ExperimentSpec,
    search: SearchSpec,
    run_dir: Path,
    storage_url: str,
    workers: int,
    *,
    task: str,
    started: float,
) -> Plan:
    """What every search process needs; ``started``: ``time.monotonic()`` when tune_experiment began."""
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
    if search.scheduler.name == "pbt":
        _check_pbt(spec, search, workers)
    budget_s = search.budget_seconds
    n_trials = search.n_trials
    if n_trials is None and budget_s is None and search.max_total_epochs is None:
        n_trials = 20
    timeout_s = None if budget_s is None else budget_s * SEARCH_SHARE
    deadline = None if timeout_s is None else started + timeout_s
    return Plan(spec, data_spec, folds, run_dir, storage_url, workers, n_trials, timeout_s, deadline)


def _check_pbt(spec: ExperimentSpec, search: SearchSpec, workers: int) -> None:
    """What PBT needs beyond the search section (which checks itself): one process, and epochs enough for
    an exploit step before the last epoch."""
    if workers > 1:
        raise SpecError(
            f"scheduler pbt trains each population's trials side by side in one search process, so it cannot "
            f"use --workers {workers}. Use --workers 1, or another scheduler (asha, hyperband, median, none) "
            "with several workers."
        )
    interval, epochs = search.scheduler.perturbation_interval, spec.train.epochs
    if "train.epochs" not in search.space and interval >= epochs:
        fix = (
            f"Set search.scheduler.perturbation_interval between 2 and {epochs - 1}, or raise train.epochs."
            if epochs >= 3
            else "Raise train.epochs to at least 3 (the interval is at least 2)."
        )
        raise SpecError(
            f"scheduler pbt exploits every {interval} epochs (search.scheduler.perturbation_interval), but "
            f"trials train {epochs} epochs (train.epochs), so no exploit would ever be carried out "
            f"(none happens at the last epoch). {fix}"
        )


def run_search(plan: Plan, evaluator: Evaluator, say: Any, *, worker: int = 0) -> StudySummary:
    """One search process: ask the sampler, train, report, tell, until a budget is spent."""
    search = plan.spec.search or SearchSpec()
    space = search.search_space()
    sampler = make_sampler(
        search.sampler, seed=plan.spec.seed + worker, space=space, constant_liar=plan.workers > 1
    )
    if plan.workers > 1:
        # Several processes write to the storage: every change goes straight to it (and the study loop
        # closes the database connections it opens for this when it ends).
        storage: Any = WriteBehind(plan.storage_url, enabled=False)
    elif plan.storage_url.startswith("sqlite:///"):
        storage = WriteBehind(plan.storage_url, flush_every=1, flush_interval_s=0.0)
    else:
        storage = plan.storage_url
    scheduler = make_scheduler(
        search, plan.spec.train.epochs * len(plan.folds), plan.direction, seed=plan.spec.seed + worker
    )
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
    # Fused populations where they apply and pay (see tunelab.search._fusion); the summary says which. With
    # several workers each process decides and runs its own populations on the shared storage.
    # PBT copies weights between trials trained side by side: fused whatever the measurement says.
    choose = _pbt_fusion if search.scheduler.name == "pbt" else choose_fusion
    fusion = choose(
        search,
        evaluator.bundle(plan.folds[0]),
        make_spec=lambda p: trial_spec(plan.spec, p),
        seed=plan.spec.seed,
    )
    if worker == 0:
        plan.fusion = fusion.to_dict()
    if plan.search_deadline is not None:
        # What is left of the search's share now, after loading, probing and (in a worker) starting up. If
        # nothing is, the loop still runs its first trial: a search always ends with a result.
        loop["timeout_s"] = max(plan.search_deadline - time.monotonic(), _MIN_TIMEOUT_S)
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
            flop_rate=fusion.flop_rate,
            shared_storage=plan.workers > 1,
            seed=plan.spec.seed + worker,
            **loop,
        )
    return run_study(
        Objective(plan.spec, evaluator, plan.folds, plan.metric, plan.direction, plan.run_dir, say),
        space,
        seed=plan.spec.seed + worker,
        **loop,
    )


def _pbt_fusion(
    search: SearchSpec, bundle: Any, *, make_spec: Callable[[dict[str, Any]], Any], seed: int = 0
) -> FusionDecision:
    """PBT's populations: fused whatever ``search.fused: auto`` would measure (PBT copies weights between
    trials trained side by side), of ``search.population_size`` members, or else of the measured size but no
    fewer than :data:`PBT_MIN_POPULATION`; never shrunk to fit a time budget (see ``_PopulationLoop._size``).
    A search that cannot run as populations at all (a custom model, amp...) is a :class:`SpecError`."""
    sampled = _sample_spec(search.search_space(), make_spec, seed=seed)
    blocker = fusion_blocker(
        mode="on",
        model=sampled.model,
        train=sampled.train,
        task=bundle.task,
        sampler=search.sampler,
    )
    if blocker is not None:
        raise SpecError(
            f"scheduler pbt trains its trials side by side as fused populations, but this search cannot run "
            f"as populations: {blocker}. Choose another scheduler (asha, hyperband, median, none)."
        )
    forced = search.model_copy(update={"fused": "on"})
    measured = choose_fusion(forced, bundle, make_spec=make_spec, seed=seed)
    if search.population_size is not None:
        size, how = search.population_size, "as search.population_size asks"
    else:
        size = max(PBT_MIN_POPULATION, measured.population_size)
        how = f"the measured size but at least {PBT_MIN_POPULATION}; {measured.reason}"
    why = (
        "whatever search.fused 'auto' would decide"
        if search.fused == "auto"
        else f"search.fused '{search.fused}'"
    )
    reason = (
        f"scheduler pbt trains its trials side by side, so the search runs as fused populations ({why}); "
        f"each population is one PBT population of {size} members ({how})"
    )
    return FusionDecision(True, size, reason, measured.throughput, measured.flop_rate)


def make_scheduler(search: SearchSpec, max_epochs: int, direction: Any, *, seed: int = 0) -> BaseScheduler:
    """The scheduler ``search.scheduler`` names, for trials of up to ``max_epochs`` epochs (folds included);
    PBT's draws (sources, perturbations) are seeded with ``seed``."""
    cfg = search.scheduler
    if cfg.name == "pbt":
        space = search.search_space()
        return PbtScheduler(
            space,
            perturbation_interval=cfg.perturbation_interval,
            quantile_fraction=cfg.quantile_fraction,
            resample_probability=cfg.resample_probability,
            mutable=pbt_mutable(space),  # never a structural parameter: populations share those
            seed=seed,
            direction=direction,
        )
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
