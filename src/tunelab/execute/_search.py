"""One search process: the plan it follows, and ``run_search``, which builds the sampler, the scheduler, the
storage and the executor (fused or sequential, decided by measurement) and runs the study loop."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tunelab.clock import Clock, system_clock
from tunelab.data import DataSpec
from tunelab.execute._evaluator import Evaluator, trial_spec
from tunelab.execute._fusion import FusionDecision, choose_fusion
from tunelab.execute._population import PopulationExecutor
from tunelab.execute._sequential import SequentialExecutor
from tunelab.search import (
    Direction,
    Executor,
    SearchSpec,
    StudyBudget,
    StudyEvents,
    StudySummary,
    WriteBehind,
    make_sampler,
    run_study,
)
from tunelab.spec import PER_MEMBER_PATHS, ExperimentSpec

__all__ = ["SearchPlan", "SearchResult", "run_search"]


@dataclass(frozen=True)
class SearchPlan:
    """Everything a search process needs (picklable, for worker processes).

    ``search_deadline``: when the search's share of a time budget ends, on the machine's monotonic clock (the
    same in every process of the machine), counted from the start of the run, so that loading data, probing
    fusion and starting worker processes come out of it rather than after it. None without a time budget.
    """

    spec: ExperimentSpec
    data_spec: DataSpec
    folds: list[int | None]
    run_dir: Path
    storage_url: str
    metric: str
    direction: Direction
    workers: int = 1
    n_trials: int | None = None
    search_deadline: float | None = None

    @property
    def search(self) -> SearchSpec:
        return self.spec.search or SearchSpec()

    def study_budget(self, clock: Clock) -> StudyBudget:
        """The search's budgets, its time a deadline on ``clock``."""
        search = self.search
        return StudyBudget(self.n_trials, self.search_deadline, search.max_total_epochs, search.target, clock)


@dataclass(frozen=True)
class SearchResult:
    """What one search process found, and how it trained its trials (fused or not, and why)."""

    summary: StudySummary
    fusion: FusionDecision


def run_search(
    plan: SearchPlan,
    evaluator: Evaluator,
    events: StudyEvents,
    *,
    worker: int = 0,
    clock: Clock = system_clock,
) -> SearchResult:
    """One search process (``worker``: its index among the plan's processes) until a budget is spent."""
    search = plan.search
    space = search.search_space()
    seed = plan.spec.seed + worker
    scheduler = search.make_scheduler(
        plan.spec.train.epochs * len(plan.folds), plan.direction, per_member_paths=PER_MEMBER_PATHS, seed=seed
    )
    make_spec = partial(trial_spec, plan.spec)
    # Fused populations where they apply and pay (PBT's always). With several workers each process decides.
    fusion = choose_fusion(search, evaluator.bundle(plan.folds[0]), make_spec=make_spec, seed=plan.spec.seed)
    events.phase(
        f"fused populations of {fusion.population_size}: {fusion.reason}"
        if fusion.fused
        else f"sequential trials: {fusion.reason}"
    )
    executor: Executor
    # Under a time budget the models of the trials that may win stay at hand: a refit that does not fit
    # delivers the winner as the search trained it.
    keep = search.top_k + len(search.first_trials) if plan.search_deadline is not None else 0
    sequential = SequentialExecutor(
        plan.spec,
        evaluator,
        metric=plan.metric,
        run_dir=plan.run_dir,
        folds=plan.folds,
        keep_models=keep,
        direction=plan.direction,
    )
    if fusion.fused:
        executor = PopulationExecutor(
            make_spec,
            evaluator,
            fusion.population_size,
            metric=plan.metric,
            folds=plan.folds,
            flop_rate=fusion.flop_rate,
            alone=sequential,  # L-BFGS trials, which cannot be fused
        )
    else:
        executor = sequential
    summary = run_study(
        executor,
        space,
        direction=plan.direction,
        sampler=make_sampler(search.sampler, seed=seed, space=space, constant_liar=plan.workers > 1),
        scheduler=scheduler,
        storage=_storage(plan),
        study_name=plan.spec.name,
        budget=plan.study_budget(clock),
        seed=seed,
        events=events,
        first_trials=search.first_trials if worker == 0 else (),  # queued once, by the first process
    )
    return SearchResult(summary, fusion)


def _storage(plan: SearchPlan) -> Any:
    if plan.workers > 1:
        # Several processes write to the storage: every change goes straight to it.
        return WriteBehind(plan.storage_url, enabled=False)
    if plan.storage_url.startswith("sqlite:///"):
        # One process: in memory, every finished trial (and every report of a checkpointing trial) written
        # through before the next step, so a kill loses only the running trial, which is retried.
        return WriteBehind(plan.storage_url, flush_every=1, flush_interval_s=0.0)
    return plan.storage_url
