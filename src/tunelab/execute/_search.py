"""One search process: the plan it follows, and ``run_search``, which builds the sampler, the scheduler, the
storage and the executor (fused or sequential, decided by measurement) and runs the study loop."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tunelab.clock import Clock, system_clock
from tunelab.data import DataSpec
from tunelab.errors import SpecError
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
from tunelab.storage import (
    DatabaseArtifactStore,
    LeaseBook,
    Leasing,
    RetryingStorage,
    StudyDatabase,
    open_shared_storage,
)

__all__ = ["Distributed", "SearchPlan", "SearchResult", "run_search"]


@dataclass(frozen=True)
class Distributed:
    """How the workers of a distributed study share it: the heartbeat ``grace_s`` after which a silent
    worker's trials are taken back (and how long a storage call retries an outage), ``max_failures`` retries
    per trial, and ``artifacts``: a directory every worker reaches for checkpoints (None: a table in the
    study's database, which needs no shared filesystem). ``outage_s``: how long a worker's storage calls
    retry an unreachable database before it gives up (its trials are reclaimed after ``grace_s`` anyway)."""

    grace_s: float = 20.0
    max_failures: int = 3
    artifacts: str | None = None
    outage_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.grace_s > 0:
            raise SpecError(f"the heartbeat grace period must be positive; got {self.grace_s!r} s.")
        if (
            isinstance(self.max_failures, bool)
            or not isinstance(self.max_failures, int)
            or self.max_failures < 0
        ):
            raise SpecError(f"--max-failures must be a whole number >= 0; got {self.max_failures!r}.")


@dataclass(frozen=True)
class SearchPlan:
    """Everything a search process needs (picklable, for worker processes).

    ``search_deadline``: when the search's share of a time budget ends, on the machine's monotonic clock (the
    same in every process of the machine), counted from the start of the run, so that loading data, probing
    fusion and starting worker processes come out of it rather than after it. None without a time budget.
    ``distributed``: workers on other processes or machines share the study (leases, checkpoints in the
    database); None for one process, or ``--workers`` on one machine's SQLite file.
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
    distributed: Distributed | None = None

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
    identity: tuple[str, str] | None = None,
) -> SearchResult:
    """One search process (``worker``: its index among the plan's processes) until a budget is spent.
    ``identity``: this worker's name and node in a distributed study's leases."""
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
    shared = _Shared.open(plan, identity) if plan.distributed is not None else None
    sequential = SequentialExecutor(
        plan.spec,
        evaluator,
        metric=plan.metric,
        run_dir=plan.run_dir,
        folds=plan.folds,
        keep_models=keep,
        direction=plan.direction,
        checkpoint_store=None if shared is None else shared.store,
        checkpoint_prefix=checkpoint_prefix(plan.spec.name),
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
            checkpoint_store=None if shared is None else shared.store,
            checkpoint_prefix=checkpoint_prefix(plan.spec.name),
        )
    else:
        executor = sequential
    try:
        summary = _study(plan, executor, space, scheduler, seed, events, worker, clock, shared)
    finally:
        if shared is not None:
            shared.close()
    return SearchResult(summary, fusion)


def _study(
    plan: SearchPlan,
    executor: Executor,
    space: Any,
    scheduler: Any,
    seed: int,
    events: StudyEvents,
    worker: int,
    clock: Clock,
    shared: _Shared | None,
) -> StudySummary:
    search = plan.search
    distributed = plan.distributed is not None
    return run_study(
        executor,
        space,
        direction=plan.direction,
        sampler=make_sampler(
            search.sampler, seed=seed, space=space, constant_liar=plan.workers > 1 or distributed
        ),
        scheduler=scheduler,
        storage=_storage(plan) if shared is None else shared.storage,
        study_name=plan.spec.name,
        budget=plan.study_budget(clock),
        seed=seed,
        events=events,
        # Queued once: by the first process, or by publish_plan in a distributed study.
        first_trials=search.first_trials if worker == 0 and not distributed else (),
        leasing=None if shared is None else shared.leasing,
    )


def checkpoint_prefix(study: str) -> str:
    """The prefix of a distributed study's checkpoint artifacts: ``<study>:`` (no ``/``, which a study name
    never holds either: Optuna's file-system store, ``--artifacts DIR``, keeps ids as flat file names)."""
    return f"{study}:"


class _Shared:
    """A distributed worker's connection to its study's database (one, :class:`StudyDatabase`): its leases
    and the checkpoint store."""

    def __init__(
        self, database: StudyDatabase, leasing: Leasing, store: Any, storage: RetryingStorage, rdb: Any
    ) -> None:
        self.database, self.leasing, self.store, self.storage = database, leasing, store, storage
        self._rdb = rdb

    @classmethod
    def open(cls, plan: SearchPlan, identity: tuple[str, str] | None) -> _Shared:
        settings = plan.distributed or Distributed()
        worker, node = identity or (worker_name(), socket.gethostname())
        database = StudyDatabase(plan.storage_url, retry_seconds=settings.outage_s)  # connects on first use
        rdb, storage = open_shared_storage(plan.storage_url, database)  # before the database's connection
        book = LeaseBook(database, study=plan.spec.name, worker=worker, node=node, grace_s=settings.grace_s)
        leasing = Leasing(book, grace_s=settings.grace_s, max_failures=settings.max_failures)
        if settings.artifacts is None:
            store: Any = DatabaseArtifactStore(database)
        else:
            from optuna.artifacts import FileSystemArtifactStore

            Path(settings.artifacts).mkdir(parents=True, exist_ok=True)
            store = FileSystemArtifactStore(settings.artifacts)
        return cls(database, leasing, store, storage, rdb)

    def close(self) -> None:
        self.database.close()
        self._rdb.engine.dispose()


def worker_name(prefix: str = "worker") -> str:
    """A name no other worker has: ``prefix@host:pid``."""
    return f"{prefix}@{socket.gethostname()}:{os.getpid()}"


def _storage(plan: SearchPlan) -> Any:
    """Where a search process without leases keeps its study (a distributed one uses ``_Shared.storage``)."""
    if plan.workers > 1:
        # Several processes write to the storage: every change goes straight to it.
        return WriteBehind(plan.storage_url, enabled=False)
    if plan.storage_url.startswith("sqlite:///"):
        # One process: in memory, every finished trial (and every report of a checkpointing trial) written
        # through before the next step, so a kill loses only the running trial, which is retried.
        return WriteBehind(plan.storage_url, flush_every=1, flush_interval_s=0.0)
    return plan.storage_url
