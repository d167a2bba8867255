"""``run_study``: the one ask/tell loop over an executor. :meth:`_StudyLoop.conclude` is the one place a
trial's end is told to the study, the scheduler, the storage, the counts and the progress display."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from tunelab.clock import Clock, system_clock
from tunelab.errors import SpecError
from tunelab.search._budget import StudyBudget, check_positive
from tunelab.search._events import NoEvents, StudyEvents
from tunelab.search._executor import Executor, Objective, ObjectiveExecutor, Outcome, OutcomeState, not_finite
from tunelab.search._handle import TrialHandle, cut_note
from tunelab.search._packing import Packer, startup_populations
from tunelab.search._samplers import make_sampler
from tunelab.search._tell import tell
from tunelab.search.schedulers import BaseScheduler, Direction, NoScheduler
from tunelab.search.space import SearchSpace
from tunelab.storage import (
    FINISHED,
    Heartbeat,
    Leasing,
    StudyBackend,
    StudyCounts,
    WriteBehind,
    fail_orphans,
    open_backend,
    reclaim,
)

__all__ = ["StudySummary", "run_study"]

OVER_BUDGET = "never started: another worker asked for the budget's last trials at the same moment"
# Workers that ask at the same moment can together create at most this many trials past a budget's end
# before they see each other's (a pack per worker): within it, each worker checks its asks.
_BUDGET_MARGIN = 256
_READ_INTERVAL_S = 1.0


def _fresh(trial: FrozenTrial) -> bool:
    """Whether ``trial`` is a configuration of its own: not a retry, not a trial that never started."""
    return "retry_of" not in trial.user_attrs and "never_started" not in trial.user_attrs


_STATES: dict[OutcomeState, TrialState] = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
}
_STATUS: dict[TrialState, OutcomeState] = {state: status for status, state in _STATES.items()}


@dataclass(frozen=True)
class StudySummary:
    """What a study found. ``best_*`` are None when no trial completed (and for several objectives, where
    ``pareto_front`` holds ``(params, values)`` of the non-dominated trials instead)."""

    study_name: str
    best_params: dict[str, Any] | None
    best_value: float | None
    best_trial: int | None
    n_complete: int
    n_pruned: int
    n_failed: int
    n_epochs: int
    elapsed_s: float
    stop_reason: str
    pareto_front: list[tuple[dict[str, Any], list[float]]] = field(default_factory=list)

    @property
    def counts(self) -> StudyCounts:
        return StudyCounts(self.n_complete, self.n_pruned, self.n_failed, self.n_epochs)


def run_study(
    objective: Objective | Executor,
    space: SearchSpace,
    *,
    direction: Direction = "minimize",
    directions: Sequence[Direction] | None = None,
    sampler: str | optuna.samplers.BaseSampler = "tpe",
    scheduler: BaseScheduler | None = None,
    storage: str | WriteBehind | BaseStorage | None = None,
    study_name: str = "tunelab",
    n_trials: int | None = None,
    timeout_s: float | None = None,
    max_total_epochs: int | None = None,
    target: float | None = None,
    budget: StudyBudget | None = None,
    seed: int = 0,
    events: StudyEvents | None = None,
    clock: Clock = system_clock,
    first_trials: Sequence[Mapping[str, Any]] = (),
    leasing: Leasing | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> StudySummary:
    """Run trials until a budget is spent; return what was found.

    ``objective``: an :class:`~tunelab.search.Executor`, or a function of a
    :class:`~tunelab.search.TrialHandle` (wrapped in :class:`~tunelab.search.ObjectiveExecutor`, which says
    what its results mean): it trains one configuration (``handle.params``, a nested override dict), calls
    ``handle.report(epoch, value)`` after each epoch, and returns the final value (a sequence of values for
    ``directions``). A trial that completes with a value that is not finite is recorded as FAIL with the
    reason in the user attribute ``fail_reason``, and the study goes on.

    Budgets (at least one of the first three): ``n_trials`` finished trials in the study, counting those of
    an earlier run of the same study; ``timeout_s`` seconds of this call on ``clock``; ``max_total_epochs``
    epochs reported over the study; and ``target``: stop once a trial reaches it. Or, instead of those,
    ``budget``: a :class:`~tunelab.search.StudyBudget`, whose time is a deadline on its own clock (a share of
    a longer budget that started earlier; already past, the study runs one pack and stops). Budgets are
    checked between packs; a running trial stops for time only within or between its epochs
    (``handle.out_of_time()``), and only once a trial of the study has completed. ``events`` hears of every
    trial's start, reports and end. ``first_trials`` (flat parameters, checked against ``space``) are queued,
    in order, when the study holds no trial yet.

    ``leasing``: this process is one of several workers of a study in a shared database, each holding a lease
    on the trials it runs (:class:`~tunelab.storage.LeaseBook`), renewed by a heartbeat thread. Between packs
    the loop takes back the trials of workers silent for longer than the grace period (failed as interrupted
    and queued again, to continue from their checkpoint), counts ``n_trials`` over every worker's running
    trials too (so the study runs that many configurations, not more), and, when every remaining trial runs
    elsewhere, waits (``sleep``) for one to end or to be taken back. A result whose lease another process
    took is dropped.
    """
    dirs = list(directions) if directions is not None else [direction]
    multi = len(dirs) > 1
    if not dirs or any(d not in ("minimize", "maximize") for d in dirs):
        raise SpecError(f"directions must be 'minimize' or 'maximize', got {dirs!r}.")
    if not isinstance(space, SearchSpace):
        raise SpecError(
            f"space must be a SearchSpace (SearchSpace.from_dict(...)), got {type(space).__name__}."
        )
    executor = _as_executor(objective, n_objectives=len(dirs))
    clock = clock if budget is None else budget.clock
    started = clock.monotonic()
    if budget is None:
        check_positive(timeout_s, "timeout_s", whole=False)
        deadline = None if timeout_s is None else started + timeout_s
        budget = StudyBudget(n_trials, deadline, max_total_epochs, target, clock)
    elif any(value is not None for value in (n_trials, timeout_s, max_total_epochs, target)):
        raise SpecError(
            "give the study budget=, or n_trials / timeout_s / max_total_epochs / target; not both."
        )
    scheduler = scheduler if scheduler is not None else NoScheduler(direction=dirs[0])
    _check_scheduler(scheduler, dirs, multi=multi, target=budget.target)
    if isinstance(sampler, str):
        sampler = make_sampler(sampler, seed=seed, space=space, multi_objective=multi)

    executor.start(scheduler)
    for params in first_trials:
        space.check_params(params)
    backend = open_backend(storage, study_name=study_name, directions=dirs, sampler=sampler, clock=clock)
    try:
        if first_trials and not backend.study.get_trials(deepcopy=False):
            for params in first_trials:
                backend.study.enqueue_trial(dict(params))
        packs = executor.max_pack_size > 1
        loop = _StudyLoop(
            executor,
            space,
            backend,
            scheduler,
            budget,
            events or NoEvents(),
            multi=multi,
            leasing=leasing,
            sleep=sleep,
            packer=Packer(
                backend.study,
                space,
                per_member_paths=executor.per_member_paths,
                shared=backend.shared,
                startup_populations=startup_populations(sampler) if packs else 0,
                seed=seed,
            ),
        )
        stop_reason = loop.run()
    finally:
        backend.close()
    return summarize(backend.study, space, stop_reason, clock.monotonic() - started, multi=multi)


def _as_executor(objective: Objective | Executor, *, n_objectives: int) -> Executor:
    if all(hasattr(objective, name) for name in ("start", "pack_size", "run", "max_pack_size")):
        return objective  # type: ignore[return-value]
    return ObjectiveExecutor(objective, n_objectives=n_objectives)  # type: ignore[arg-type]


def _check_scheduler(
    scheduler: BaseScheduler, dirs: list[Direction], *, multi: bool, target: float | None
) -> None:
    if multi and not isinstance(scheduler, NoScheduler):
        raise SpecError(
            "early-stopping schedulers rank trials by one value; with several objectives use scheduler=None."
        )
    if multi and target is not None:
        raise SpecError("target applies to one objective; with several objectives leave it None.")
    if scheduler.direction != dirs[0]:
        raise SpecError(
            f"the scheduler was built with direction='{scheduler.direction}' but the study will "
            f"{dirs[0]}; build it with direction='{dirs[0]}'."
        )


class _StudyLoop:
    def __init__(
        self,
        executor: Executor,
        space: SearchSpace,
        backend: StudyBackend,
        scheduler: BaseScheduler,
        budget: StudyBudget,
        events: StudyEvents,
        *,
        multi: bool,
        packer: Packer,
        leasing: Leasing | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.leasing, self.sleep = leasing, sleep
        self._next_check = -math.inf  # when to look for stale leases next
        self._next_read = -math.inf  # when to read the shared study next (with leases, far from the end)
        self.executor, self.space, self.backend = executor, space, backend
        self.study, self.scheduler, self.budget, self.events = backend.study, scheduler, budget, events
        self.multi, self.packer = multi, packer
        self.packs, self.checkpoints = executor.max_pack_size > 1, executor.checkpoints
        self.seen: set[int] = set()  # trials the scheduler knows: started here, or replayed from the storage
        self.counts = StudyCounts.of_study(self.study)
        self.reached_target = False
        grid = self.study.sampler
        self.grid = grid if isinstance(grid, optuna.samplers.GridSampler) else None

    def run(self) -> str:
        """Train packs until a budget is spent; the reason the study stopped."""
        if self.leasing is None:
            return self._run()
        heartbeat = Heartbeat(self.leasing.book, self.leasing.heartbeat_s).start()
        try:
            return self._run()
        finally:
            heartbeat.stop()

    def _run(self) -> str:
        replay(self.study, self.space, self.scheduler, self.seen)
        finished = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if any(self.reached(t.values[0]) for t in finished):
            return "target"
        while True:
            trials: list[FrozenTrial] | None = None
            if self.backend.shared and self._read_due():
                # Other processes run trials on this study too: the scheduler ranks theirs as well, and the
                # budgets count every process's trials. One read of the study serves the whole step.
                trials = self.study.get_trials(deepcopy=False)
                if self.leasing is not None and self._due():
                    self._reclaim_stale(trials)
                replay(self.study, self.space, self.scheduler, self.seen, trials=trials)
                self.counts = StudyCounts.of(trials)
            spent = self.budget.spent(self.counts)
            if spent is not None:
                return spent
            if self.grid is not None and self.grid.is_exhausted(self.study):
                return "grid_exhausted"
            cap = self.budget.pack_cap(self.counts, self.executor.max_pack_size)
            room = self._room(trials)
            if room is not None and room <= 0 and self.leasing is not None:
                self.sleep(self.leasing.poll_s)  # every remaining trial runs elsewhere
                continue
            cap = cap if room is None else min(cap, room)
            time_left = self.budget.time_left()
            pack = self.packer.next_pack(partial(self.executor.pack_size, cap=cap, time_left=time_left))
            pack = self._within_budget(pack, trials)
            if not pack:
                continue
            handles = self._start(pack)
            try:
                outcomes = self.executor.run(handles)
            except BaseException as err:
                for handle in handles:
                    if not handle.ended:
                        handle.end(Outcome.from_error(err))
                raise
            for handle, outcome in zip(handles, outcomes, strict=True):
                if not handle.ended:
                    handle.end(outcome)
            if self.reached_target:
                return "target"

    def _read_due(self) -> bool:
        """Whether to read the shared study before this pack: always without leases (the loop as it was),
        near a trial budget's end (its counts must be exact there), and otherwise once a second: a worker
        running many short trials would spend more time reading the others' than running its own."""
        if self.leasing is None or self.budget.n_trials is None:
            return True
        near_end = self.budget.n_trials - self.counts.n_finished <= _BUDGET_MARGIN
        now = time.monotonic()
        if near_end or now >= self._next_read:
            self._next_read = now + _READ_INTERVAL_S
            return True
        return False

    def _due(self) -> bool:
        """Whether it is time to look for stale leases again (once a heartbeat interval, not every pack)."""
        if self.leasing is None:
            return False
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.leasing.heartbeat_s
        return True

    def _room(self, trials: list[FrozenTrial] | None) -> int | None:
        """With leases and a trial budget: the trials this process may start, the budget less every finished
        and running trial of the study (waiting ones are taken first). None otherwise."""
        if self.leasing is None or self.budget.n_trials is None or trials is None:
            return None
        running = sum(t.state == TrialState.RUNNING for t in trials)
        return self.budget.n_trials - self.counts.n_finished - running

    def _within_budget(
        self, pack: list[tuple[optuna.Trial, dict[str, Any]]], trials: list[FrozenTrial] | None
    ) -> list[tuple[optuna.Trial, dict[str, Any]]]:
        """With leases and a trial budget, workers that asked at the same moment may together create more
        trials than the budget leaves: the study's first ``n_trials`` new configurations (by number; retries
        stand for their originals) are the ones that run, so every worker drops the same ones. A dropped
        trial is failed as never started (not counted). Far from the budget's end (more than
        ``_BUDGET_MARGIN`` trials to go) no other worker can take this pack's place: nothing is read."""
        n_trials = self.budget.n_trials
        if self.leasing is None or n_trials is None or trials is None:
            return pack
        if sum(_fresh(t) for t in trials) + len(pack) + _BUDGET_MARGIN < n_trials:
            return pack
        now = self.study.get_trials(deepcopy=False)  # after the asks: every worker's new trials
        allowed = set(sorted(t.number for t in now if _fresh(t))[:n_trials])
        retries = {t.number for t in now if "retry_of" in t.user_attrs}
        kept = []
        for trial, params in pack:
            if trial.number in allowed or trial.number in retries:
                kept.append((trial, params))
                continue
            storage = self.study._storage
            storage.set_trial_user_attr(trial._trial_id, "never_started", OVER_BUDGET)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return kept

    def _reclaim_stale(self, trials: list[FrozenTrial]) -> None:
        if self.leasing is None:
            return
        grace = self.leasing.grace_s
        stale = self.leasing.book.stale(grace)
        if stale:
            taken = reclaim(
                self.study,
                self.leasing.book,
                stale,
                why=f"its worker sent no heartbeat for {grace:g} s",
                max_failures=self.leasing.max_failures,
            )
            if taken:
                self.events.phase(f"took back trials {taken}: their worker stopped; queued again")
        orphans = fail_orphans(self.study, self.leasing.book, older_than_s=grace, trials=trials)
        if orphans:
            self.events.phase(f"trials {orphans} were created during a database outage and never ran: failed")

    def _start(self, pack: list[tuple[optuna.Trial, dict[str, Any]]]) -> list[TrialHandle]:
        out_of_time = self.budget.trial_deadline(self.study)  # one per pack: see StudyDeadline
        handles = []
        if self.leasing is not None:
            self.leasing.book.acquire([(trial._trial_id, trial.number) for trial, _ in pack])
        for trial, params in pack:
            self.seen.add(trial.number)
            if self.checkpoints:
                self.backend.touch(trial.number)
            handle = TrialHandle(
                trial,
                params,
                scheduler=self.scheduler,
                on_report=self._reported,
                on_end=self.conclude,
                out_of_time=out_of_time,
            )
            if self.packs:  # the pack a trial trained in: the number of its first trial
                handle.set_attr("population", pack[0][0].number)
            self.scheduler.on_trial_start(trial.number, params)
            self.events.trial_started(trial.number, params)
            handles.append(handle)
        return handles

    def reached(self, value: float) -> bool:
        """Whether ``value`` reaches the study's target (in its direction)."""
        return self.budget.reached_target(value, self.scheduler.direction)

    def _reported(self, handle: TrialHandle, epoch: int, value: float) -> None:
        if self.checkpoints:
            self.backend.touch(handle.number)
        self.events.trial_reported(handle.number, epoch, value)

    def conclude(self, handle: TrialHandle, outcome: Outcome) -> None:
        """End ``handle``'s trial with ``outcome``: store its attributes (and why it failed), tell the study,
        end it in the scheduler, write it to the storage, count it, and tell the events. A result whose lease
        another process took (:attr:`TrialHandle.lost`) is dropped: that process ended the trial."""
        if self.leasing is not None and (handle.lost or not self.leasing.book.tell(handle._trial._trial_id)):
            self._drop(handle)
            return
        status: OutcomeState = outcome.state
        values, reason, attrs = list(outcome.values), outcome.reason, outcome.attrs
        if (
            status == "pruned"
            and handle.cut_without_result
            and handle.last_value is not None
            and not self.multi
        ):
            # The budget ended the search before any trial completed: this trial's last value is its result.
            status, values = "complete", [handle.last_value]
            attrs = {**attrs, "cut_by_budget": cut_note(handle.last_epoch, scored=False)}
        if status == "complete":
            reason = not_finite(values)
            if reason is not None:  # its attributes would describe a result that is not one
                status, attrs = "failed", {}
        for key, value in attrs.items():
            handle.set_attr(key, value)
        if status == "failed":
            handle.set_attr("fail_reason", reason or "unknown")
        complete = status == "complete"
        if handle.lost:  # taken back while its attributes were written (a worker without leases)
            self._drop(handle)
            return
        try:
            tell(self.study, handle._trial, values if complete else None, state=_STATES[status])
        except UpdateFinishedTrialError:
            self._drop(handle)
            return
        except RuntimeError:
            # GridSampler calls study.stop() once the grid is done, which Optuna allows only inside
            # optimize(); the result is stored before that, and the loop sees the exhausted grid next.
            if self.grid is None or not self.grid.is_exhausted(self.study):
                raise
        number = handle.number
        if self.leasing is not None:
            self.leasing.book.finished(handle._trial._trial_id)
        self.scheduler.on_trial_end(number, status)
        self.backend.touch(number, finished=True)
        self.counts.add(status, handle.last_epoch)
        self.events.trial_finished(number, status, values[0] if complete else None)
        if complete and self.budget.target is not None and not self.multi and self.reached(values[0]):
            self.reached_target = True

    def _drop(self, handle: TrialHandle) -> None:
        """``handle``'s trial was taken back by another process, which failed it and queued it again."""
        handle.lost = True
        self.scheduler.on_trial_end(handle.number, "failed")
        self.events.phase(f"trial {handle.number} was taken back by another worker; its result is dropped")


def replay(
    study: optuna.Study,
    space: SearchSpace,
    scheduler: BaseScheduler,
    seen: set[int],
    *,
    trials: Sequence[FrozenTrial] | None = None,
) -> None:
    """Feed finished trials the scheduler has not seen to it: an earlier run's (so rungs and medians resume
    where they were), and, on a storage shared by several workers, the other workers' trials. ``trials``:
    the study's trials as just read (read here when None)."""
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=FINISHED)
    for trial in trials:
        if trial.number in seen or trial.state not in FINISHED:
            continue
        seen.add(trial.number)
        try:
            params = space.overrides_from_params(trial.params)
        except SpecError:
            params = {}
        scheduler.on_trial_start(trial.number, params)
        for epoch in sorted(trial.intermediate_values):
            scheduler.on_report(trial.number, epoch, trial.intermediate_values[epoch])
        scheduler.on_trial_end(trial.number, _STATUS[trial.state])


def summarize(
    study: optuna.Study, space: SearchSpace, stop_reason: str, elapsed_s: float, *, multi: bool
) -> StudySummary:
    """The :class:`StudySummary` of ``study`` as it is now."""
    counts = StudyCounts.of(study.get_trials(deepcopy=False))
    best: tuple[dict[str, Any] | None, float | None, int | None] = (None, None, None)
    front: list[tuple[dict[str, Any], list[float]]] = []
    if counts.n_complete and not multi:
        trial: FrozenTrial = study.best_trial
        best = space.overrides_from_params(trial.params), trial.value, trial.number
    elif counts.n_complete:
        front = [(space.overrides_from_params(t.params), list(t.values)) for t in study.best_trials]
    return StudySummary(
        study.study_name,
        *best,
        **asdict(counts),
        elapsed_s=elapsed_s,
        stop_reason=stop_reason,
        pareto_front=front,
    )
