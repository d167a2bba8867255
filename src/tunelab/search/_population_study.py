"""``run_population_study``: the ask/tell loop of :func:`~tunelab.search.run_study`, a population at a time.

Each step packs K trials that share their structure (:class:`~tunelab.search._packing.Packer`), trains them
as one fused population epoch by epoch on shared minibatches, evaluates all members in one batched pass and
reports each member's validation metric to its own trial. The scheduler decides per member: ``STOP`` shrinks
that member out of the population in place (its trial is PRUNED); a member whose loss stops being finite is
dropped and its trial FAILs with the reason; the others carry on unchanged. With cross-validation the members
still running after fold i go on, as a new population, to fold i + 1, reporting at epochs offset by
``i * epochs``, as the sequential objective does. Every trial is told to Optuna as it would be by
``run_study``, so storage, resume and the dashboard work unchanged.

With :class:`~tunelab.search.schedulers.PbtScheduler` each population is one PBT population: on an
:class:`~tunelab.search.schedulers.Exploit` the member copies the source member's weights, optimizer state,
early-stopping and plateau state (:meth:`SpecPopulation.exploit`), then trains on with the explored values
(:meth:`SpecPopulation.set_member`); its trial records the exploit (user attribute ``pbt_exploits``) and
keeps its own reports. An exploit decided at the epoch a member ends is not carried out (nothing would train
with it) and is taken off the record. Populations keep their configured size under a time budget.

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
from functools import partial
from typing import Any, Protocol

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from torch import Tensor

from tunelab.errors import SpecError, TrainingError
from tunelab.search._handle import StudyDeadline, TrialHandle
from tunelab.search._packing import Packer
from tunelab.search._packing import startup_populations as default_startup_populations
from tunelab.search._sizing import PopulationSizer, expected_epochs, forward_flops
from tunelab.search._spec_population import SpecPopulation
from tunelab.search._storage import StudyBackend, WriteBehind, open_backend
from tunelab.search._study import StudySummary, _Budget, _check_budget, _replay, _summarize, tell
from tunelab.search.schedulers import BaseScheduler, Decision, Direction, Exploit, PbtScheduler
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
    told: bool = False  # whether its trial has been told to the study

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
    flop_rate: float | None = None,
    shared_storage: bool = False,
    startup_populations: int | None = None,
    seed: int = 0,
) -> StudySummary:
    """Run the study in fused populations of up to ``population_size`` trials; see the module docstring.

    ``make_spec(overrides)`` turns a trial's nested overrides into its ``ExperimentSpec`` (raising
    :class:`~tunelab.errors.TrainingError` for a combination the spec rejects: that trial fails). ``metric``
    is the logged quantity reported and returned (``val_accuracy``, ``val_loss``, ``loss``...); the trial's
    value is its mean over ``folds``, with the user attributes ``fold_values`` and ``best_epochs`` set as the
    sequential objective sets them.

    With ``timeout_s``, each population is sized to its structure's cost and the time left
    (:mod:`tunelab.search._sizing`; ``population_size`` is then the largest it may be); ``flop_rate``, the
    training rate in FLOP/s measured by the fusion probe, sizes the populations before the first is measured.
    ``shared_storage``: other processes run populations on the same study (``--workers N``; see
    :class:`~tunelab.search._packing.Packer`). ``startup_populations``: how many populations start from a
    random draw of the whole space, structure included (None: the sampler's own startup trials, see
    :func:`~tunelab.search._packing.startup_populations`); ``seed`` seeds those draws.
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
    if isinstance(scheduler, PbtScheduler) and scheduler.perturbation_interval < 2:
        raise SpecError(
            f"PBT's perturbation_interval is {scheduler.perturbation_interval}; a population needs at least "
            "2. Its members report one after another, and PBT ranks each against the others' latest values: "
            "with an exploit step every epoch, those that reported first would be ranked before the others "
            "had a value (at epoch 1 all but the best would copy it)."
        )
    if isinstance(scheduler, PbtScheduler) and len(folds) > 1:
        raise SpecError(
            f"PBT copies weights between members trained side by side, but with {len(folds)} folds every "
            "fold trains from scratch, so the copies could not carry over; run PBT on a single split (one "
            "fold)."
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
        flop_rate=flop_rate,
        shared_storage=shared_storage,
        startup_populations=(
            default_startup_populations(sampler) if startup_populations is None else startup_populations
        ),
        seed=seed,
    )
    try:
        _replay(backend.study, space, scheduler, loop.seen)
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
        flop_rate: float | None,
        shared_storage: bool = False,
        startup_populations: int = 0,
        seed: int = 0,
    ) -> None:
        self.make_spec, self.data, self.space = make_spec, data, space
        self.backend, self.study, self.scheduler = backend, backend.study, scheduler
        self.metric, self.folds, self.events = metric, folds, events
        # Trials reach the storage when they finish (one write each), not at every report: a population
        # reports K values per epoch. A killed population's trials are simply absent, and run again.
        self.packer = Packer(
            self.study, space, shared=shared_storage, startup_populations=startup_populations, seed=seed
        )
        self.shared = shared_storage
        self.seen: set[int] = set()  # trials the scheduler knows: started here, or replayed from the storage
        first = data.bundle(folds[0])
        self.sizer = PopulationSizer(rows=len(first.X_train), flop_rate=flop_rate)
        self._flops: dict[str, float] = {}  # forward FLOPs per sample, by model spec
        self._budget: _Budget | None = None  # set by run()
        self._out_of_time: StudyDeadline | None = None  # the running population's time-budget check

    def run(self, budget: _Budget, population_size: int) -> str:
        """Train populations until a budget is spent; the reason it stopped."""
        self._budget = budget
        finished = self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        )
        n_finished = len(finished)
        n_epochs = sum(max(t.intermediate_values, default=0) for t in finished)
        if any(t.state == TrialState.COMPLETE and budget.reached_target(t.values[0]) for t in finished):
            return "target"
        while True:
            if self.shared:
                # Other processes train populations on this study too: the scheduler ranks their trials as
                # well, and the budgets count every process's trials.
                _replay(self.study, self.space, self.scheduler, self.seen)
                finished = self.study.get_trials(
                    deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
                )
                n_finished = len(finished)
                n_epochs = sum(max(t.intermediate_values, default=0) for t in finished)
            spent = budget.spent(n_finished, n_epochs)
            if spent is not None:
                return spent
            cap = population_size
            if budget.n_trials is not None:
                cap = min(cap, budget.n_trials - n_finished)
            if budget.max_total_epochs is not None and n_finished:
                # No more members than the epochs left pay for, at this study's mean epochs per trial.
                per_trial = max(1.0, n_epochs / n_finished)
                cap = min(cap, max(1, math.ceil((budget.max_total_epochs - n_epochs) / per_trial)))
            time_left = None
            if budget.timeout_s is not None:
                time_left = budget.timeout_s - (time.monotonic() - budget.started)
            members = self._start(self.packer.next_pack(partial(self._size, cap=cap, time_left=time_left)))
            started = time.monotonic()
            try:
                self._train(members)
            except BaseException as err:
                for member in members:
                    if member.state == TrialState.RUNNING:
                        member.fail(f"{type(err).__name__}: {err}")
                    if not member.told:
                        self._finish(member)
                raise
            trained = [m for m in members if m.spec is not None]
            if trained:
                epochs = sum(m.handle.last_epoch for m in trained)
                self.sizer.observe(self._flops_of(trained[0].spec), epochs, time.monotonic() - started)
            n_finished += len(members)
            n_epochs += sum(m.handle.last_epoch for m in members)
            if any(
                m.state == TrialState.COMPLETE and budget.reached_target(statistics.fmean(m.fold_values))
                for m in members
            ):
                return "target"

    # -- one population --
    def _start(self, pack: list[tuple[optuna.Trial, dict[str, Any]]]) -> list[_Member]:
        # A check of its own per population: its storage reads within epochs are throttled, so one carried
        # over could answer from before the last population's trials completed.
        self._out_of_time = None if self._budget is None else self._budget.trial_deadline(self.study)
        members = []
        for trial, params in pack:
            self.seen.add(trial.number)
            handle = TrialHandle(trial, params, scheduler=self.scheduler, out_of_time=self._out_of_time)
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
        """Train ``members`` fold after fold; each trial is told to the study the moment it ends (stopped,
        failed, or through its last fold), so the study, its storage and the progress display see results
        while the rest of the population trains on."""
        for member in members:
            if member.state != TrialState.RUNNING:  # its spec was rejected
                self._finish(member)
        for index, fold in enumerate(self.folds):
            running = [m for m in members if m.state == TrialState.RUNNING]
            if not running or (index > 0 and self._stop_for_time(running)):
                return
            last = index == len(self.folds) - 1
            self._train_fold(running, fold, offset=index * running[0].spec.train.epochs, last=last)

    def _train_fold(self, members: list[_Member], fold: int | None, *, offset: int, last: bool) -> None:
        bundle = self.data.bundle(fold)
        population = SpecPopulation(
            [m.spec.model for m in members],
            [m.spec.train for m in members],
            input_shape=tuple(bundle.input_shape),
            output_dim=_output_dim(bundle, members[0].spec),
            task=bundle.task,
            n_classes=bundle.n_classes,
            target_scale=bundle.target_scale,
            # PBT may later give a member weight decay or dropout that none had when the population was built.
            mutable=self.scheduler.mutable if isinstance(self.scheduler, PbtScheduler) else (),
        )
        x, y = _prepared(bundle.X_train, bundle.y_train, bundle.task, population)
        x_val, y_val = _prepared(bundle.X_val, bundle.y_val, bundle.task, population)
        slots = list(members)
        for member in slots:
            member.values = {}
        n_epochs = members[0].spec.train.epochs
        out_of_time = self._out_of_time
        interrupt = None if out_of_time is None else lambda: out_of_time(throttled=True)
        for epoch in range(1, n_epochs + 1):
            losses = population.train_epoch(x, y, interrupt=interrupt)
            if losses is None:  # the time budget ran out within the epoch: nobody has a new result
                self._end_for_time(slots)
                return
            alive = population.alive
            logs = [
                {"loss": loss, **val}
                for loss, val in zip(losses, population.evaluate(x_val, y_val), strict=True)
            ]
            early_stops = population.end_epoch(logs)
            done = []
            # Diverged members end before anyone reports, so the scheduler never ranks (or PBT copies) a
            # member whose weights are no longer finite.
            for k, member in enumerate(slots):
                if not alive[k]:
                    member.fail(_diverged(population, k, epoch))
                    done.append(k)
                    self._finish(member)
            order = self._report_order(logs, alive)
            values = {k: self._value(logs[k]) for k in order}
            # The members end the epoch together: ranked together at a rung. PBT is asked member by member
            # instead, each after the exploits of those that reported before it were carried out.
            together = None
            if not isinstance(self.scheduler, PbtScheduler):
                reports = [(slots[k].trial.number, offset + epoch, values[k]) for k in order]
                together = self.scheduler.on_reports(reports)
            for i, k in enumerate(order):
                member = slots[k]
                value = values[k]
                member.values[epoch] = value
                decision = member.handle.report(
                    offset + epoch, value, decision=None if together is None else together[i]
                )
                self.events.trial_reported(member.trial.number, offset + epoch, value)
                ends = early_stops[k] or epoch == n_epochs
                if isinstance(decision, Exploit):
                    self._exploit(population, slots, k, decision, logs, epoch=epoch, ends=ends)
                if decision is Decision.STOP:
                    member.state = TrialState.PRUNED
                elif ends:
                    best = population.best_epoch(k)
                    final = best if population.restores_best(k) and best is not None else epoch
                    member.fold_values.append(member.values[final])
                    member.best_epochs.append(best or epoch)
                    if last:
                        _complete(member)
                else:
                    continue
                done.append(k)
                if member.state != TrialState.RUNNING:
                    self._finish(member)
            if len(done) == len(slots):
                return
            population.remove(done)
            gone = set(done)
            slots = [m for k, m in enumerate(slots) if k not in gone]
            if self._stop_for_time(slots):  # they all have epochs to go: the others ended above
                return

    def _stop_for_time(self, members: list[_Member]) -> bool:
        """End ``members`` (trials with epochs to go) as pruned when the study's time budget is spent: the
        population's members share one clock, so the first one's answer is everyone's."""
        if not members[0].handle.out_of_time():
            return False
        self._end_for_time(members)
        return True

    def _end_for_time(self, members: list[_Member]) -> None:
        for member in members:
            member.handle.stop_for_time()
            member.state = TrialState.PRUNED
            self._finish(member)

    def _report_order(self, logs: list[dict[str, float]], alive: list[bool]) -> list[int]:
        """The live members' slots in the order they report this epoch: slot order; under PBT best value
        first. PBT ranks each report against the latest values of the others, and those not yet reported
        this epoch still hold last epoch's: reported best first, a member is ranked against this epoch's
        values of every better one, so one in the bottom of the population is always found there."""
        live = [k for k in range(len(logs)) if alive[k]]
        if not isinstance(self.scheduler, PbtScheduler):
            return live
        return sorted(live, key=lambda k: (self.scheduler.score(self._value(logs[k])), k))

    def _exploit(
        self,
        population: SpecPopulation,
        slots: list[_Member],
        k: int,
        decision: Exploit,
        logs: list[dict[str, float]],
        *,
        epoch: int,
        ends: bool,
    ) -> None:
        """Carry out PBT's exploit for the member in slot ``k``: copy the source member over it, then give it
        ``decision.new_params``. The member's reported values stay its own; the values it uses to pick its
        fold value (its best epoch's, with restore_best) follow the weights it now has, the source's."""
        member = slots[k]
        source = next(
            (j for j, m in enumerate(slots) if m.trial.number == decision.source_trial_id and j != k), None
        )
        if ends or source is None:
            # Ending now: nothing would train with the copy. (PBT ranks only live trials, which are the
            # members of this population, so a source is always found here.)
            _withdraw_exploit(member, self.space)
            return
        try:
            spec = self.make_spec(dict(decision.new_params))
        except TrainingError:  # the explored values make a spec the spec rejects: keep training as it was
            _withdraw_exploit(member, self.space)
            return
        population.exploit(source, k)
        population.set_member(k, spec.model, spec.train)
        member.spec = spec
        member.values = {**slots[source].values, epoch: self._value(logs[source])}

    def _value(self, logs: dict[str, float]) -> float:
        if self.metric not in logs:
            raise SpecError(
                f"search.metric '{self.metric}' is not in the training logs; available: "
                f"{', '.join(k for k in logs if k.startswith('val_'))}."
            )
        return float(logs[self.metric])

    def _finish(self, member: _Member) -> None:
        """Tell Optuna and the scheduler how ``member``'s trial ended, and write it to the storage."""
        trial = member.trial
        values: list[float] | None = None
        if member.state == TrialState.COMPLETE:
            member.handle.set_attr("fold_values", member.fold_values)
            member.handle.set_attr("best_epochs", member.best_epochs)
            values = [statistics.fmean(member.fold_values)]
        elif member.state != TrialState.PRUNED:
            member.state = TrialState.FAIL
            trial.set_user_attr("fail_reason", member.fail_reason or "unknown")
        tell(self.study, trial, values, state=member.state)
        member.told = True
        state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(member.state, "failed")
        self.events.trial_finished(trial.number, state, values[0] if values else None)
        self.scheduler.on_trial_end(trial.number, state)  # type: ignore[arg-type]
        self.backend.touch(trial.number, finished=True)

    # -- population size --
    def _size(self, params: dict[str, Any], *, cap: int, time_left: float | None) -> int:
        """Members for a population of the structure of ``params`` (the first trial's overrides): at most
        ``cap``, and with a time budget no more than the sizer (:mod:`tunelab.search._sizing`) expects to fit
        in its share of ``time_left``."""
        if isinstance(self.scheduler, PbtScheduler):
            # A PBT population is the unit of its search: members rank and copy one another, so shrinking it
            # to fit the time left would leave too few to rank (one member never exploits). It keeps the
            # configured size; the time budget is checked between populations, as always.
            return cap
        if time_left is None:
            return cap
        try:
            spec = self.make_spec(params)
        except TrainingError:
            return 1  # the first trial fails at once; the next population starts right after
        epochs = expected_epochs(self.scheduler, spec.train.epochs * len(self.folds))
        return self.sizer.size(self._flops_of(spec), epochs=epochs, cap=cap, time_left=time_left)

    def _flops_of(self, spec: Any) -> float:
        key = repr(spec.model)
        if key not in self._flops:
            bundle = self.data.bundle(self.folds[0])
            self._flops[key] = forward_flops(
                spec.model, input_shape=tuple(bundle.input_shape), output_dim=_output_dim(bundle, spec)
            )
        return self._flops[key]


def _complete(member: _Member) -> None:
    """``member`` went through every fold: its trial completes with the mean, unless that is not finite."""
    mean = statistics.fmean(member.fold_values)
    if math.isfinite(mean):
        member.state = TrialState.COMPLETE
    else:
        member.fail(f"the objective returned {mean!r}, which is not finite")


def _withdraw_exploit(member: _Member, space: SearchSpace) -> None:
    """Take the exploit just recorded off ``member``'s trial (it was not carried out): its recorded exploits
    and current parameters are as before it."""
    handle = member.handle
    handle.exploits.pop()
    handle.params = (
        dict(handle.exploits[-1]["params"])
        if handle.exploits
        else space.overrides_from_params(member.trial.params)
    )
    handle.set_attr("pbt_exploits", handle.exploits)


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
