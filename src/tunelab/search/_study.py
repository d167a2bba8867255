"""``run_study``: the ask/tell loop that joins a search space, a sampler, a scheduler and an objective."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from tunelab.errors import SpecError, TrainingError
from tunelab.search._handle import StudyDeadline, TrialHandle
from tunelab.search._samplers import make_sampler
from tunelab.search._storage import StudyBackend, WriteBehind, open_backend
from tunelab.search.schedulers import BaseScheduler, Direction, NoScheduler
from tunelab.search.space import SearchSpace

__all__ = ["StudySummary", "run_study"]

Objective = Callable[[TrialHandle], Any]


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


def _check_budget(value: Any, name: str, *, kind: type) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
        raise SpecError(
            f"{name} must be a positive {'number' if kind is float else 'whole number'}, got {value!r}."
        )


def _epochs_of(trial: FrozenTrial) -> int:
    return max(trial.intermediate_values, default=0)


def run_study(
    objective: Objective,
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
    seed: int = 0,
) -> StudySummary:
    """Run trials until a budget is spent; return what was found.

    ``objective(handle)`` trains one configuration (``handle.params``, a nested override dict), calls
    ``handle.report(epoch, value)`` after each epoch, and returns the final value (a sequence of values for
    ``directions``). Outcomes: returned a finite value → COMPLETE; told STOP (or raised
    ``optuna.TrialPruned``) → PRUNED; raised :class:`~tunelab.errors.TrainingError` or returned a non-finite
    value → FAIL with the reason in the user attribute ``fail_reason``, and the study goes on. Any other
    exception is recorded as FAIL too, then propagates.

    Budgets (at least one of the first three): ``n_trials`` finished trials in the study, counting those of an
    earlier run of the same study (so rerunning after a crash finishes the job); ``timeout_s`` seconds of this
    call; ``max_total_epochs`` epochs reported over the study; and ``target``: stop once a trial reaches it.
    Budgets are checked between trials; a running trial always finishes.
    """
    dirs = list(directions) if directions is not None else [direction]
    multi = len(dirs) > 1
    if not dirs or any(d not in ("minimize", "maximize") for d in dirs):
        raise SpecError(f"directions must be 'minimize' or 'maximize', got {dirs!r}.")
    if not isinstance(space, SearchSpace):
        raise SpecError(
            f"space must be a SearchSpace (SearchSpace.from_dict(...)), got {type(space).__name__}."
        )
    _check_budget(n_trials, "n_trials", kind=int)
    _check_budget(timeout_s, "timeout_s", kind=float)
    _check_budget(max_total_epochs, "max_total_epochs", kind=int)
    if n_trials is None and timeout_s is None and max_total_epochs is None:
        raise SpecError("give the study a budget: n_trials, timeout_s or max_total_epochs (or several).")
    scheduler = scheduler if scheduler is not None else NoScheduler(direction=dirs[0])
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
    if isinstance(sampler, str):
        sampler = make_sampler(sampler, seed=seed, space=space, multi_objective=multi)

    started = time.monotonic()
    backend = open_backend(storage, study_name=study_name, directions=dirs, sampler=sampler)
    try:
        seen: set[int] = set()
        _replay(backend.study, space, scheduler, seen)
        stop_reason = _loop(
            objective,
            space,
            backend,
            scheduler,
            multi=multi,
            budget=_Budget(n_trials, timeout_s, max_total_epochs, target, dirs[0], started),
            seen=seen,
        )
    finally:
        backend.close()
    return _summarize(backend.study, space, stop_reason, time.monotonic() - started, multi=multi)


@dataclass
class _Budget:
    n_trials: int | None
    timeout_s: float | None
    max_total_epochs: int | None
    target: float | None
    direction: str
    started: float

    def spent(self, n_finished: int, n_epochs: int) -> str | None:
        """The budget that is used up (its name, the study's stop reason), or None to go on."""
        if self.n_trials is not None and n_finished >= self.n_trials:
            return "n_trials"
        # Time ends a study only once it has run a trial: a search always ends with a result (or the first
        # trial's failure), however little time it was given.
        if n_finished and self.timeout_s is not None and time.monotonic() - self.started >= self.timeout_s:
            return "timeout"
        if self.max_total_epochs is not None and n_epochs >= self.max_total_epochs:
            return "max_total_epochs"
        return None

    def past_deadline(self) -> bool:
        """Whether the time budget is spent (a running trial's check; :meth:`spent` is the loop's)."""
        return self.timeout_s is not None and time.monotonic() - self.started >= self.timeout_s

    def trial_deadline(self, study: optuna.Study) -> StudyDeadline | None:
        """The check running trials make (:meth:`TrialHandle.out_of_time`); None without a time budget."""
        return None if self.timeout_s is None else StudyDeadline(self.past_deadline, study)

    def reached_target(self, value: float) -> bool:
        if self.target is None:
            return False
        return value <= self.target if self.direction == "minimize" else value >= self.target


def _find_tell() -> Callable[..., Any] | None:
    """Optuna's ``Study.tell`` minus its last step, when this Optuna has it with the expected parameters."""
    import inspect

    try:
        from optuna.study._tell import _tell_with_warning
    except ImportError:
        return None
    expected = ["study", "trial", "value_or_values", "state", "skip_if_finished", "suppress_warning"]
    if list(inspect.signature(_tell_with_warning).parameters) != expected:
        return None
    return _tell_with_warning


_TELL = _find_tell()


def tell(
    study: optuna.Study, trial: optuna.Trial, values: Sequence[float] | None, *, state: TrialState
) -> None:
    """``study.tell(trial, values, state=state)`` without building the deep copy of the finished trial that
    ``Study.tell`` returns (and the search never reads): about 0.4 ms a trial, a fifth of an in-memory TPE
    trial's whole cost. Uses the function ``Study.tell`` itself calls first (private to Optuna, so checked by
    signature once; any other Optuna takes ``study.tell``, slower but the same)."""
    if _TELL is None:
        study.tell(trial, values, state=state)
    else:
        _TELL(study, trial, values, state, False, False)


def _replay(
    study: optuna.Study, space: SearchSpace, scheduler: BaseScheduler, seen: set[int] | None = None
) -> None:
    """Feed finished trials the scheduler has not seen to it: an earlier run's (so rungs and medians resume
    where they were), and, on a storage shared by several workers, the other workers' trials."""
    status = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    for trial in study.get_trials(deepcopy=False, states=tuple(status)):
        if seen is not None:
            if trial.number in seen:
                continue
            seen.add(trial.number)
        try:
            params = space.overrides_from_params(trial.params)
        except SpecError:
            params = {}
        scheduler.on_trial_start(trial.number, params)
        for epoch in sorted(trial.intermediate_values):
            scheduler.on_report(trial.number, epoch, trial.intermediate_values[epoch])
        scheduler.on_trial_end(trial.number, status[trial.state])  # type: ignore[arg-type]


def _loop(
    objective: Objective,
    space: SearchSpace,
    backend: StudyBackend,
    scheduler: BaseScheduler,
    *,
    multi: bool,
    budget: _Budget,
    seen: set[int],
) -> str:
    study = backend.study
    # On a storage other processes write to, their finished trials reach the scheduler before each ask.
    shared = backend.shared
    finished = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    n_finished = len(finished)
    n_epochs = sum(_epochs_of(t) for t in finished)
    if budget.target is not None and any(
        t.state == TrialState.COMPLETE and budget.reached_target(t.values[0]) for t in finished
    ):
        return "target"
    grid = study.sampler if isinstance(study.sampler, optuna.samplers.GridSampler) else None
    while True:
        spent = budget.spent(n_finished, n_epochs)
        if spent is not None:
            return spent
        if grid is not None and grid.is_exhausted(study):
            return "grid_exhausted"
        if shared:
            _replay(study, space, scheduler, seen)
        trial = study.ask()
        seen.add(trial.number)
        backend.touch(trial.number)
        state, values, epochs = _run_one(
            objective, trial, space, backend, scheduler, multi=multi, out_of_time=budget.trial_deadline(study)
        )
        try:
            tell(study, trial, values, state=state)
        except RuntimeError:
            # GridSampler calls study.stop() once the grid is done, which Optuna allows only inside
            # optimize();
            # the result is stored before that, and the loop sees the exhausted grid at its next check.
            if grid is None or not grid.is_exhausted(study):
                raise
        status = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(state, "failed")
        scheduler.on_trial_end(trial.number, status)  # type: ignore[arg-type]
        backend.touch(trial.number, finished=True)
        n_finished += 1
        n_epochs += epochs
        if state == TrialState.COMPLETE and values is not None and budget.reached_target(values[0]):
            return "target"


def _run_one(
    objective: Objective,
    trial: optuna.Trial,
    space: SearchSpace,
    backend: StudyBackend,
    scheduler: BaseScheduler,
    *,
    multi: bool,
    out_of_time: StudyDeadline | None = None,
) -> tuple[TrialState, list[float] | None, int]:
    """Run the objective on one trial: the state and values to tell Optuna, and the epochs it reported."""
    params = space.sample(trial)
    handle = TrialHandle(
        trial,
        params,
        scheduler=scheduler,
        multi_objective=multi,
        after_report=lambda: backend.touch(trial.number),
        out_of_time=out_of_time,
    )
    scheduler.on_trial_start(trial.number, params)
    state, values = _outcome(objective, handle, trial, backend, scheduler)
    return state, values, handle.last_epoch


def _outcome(
    objective: Objective,
    handle: TrialHandle,
    trial: optuna.Trial,
    backend: StudyBackend,
    scheduler: BaseScheduler,
) -> tuple[TrialState, list[float] | None]:
    try:
        result = objective(handle)
    except optuna.TrialPruned:
        return TrialState.PRUNED, None
    except TrainingError as err:
        trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}")
        return TrialState.FAIL, None
    except BaseException as err:
        trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}")
        trial.study.tell(trial, state=TrialState.FAIL)
        scheduler.on_trial_end(trial.number, "failed")
        backend.touch(trial.number, finished=True)
        raise
    if handle.stopped:
        return TrialState.PRUNED, None
    values = _as_values(result, n_objectives=len(trial.study.directions))
    if values is None:
        reason = f"the objective returned {result!r}, which is not finite"
        trial.set_user_attr("fail_reason", reason)
        return TrialState.FAIL, None
    return TrialState.COMPLETE, values


def _as_values(result: Any, *, n_objectives: int) -> list[float] | None:
    """The objective's result as ``n_objectives`` floats; None if one is not finite."""
    items = list(result) if isinstance(result, (list, tuple)) else [result]
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        raise SpecError(
            f"the objective must return {'a number' if n_objectives == 1 else f'{n_objectives} numbers'}, "
            f"but it returned {result!r}."
        ) from None
    if len(values) != n_objectives:
        raise SpecError(
            f"the objective returned {len(values)} values for {n_objectives} objectives: {result!r}."
        )
    return values if all(math.isfinite(v) for v in values) else None


def _summarize(
    study: optuna.Study, space: SearchSpace, stop_reason: str, elapsed_s: float, *, multi: bool
) -> StudySummary:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best_params = best_value = best_trial = None
    front: list[tuple[dict[str, Any], list[float]]] = []
    if complete and not multi:
        best = study.best_trial
        best_params, best_value, best_trial = (
            space.overrides_from_params(best.params),
            best.value,
            best.number,
        )
    elif complete:
        front = [(space.overrides_from_params(t.params), list(t.values)) for t in study.best_trials]
    return StudySummary(
        study_name=study.study_name,
        best_params=best_params,
        best_value=best_value,
        best_trial=best_trial,
        n_complete=len(complete),
        n_pruned=sum(t.state == TrialState.PRUNED for t in trials),
        n_failed=sum(t.state == TrialState.FAIL for t in trials),
        n_epochs=sum(_epochs_of(t) for t in trials),
        elapsed_s=elapsed_s,
        stop_reason=stop_reason,
        pareto_front=front,
    )
