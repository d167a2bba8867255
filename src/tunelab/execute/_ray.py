"""``--backend ray``: a distributed study's workers as long-lived Ray actors, one per resource slot.

Each actor runs :func:`~tunelab.execute._distributed.work`, the loop a ``tunelab worker`` process runs: it
asks the study for packs, trains them as populations, keeps its leases alive and writes its checkpoints to
the study's database. Ray only places the processes: no actor, task or placement group per trial, Ray's own
retries off (``max_restarts=0``, ``max_task_retries=0``): tunelab decides what is retried. Nothing that must
outlive a node goes to Ray's object store.

Death is noticed by Ray first: when an actor's call fails (its process or node is gone), the driver takes
back that worker's leases at once (:func:`~tunelab.storage.reclaim`: failed as interrupted, queued again to
resume from the last checkpoint) and starts a replacement actor, which Ray places where resources are free.
Workers' heartbeats are the backstop (a hung process, a dead driver's workers).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tunelab.clock import system_clock
from tunelab.errors import MissingExtraError, SpecError, TrainingError
from tunelab.execute._distributed import publish_plan, work
from tunelab.execute._search import SearchPlan, SearchResult
from tunelab.search import Events, StudyEvents
from tunelab.storage import (
    LeaseBook,
    StudyCounts,
    StudyDatabase,
    hide_password,
    open_shared_storage,
    reclaim,
    server_database,
)

__all__ = ["RayBackend", "search_on_ray"]

_ACTIVE = (TrialState.RUNNING, TrialState.WAITING)


@dataclass(frozen=True)
class RayBackend:
    """Where and how a study runs on Ray.

    ``address``: a running cluster (``auto``, ``HOST:PORT``, ``ray://...``); None honours ``RAY_ADDRESS``
    and otherwise starts a local Ray, as ``Tuner.fit()`` does, bound to 127.0.0.1 without a dashboard.
    ``cpus_per_worker`` / ``gpus_per_worker``: one actor's resources (a GPU fraction shares a GPU: Ray does
    not enforce its memory). ``max_concurrent``: at most this many actors (default: as many as the
    cluster's free resources hold). ``max_failures``: retries per trial after a worker or node dies.
    ``init_kwargs``: passed to ``ray.init`` as they are.
    """

    address: str | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 3
    init_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.cpus_per_worker > 0 and not self.gpus_per_worker > 0:
            raise SpecError("a Ray worker needs some resources: --cpus-per-worker or --gpus-per-worker > 0.")
        if self.cpus_per_worker < 0 or self.gpus_per_worker < 0:
            raise SpecError("--cpus-per-worker and --gpus-per-worker must be >= 0.")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise SpecError(f"--max-concurrent must be at least 1; got {self.max_concurrent}.")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtraError("--backend ray", "ray") from None
    return ray


def search_on_ray(plan: SearchPlan, backend: RayBackend, events: StudyEvents) -> SearchResult:
    """Run ``plan``'s search on Ray actors until its budget is spent; the study's counts and the first
    worker's fusion decision. The plan must be distributed (``plan.distributed``)."""
    ray = _ray()
    if 0 < backend.gpus_per_worker < 1:
        warnings.warn(
            f"--gpus-per-worker {backend.gpus_per_worker:g}: actors share a GPU, and Ray does not limit "
            "the memory each one takes; size the models so that they fit together.",
            UserWarning,
            stacklevel=2,
        )
    started_here = _init(ray, backend)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if len(nodes) > 1 and not server_database(plan.storage_url):
            raise SpecError(
                f"the study's storage {hide_password(plan.storage_url)} is a file, which the other "
                f"{len(nodes) - 1} node(s) of this Ray cluster cannot share. Give --storage a database "
                "server's URL, e.g. postgresql+psycopg://user@host/db."
            )
        publish_plan(plan)
        return _Driver(ray, plan, backend, events).run()
    finally:
        if started_here:
            ray.shutdown()


def _init(ray: Any, backend: RayBackend) -> bool:
    """Connect to Ray (or start a local one); whether this call started it."""
    if ray.is_initialized():
        return False
    address = backend.address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"log_to_driver": True, **backend.init_kwargs}
    if address is None:  # a local Ray of our own: loopback only, no dashboard, no usage report
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs = {"include_dashboard": False, "_node_ip_address": "127.0.0.1", **kwargs}
    ray.init(address=address, **kwargs)
    return True


class _Driver:
    """Starts the actors, replaces those that die (taking back their trials first), and waits until the
    study's budget is spent."""

    def __init__(self, ray: Any, plan: SearchPlan, backend: RayBackend, events: StudyEvents) -> None:
        self.ray, self.plan, self.backend, self.events = ray, plan, backend, events
        self.actor_class = ray.remote(
            num_cpus=backend.cpus_per_worker,
            num_gpus=backend.gpus_per_worker,
            max_restarts=0,
            max_task_retries=0,
        )(_Worker)
        self.started = 0
        self.running: dict[Any, tuple[str, Any]] = {}  # the run call's reference -> (worker name, actor)
        self.results: list[SearchResult] = []
        self.errors: list[str] = []
        settings = plan.distributed
        if settings is None:
            raise SpecError(
                "search_on_ray needs a distributed plan (leases and checkpoints in the database)."
            )
        # The driver's reads and reclaims go through outages as the workers' do. Optuna's connection first,
        # its schema check's second one closed (see execute._search._Shared.open).
        self.database = StudyDatabase(plan.storage_url, retry_seconds=settings.outage_s)
        self._rdb, storage = open_shared_storage(plan.storage_url, self.database)
        self.book = LeaseBook(self.database, study=plan.spec.name, worker="driver", node="driver")
        self.study = optuna.load_study(study_name=plan.spec.name, storage=storage)

    def slots(self) -> int:
        if self.backend.max_concurrent is not None:
            return self.backend.max_concurrent
        resources = self.ray.cluster_resources()
        counts = []
        if self.backend.cpus_per_worker > 0:
            counts.append(int(resources.get("CPU", 0) // self.backend.cpus_per_worker))
        if self.backend.gpus_per_worker > 0:
            counts.append(int(resources.get("GPU", 0) // self.backend.gpus_per_worker))
        slots = min(counts) if counts else 0
        if slots < 1:
            raise SpecError(
                f"the Ray cluster has {resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs: "
                f"not enough for one worker of {self.backend.cpus_per_worker:g} CPU(s) and "
                f"{self.backend.gpus_per_worker:g} GPU(s). Lower --cpus-per-worker or add nodes."
            )
        return slots

    def start_worker(self) -> None:
        self.started += 1
        name = f"ray-worker-{self.started}"
        actor = self.actor_class.remote()
        call = actor.run.remote(
            self.plan.storage_url, self.plan.spec.name, name, self.started, str(self.plan.run_dir)
        )
        self.running[call] = (name, actor)

    def run(self) -> SearchResult:
        slots = self.slots()
        self.events.phase(f"Ray: {slots} workers of {self.backend.cpus_per_worker:g} CPU(s)")
        for _ in range(slots):
            self.start_worker()
        try:
            while self.running:
                done, _ = self.ray.wait(list(self.running), num_returns=1, timeout=1.0)
                for call in done:
                    self._finished(call)
                if self.running and not done and self._spent():
                    # The budget is spent: the workers see it at their next pack and return; a replacement
                    # still waiting for resources never will.
                    done, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=60.0)
                    for call in done:
                        self._finished(call)
                    break
            counts = StudyCounts.of_study(self.study)
        finally:
            for _, actor in self.running.values():
                self.ray.kill(actor, no_restart=True)
            self.database.close()
            self._rdb.engine.dispose()
        if not self.results:
            reasons = "; ".join(self.errors) or "see the workers' logs above"
            raise TrainingError(f"every Ray worker stopped before the study finished: {reasons}")
        first = self.results[0]
        return replace(first, summary=replace(first.summary, **asdict(counts)))

    def _finished(self, call: Any) -> None:
        name, _actor = self.running.pop(call)
        replace_it = True
        try:
            self.results.append(self.ray.get(call))
            return
        except self.ray.exceptions.RayTaskError as error:
            # The worker's own loop raised (not a trial: a trial's exception fails that trial only), e.g.
            # its node cannot read the data: another worker there would fail alike, so none replaces it.
            cause = error.cause if isinstance(error.cause, BaseException) else error
            self.errors.append(f"{name}: {type(cause).__name__}: {cause}")
            why, replace_it = f"its loop raised {type(cause).__name__}", False
        except self.ray.exceptions.RayActorError as error:
            # Dead (its process or node is gone) or unreachable: either way its trials go to the others. A
            # worker that was only unreachable finds its leases taken and drops its results. (Killing a
            # dead actor's handle crashes Ray 2.52's core worker: the handle is only dropped.)
            why = f"its Ray actor died ({type(error).__name__})"
        max_failures = self.plan.distributed.max_failures if self.plan.distributed else 3
        taken = reclaim(
            self.study, self.book, self.book.leases(worker=name), why=why, max_failures=max_failures
        )
        self.events.phase(f"{name}: {why}; took back trials {taken}")
        if replace_it and not self._spent():
            self.start_worker()

    def _spent(self) -> bool:
        """Whether the study's budget is spent (every process's trials counted)."""
        counts = StudyCounts.of_study(self.study)
        active = len(self.study.get_trials(deepcopy=False, states=_ACTIVE))
        budget = self.plan.study_budget(system_clock)
        return budget.spent(counts) is not None and active == 0


class _Worker:
    """A Ray actor: one worker of the study (the class Ray wraps with ``ray.remote``)."""

    def run(self, storage_url: str, study_name: str, name: str, index: int, run_dir: str) -> SearchResult:
        import ray
        import torch

        from tunelab.train import flush_denormals

        flush_denormals()
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:
            torch.set_num_threads(max(1, int(cpus)))
        node = ray.get_runtime_context().get_node_id()

        def line(message: str) -> None:
            print(f"[{name}] {message}", flush=True)

        own_dir = Path(run_dir) / "workers" / name
        return work(
            storage_url,
            study_name,
            Events(log=line),
            run_dir=own_dir,
            worker=name,
            node=node,
            index=index,
            wait_s=600.0,  # an actor started during an outage waits for the database
        )
