"""``run_population_study``: the ask/tell loop of :func:`~tunelab.search.run_study`, a population at a time.

Each step packs K trials that share their structure (:class:`~tunelab.search._packing.Packer`), trains them
as one fused population epoch by epoch on shared minibatches, evaluates all members in one batched pass and
reports each member's validation metric to its own trial. The scheduler decides per member: ``STOP`` shrinks
that member out of the population in place (its trial is PRUNED); a member whose loss stops being finite is
dropped and its trial FAILs with the reason; the others carry on unchanged. With cross-validation the members
still running after fold i go on, as a new population, to fold i + 1, reporting at epochs offset by
``i * epochs``, as the sequential objective does. Every trial is told to Optuna as it would be by
``run_study``, so storage, resume and the dashboard work unchanged.

Budgets are those of ``run_study``, checked between populations (a running population finishes; its size is
capped by the trials and epochs left). An interrupted population's trials are retried from scratch on resume:
populations write no per-trial checkpoints.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from torch import Tensor

from tunelab.errors import SpecError, TrainingError
from tunelab.search._handle import TrialHandle
from tunelab.search._packing import Packer
from tunelab.search._spec_population import SpecPopulation
from tunelab.search._storage import StudyBackend, WriteBehind, open_backend
from tunelab.search._study import StudySummary, _Budget, _check_budget, _replay, _summarize
from tunelab.search.schedulers import BaseScheduler, Decision, Direction
from tunelab.search.space import SearchSpace

__all__ = ["PopulationData", "StudyEvents", "run_population_study"]


class StudyEvents(Protocol):
    """What the loop tells a progress display (``tunelab.tune.Events`` is one): a phase message when called,
    and each trial's start, reports and end (``state``: complete, pruned or failed)."""

    def __call__(self, message: str) -> None: ...

    def trial_started(self, number: int, params: dict[str, Any]) -> None: ...

    def trial_reported(self, number: int, epoch: int, value: float) -> None: ...

    def trial_finished(self, number: int, state: str, value: float | None) -> None: ...


class _NoEvents:
    def __call__(self, message: str) -> None:
        pass

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        pass

    def trial_reported(self, number: int, epoch: int, value: float) -> None:
        pass

    def trial_finished(self, number: int, state: str, value: float | None) -> None:
        pass


class PopulationData(Protocol):
    """Where a population study gets its data: the prepared bundle of a fold (None: the holdout split)."""

    def bundle(self, fold: int | None) -> Any:
        """A :class:`tunelab.data.DataBundle`."""


@dataclass
class _Member:
    """One trial in a population, with what it has gathered so far."""

    trial: optuna.Trial
    handle: TrialHandle
    spec: Any = None  # its ExperimentSpec
    state: TrialState = TrialState.RUNNING
    fail_reason: str | None = None
    fold_values: list[float] = field(default_factory=list)
    best_epochs: list[int] = field(default_factory=list)
    values: dict[int, float] = field(default_factory=dict)  # this fold's metric per epoch

    def fail(self, reason: str) -> None:
        self.state, self.fail_reason = TrialState.FAIL, reason


def run_population_study(
    make_spec: Callable[[dict[str, Any]], Any],
    data: PopulationData,
    space: SearchSpace,
    *,
    population_size: int,
    metric: str,
    direction: Direction = "minimize",
    folds: Sequence[int | None] = (None,),
    sampler: optuna.samplers.BaseSampler,
    scheduler: BaseScheduler,
    storage: str | WriteBehind | BaseStorage | None = None,
    study_name: str = "tunelab",
    n_trials: int | None = None,
    timeout_s: float | None = None,
    max_total_epochs: int | None = None,
    target: float | None = None,
    events: StudyEvents | None = None,
) -> StudySummary:
    """Run the study in fused populations of up to ``population_size`` trials; see the module docstring.

    ``make_spec(overrides)`` turns a trial's nested overrides into its ``ExperimentSpec`` (raising
    :class:`~tunelab.errors.TrainingError` for a combination the spec rejects: that trial fails). ``metric``
    is the logged quantity reported and returned (``val_accuracy``, ``val_loss``, ``loss``...); the trial's
    value is its mean over ``folds``, with the user attributes ``fold_values`` and ``best_epochs`` set as the
    sequential objective sets them.
    """
    _check_budget(n_trials, "n_trials", kind=int)
    _check_budget(timeout_s, "timeout_s", kind=float)
    _check_budget(max_total_epochs, "max_total_epochs", kind=int)
    _check_budget(population_size, "population_size", kind=int)
    if n_trials is None and timeout_s is None and max_total_epochs is None:
        raise SpecError("give the study a budget: n_trials, timeout_s or max_total_epochs (or several).")
    if scheduler.direction != direction:
        raise SpecError(
            f"the scheduler was built with direction='{scheduler.direction}' but the study will {direction}; "
            f"build it with direction='{direction}'."
        )
    started = time.monotonic()
    backend = open_backend(storage, study_name=study_name, directions=[direction], sampler=sampler)
    loop = _PopulationLoop(
        make_spec,
        data,
        space,
        backend,
        scheduler,
        metric=metric,
        folds=list(folds),
        events=events or _NoEvents(),
    )
    try:
        _replay(backend.study, space, scheduler)
        budget = _Budget(n_trials, timeout_s, max_total_epochs, target, direction, started)
        stop_reason = loop.run(budget, population_size)
    finally:
        backend.close()
    return _summarize(backend.study, space, stop_reason, time.monotonic() - started, multi=False)


class _PopulationLoop:
    def __init__(
        self,
        make_spec: Callable[[dict[str, Any]], Any],
        data: PopulationData,
        space: SearchSpace,
        backend: StudyBackend,
        scheduler: BaseScheduler,
        *,
        metric: str,
        folds: list[int | None],
        events: StudyEvents,
    ) -> None:
        self.make_spec, self.data, self.space = make_spec, data, space
        self.backend, self.study, self.scheduler = backend, backend.study, scheduler
        self.metric, self.folds, self.events = metric, folds, events
        # Trials reach the storage when they finish (one write each), not at every report: a population
        # reports K values per epoch. A killed population's trials are simply absent, and run again.
        self.packer = Packer(self.study, space)
        self.seconds, self.n_trained = 0.0, 0  # training time and trials of this run, for the time budget

    def run(self, budget: _Budget, population_size: int) -> str:
        """Train populations until a budget is spent; the reason it stopped."""
        finished = self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        )
        n_finished = len(finished)
        n_epochs = sum(max(t.intermediate_values, default=0) for t in finished)
        if any(t.state == TrialState.COMPLETE and budget.reached_target(t.values[0]) for t in finished):
            return "target"
        while True:
            spent = budget.spent(n_finished, n_epochs)
            if spent is not None:
                return spent
            size = population_size
            if budget.n_trials is not None:
                size = min(size, budget.n_trials - n_finished)
            if budget.max_total_epochs is not None and n_finished:
                # No more members than the epochs left pay for, at this study's mean epochs per trial.
                per_trial = max(1.0, n_epochs / n_finished)
                size = min(size, max(1, math.ceil((budget.max_total_epochs - n_epochs) / per_trial)))
            if budget.timeout_s is not None and self.n_trained:
                # No more members than the time left pays for, at this run's seconds per trial so far.
                left = budget.timeout_s - (time.monotonic() - budget.started)
                size = min(size, max(1, math.ceil(left / (self.seconds / self.n_trained))))
            members = self._start(self.packer.next_pack(size))
            started = time.monotonic()
            try:
                self._train(members)
            except BaseException as err:
                for member in members:
                    if member.state == TrialState.RUNNING:
                        member.fail(f"{type(err).__name__}: {err}")
                self._finish(members)
                raise
            self._finish(members)
            self.seconds += time.monotonic() - started
            self.n_trained += len(members)
            n_finished += len(members)
            n_epochs += sum(m.handle.last_epoch for m in members)
            if any(
                m.state == TrialState.COMPLETE and budget.reached_target(statistics.fmean(m.fold_values))
                for m in members
            ):
                return "target"

    # -- one population --
    def _start(self, pack: list[tuple[optuna.Trial, dict[str, Any]]]) -> list[_Member]:
        members = []
        for trial, params in pack:
            handle = TrialHandle(trial, params, scheduler=self.scheduler)
            # The population a trial trained in: the number of its first trial.
            handle.set_attr("population", pack[0][0].number)
            self.scheduler.on_trial_start(trial.number, params)
            member = _Member(trial, handle)
            self.events.trial_started(trial.number, params)
            try:
                member.spec = self.make_spec(params)
            except TrainingError as err:
                member.fail(f"{type(err).__name__}: {err}")
            members.append(member)
        return members

    def _train(self, members: list[_Member]) -> None:
        for index, fold in enumerate(self.folds):
            running = [m for m in members if m.state == TrialState.RUNNING]
            if not running:
                return
            self._train_fold(running, fold, offset=index * running[0].spec.train.epochs)
        for member in members:
            if member.state != TrialState.RUNNING:
                continue
            mean = statistics.fmean(member.fold_values)
            if not math.isfinite(mean):
                member.fail(f"the objective returned {mean!r}, which is not finite")
                continue
            member.state = TrialState.COMPLETE

    def _train_fold(self, members: list[_Member], fold: int | None, *, offset: int) -> None:
        bundle = self.data.bundle(fold)
        population = SpecPopulation(
            [m.spec.model for m in members],
            [m.spec.train for m in members],
            input_shape=tuple(bundle.input_shape),
            output_dim=_output_dim(bundle, members[0].spec),
            task=bundle.task,
            n_classes=bundle.n_classes,
            target_scale=bundle.target_scale,
        )
        x, y = _prepared(bundle.X_train, bundle.y_train, bundle.task, population)
        x_val, y_val = _prepared(bundle.X_val, bundle.y_val, bundle.task, population)
        slots = list(members)
        for member in slots:
            member.values = {}
        n_epochs = members[0].spec.train.epochs
        for epoch in range(1, n_epochs + 1):
            losses = population.train_epoch(x, y)
            alive = population.alive
            logs = [
                {"loss": loss, **val}
                for loss, val in zip(losses, population.evaluate(x_val, y_val), strict=True)
            ]
            early_stops = population.end_epoch(logs)
            done = []
            for k, member in enumerate(slots):
                if not alive[k]:
                    member.fail(_diverged(population, k, epoch))
                    done.append(k)
                    continue
                value = self._value(logs[k])
                member.values[epoch] = value
                decision = member.handle.report(offset + epoch, value)
                self.events.trial_reported(member.trial.number, offset + epoch, value)
                if decision is Decision.STOP:
                    member.state = TrialState.PRUNED
                    done.append(k)
                elif early_stops[k] or epoch == n_epochs:
                    best = population.best_epoch(k)
                    final = best if population.restores_best(k) and best is not None else epoch
                    member.fold_values.append(member.values[final])
                    member.best_epochs.append(best or epoch)
                    done.append(k)
            if len(done) == len(slots):
                return
            population.remove(done)
            gone = set(done)
            slots = [m for k, m in enumerate(slots) if k not in gone]

    def _value(self, logs: dict[str, float]) -> float:
        if self.metric not in logs:
            raise SpecError(
                f"search.metric '{self.metric}' is not in the training logs; available: "
                f"{', '.join(k for k in logs if k.startswith('val_'))}."
            )
        return float(logs[self.metric])

    def _finish(self, members: list[_Member]) -> None:
        """Tell Optuna and the scheduler how each member's trial ended."""
        status = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}
        for member in members:
            trial = member.trial
            values: list[float] | None = None
            if member.state == TrialState.COMPLETE:
                member.handle.set_attr("fold_values", member.fold_values)
                member.handle.set_attr("best_epochs", member.best_epochs)
                values = [statistics.fmean(member.fold_values)]
            elif member.state != TrialState.PRUNED:
                member.state = TrialState.FAIL
                trial.set_user_attr("fail_reason", member.fail_reason or "unknown")
            self.study.tell(trial, values, state=member.state)
            state = status.get(member.state, "failed")
            self.events.trial_finished(trial.number, state, values[0] if values else None)
            self.scheduler.on_trial_end(trial.number, state)  # type: ignore[arg-type]
            self.backend.touch(trial.number, finished=True)


def _output_dim(bundle: Any, spec: Any) -> int:
    from tunelab.train import output_dim_for

    n_targets = int(bundle.y_train.shape[1]) if bundle.y_train.ndim == 2 else 1
    return output_dim_for(bundle.task, bundle.n_classes, n_targets, spec.train.loss)


def _prepared(x: Tensor, y: Tensor, task: str, population: SpecPopulation) -> tuple[Tensor, Tensor]:
    """As the single trainer reads them: on the device; regression targets as ``[N, T]``."""
    x, y = x.to(population.device), y.to(population.device)
    if task != "classification" and y.ndim == 1:
        y = y.unsqueeze(1)
    return x, y


def _diverged(population: SpecPopulation, k: int, epoch: int) -> str:
    step = int(population.trainer.diverged_at_step[k]) + 1
    lr = float(population.trainer.optimizer.hparams["lr"][k])
    return (
        f"TrainingError: training diverged: the loss or its gradient became non-finite at epoch {epoch} "
        f"(optimizer step {step} of this fold); expected a finite loss. Try a lower learning rate (lr is "
        f"{lr:g} now), gradient clipping (e.g. grad_clip: 1.0), or check the inputs for NaN/inf values and "
        "unscaled features."
    )
