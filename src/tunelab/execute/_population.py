"""``PopulationExecutor``: a pack of trials that share their structure, trained as one fused population.

The population trains epoch by epoch on shared minibatches, evaluates all members in one batched pass and
reports each member's validation metric through its handle. The members end an epoch together, so they
report together (:func:`~tunelab.search.report_together`): ASHA and Hyperband rank them at a rung as one
group. On ``STOP`` a member is shrunk out of the population in place (its trial is pruned); a member whose
loss stops being finite is dropped and its trial fails with the reason; the others carry on unchanged. With
cross-validation the members still running after fold i go on, as a new population, to fold i + 1,
reporting at epochs offset by ``i * epochs``, as the sequential executor does. Each trial ends through its
handle the moment it ends (stopped, failed, or through its last fold), so the study, its storage and the
progress display see results while the others train on.

With :class:`~tunelab.search.PbtScheduler` each population is one PBT population: members report best first,
one by one; on an :class:`~tunelab.search.Exploit` the member copies the source member's weights, optimizer
state, early-stopping and plateau state (:meth:`SpecPopulation.exploit`), then trains on with the explored
values (:meth:`SpecPopulation.set_member`); an exploit decided at the epoch a member ends is withdrawn.

With a checkpoint store (``checkpoint_store``: Optuna's artifact-store protocol, in production
:class:`tunelab.storage.DatabaseArtifactStore`), a population writes its checkpoint every epoch, one artifact
per pack (:mod:`~tunelab.execute._pop_checkpoint` has its format), named in each trial's ``checkpoint`` user
attribute, and removed when the pack is over. A pack of retries of trials a kill interrupted (each handle's
``retry_of`` one of the checkpoint's trials, their ``resume_from`` its id) loads it and continues after the
saved epoch of the saved fold: every member's weights, optimizer state, early-stopping and plateau progress,
its values so far, and the streams that order the batches and draw dropout masks, so that it reports what it
would have reported uninterrupted (for a subset of the saved members with dropout, other masks: see
:meth:`SpecPopulation.state`). Without a checkpoint that holds every member (none, or another's), the pack
trains from scratch; under PBT too (exploits changed the members' configurations, which their retries'
parameters do not hold). Without a store, a population trial interrupted by a kill runs again from scratch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from torch import Tensor

from tunelab.data import DataBundle
from tunelab.errors import SpecError, TrainingError
from tunelab.execute._evaluator import FoldData, output_dim
from tunelab.execute._pop_checkpoint import FORMAT_VERSION, ArtifactStore, PackCheckpoints, read_checkpoint
from tunelab.execute._sizing import PopulationSizer, expected_epochs, forward_flops
from tunelab.execute._spec_population import SpecPopulation
from tunelab.models import TextSpec
from tunelab.search import (
    BaseExecutor,
    BaseScheduler,
    Decision,
    Executor,
    Exploit,
    NoScheduler,
    Outcome,
    PbtScheduler,
    TrialHandle,
    pbt_problem,
    report_together,
)
from tunelab.spec import PER_MEMBER_PATHS, ExperimentSpec

__all__ = ["PopulationExecutor"]


@dataclass
class _Member:
    """One trial of a population, with what it has gathered so far."""

    handle: TrialHandle
    spec: ExperimentSpec | None = None
    fold_values: list[float] = field(default_factory=list)
    best_epochs: list[int] = field(default_factory=list)
    values: dict[int, float] = field(default_factory=dict)  # this fold's metric per epoch
    resumed_at: int = 0  # the epoch (the trial's numbering) of the checkpoint it continues from, if any

    @property
    def running(self) -> bool:
        return not self.handle.ended


@dataclass
class _Resume:
    """Where a pack of retries continues: fold ``index`` after its ``epoch``, with ``population`` loaded from
    the checkpoint ``artifact``; ``members`` in the checkpoint's slot order; ``whole``: they are all of the
    checkpoint's members (no other retry will read it)."""

    index: int
    epoch: int
    population: SpecPopulation
    members: list[_Member]
    artifact: str
    whole: bool


class PopulationExecutor(BaseExecutor):
    """Trains packs of up to ``population_size`` trials as fused populations (see the module docstring).

    ``make_spec(overrides)`` turns a trial's nested overrides into its ``ExperimentSpec`` (raising
    :class:`~tunelab.errors.TrainingError` for a combination the spec rejects: that trial fails).
    ``data.bundle(fold)`` gives each fold's prepared data. ``metric`` is the logged quantity reported
    (``val_accuracy``, ``val_loss``...); a trial's value is its mean over ``folds``, with the user attributes
    ``fold_values`` and ``best_epochs``. ``flop_rate``: the training rate (FLOP/s) the fusion probe measured,
    which sizes populations under a time budget until one has been measured (:mod:`~tunelab.execute._sizing`).
    ``alone``: the executor for trials whose structure cannot be fused (L-BFGS, which steps each model with
    its own line search; text models whose encoder has no population layers: TextCNN, LSTM, GRU): their
    packs hold one trial, trained by it.

    ``checkpoint_store``: where each population writes its checkpoint every epoch, under
    ``f"{checkpoint_prefix}population-{n}"`` (n: its pack's first trial number), and from which a pack of
    retries resumes (see the module docstring); it sets :attr:`checkpoints`. Resuming under PBT is not
    supported: such a pack trains from scratch.
    """

    checkpoints = False
    per_member_paths = PER_MEMBER_PATHS

    def __init__(
        self,
        make_spec: Callable[[dict[str, Any]], ExperimentSpec],
        data: FoldData,
        population_size: int,
        *,
        metric: str,
        folds: Sequence[int | None] = (None,),
        flop_rate: float | None = None,
        alone: Executor | None = None,
        checkpoint_store: ArtifactStore | None = None,
        checkpoint_prefix: str = "",
    ) -> None:
        if isinstance(population_size, bool) or not isinstance(population_size, int) or population_size < 1:
            raise SpecError(f"population_size must be a positive whole number, got {population_size!r}.")
        self.make_spec, self.data, self.metric, self.folds = make_spec, data, metric, list(folds)
        self.max_pack_size = population_size
        self.scheduler: BaseScheduler = NoScheduler()
        self.sizer = PopulationSizer(rows=len(data.bundle(self.folds[0]).X_train), flop_rate=flop_rate)
        self._flops: dict[str, float] = {}  # forward FLOPs per sample, by model spec
        self.alone = alone
        self.checkpoint_store, self.checkpoint_prefix = checkpoint_store, checkpoint_prefix
        if checkpoint_store is not None:
            self.checkpoints = True  # the study loop then writes each trial to the storage at every report

    @property
    def pbt(self) -> PbtScheduler | None:
        return self.scheduler if isinstance(self.scheduler, PbtScheduler) else None

    def start(self, scheduler: BaseScheduler) -> None:
        if isinstance(scheduler, PbtScheduler):
            interval, n_folds = scheduler.perturbation_interval, len(self.folds)
            problem = pbt_problem(perturbation_interval=interval, n_folds=n_folds)
            if problem is not None:
                raise SpecError(problem + ".")
        self.scheduler = scheduler
        if self.alone is not None:
            self.alone.start(scheduler)

    # -- how many members --
    def pack_size(self, params: dict[str, Any], *, cap: int, time_left: float | None) -> int:
        """At most ``cap`` members; with a time budget, no more than the sizer expects to fit in its share of
        ``time_left`` for the structure of ``params``. A PBT population keeps its size: its members rank and
        copy one another, and shrunk it would have too few to rank (one member never exploits)."""
        cap = min(cap, self.max_pack_size)
        try:
            spec = self.make_spec(params)
        except TrainingError:
            return 1  # the first trial fails at once; the next population starts right after
        if self._trains_alone(spec):
            return 1
        if self.pbt is not None or time_left is None:
            return cap
        epochs = expected_epochs(self.scheduler, spec.train.epochs * len(self.folds))
        return self.sizer.size(self._flops_of(spec), epochs=epochs, cap=cap, time_left=time_left)

    def _flops_of(self, spec: ExperimentSpec) -> float:
        key = repr(spec.model)
        if key not in self._flops:
            bundle = self.data.bundle(self.folds[0])
            self._flops[key] = forward_flops(
                spec.model,
                input_shape=tuple(bundle.input_shape),
                output_dim=output_dim(bundle, spec.train),
                text=bundle.text,
            )
        return self._flops[key]

    def _trains_alone(self, spec: ExperimentSpec) -> bool:
        if self.alone is None:
            return False
        unfused_text = isinstance(spec.model, TextSpec) and spec.model.encoder != "bag"
        return spec.train.optimizer == "lbfgs" or unfused_text

    # -- one population --
    def run(self, pack: Sequence[TrialHandle]) -> list[Outcome]:
        if self.alone is not None and len(pack) == 1:
            try:
                alone = self._trains_alone(self.make_spec(pack[0].params))
            except TrainingError:
                alone = False  # fails below, as in a population
            if alone:
                return list(self.alone.run(pack))
        members = [_Member(handle) for handle in pack]
        for member in members:
            try:
                member.spec = self.make_spec(member.handle.params)
            except TrainingError as err:
                member.handle.end(Outcome.from_error(err))
        store = self.checkpoint_store
        checkpoints = (
            None
            if store is None
            else PackCheckpoints(store, f"{self.checkpoint_prefix}population-{pack[0].number}")
        )
        started = time.perf_counter()
        resume = self._resume(members)
        start = 0 if resume is None else resume.index
        # A resumed pack trains in the checkpoint's slot order: its members draw the dropout masks they drew.
        order = members if resume is None else [*resume.members, *(m for m in members if m.spec is None)]
        for index, fold in enumerate(self.folds[start:], start=start):
            running = [m for m in order if m.running]
            if not running or (index > start and self._stopped_for_time(running)):
                break
            self._train_fold(
                running,
                fold,
                index=index,
                offset=index * _spec(running[0]).train.epochs,
                last=index == len(self.folds) - 1,
                checkpoints=checkpoints,
                resume=resume if index == start else None,
            )
        trained = [m for m in members if m.spec is not None]
        if trained:
            epochs = [max(0, m.handle.last_epoch - m.resumed_at) for m in trained]  # the epochs trained here
            seconds = time.perf_counter() - started
            flops = self._flops_of(_spec(trained[0]))
            self.sizer.observe(flops, sum(epochs), seconds, population_epochs=max(epochs))
        if checkpoints is not None and not any(m.running for m in members):
            checkpoints.remove()  # the pack is over: nothing will resume from it
        return [
            m.handle.outcome or Outcome.failed("the population ended without ending this trial")
            for m in members
        ]

    def _population(
        self, members: list[_Member], bundle: DataBundle, *, mutable: Sequence[str] = ()
    ) -> SpecPopulation:
        """A fresh population of ``members``' specs for ``bundle``; ``mutable`` adds to PBT's paths."""
        first = _spec(members[0])
        return SpecPopulation(
            [_spec(m).model for m in members],
            [_spec(m).train for m in members],
            input_shape=tuple(bundle.input_shape),
            output_dim=output_dim(bundle, first.train),
            task=bundle.task,
            text=bundle.text,
            n_classes=bundle.n_classes,
            target_scale=bundle.target_scale,
            # PBT may later give a member weight decay or dropout that none had when the population was built.
            mutable=[*(self.pbt.mutable if self.pbt is not None else ()), *mutable],
        )

    def _resume(self, members: list[_Member]) -> _Resume | None:
        """Where a pack of retries continues, from the checkpoint its handles' ``resume_from`` names, with
        the members' values restored; None to train from scratch (see the module docstring)."""
        store = self.checkpoint_store
        live = [m for m in members if m.spec is not None]  # the others ended: their specs were rejected
        artifacts = {m.handle.resume_from for m in live}
        if store is None or not live or artifacts == {None}:
            return None
        if self.pbt is not None or len(artifacts) != 1:
            return None  # under PBT, or retries of several packs (or fresh trials with them): from scratch
        (artifact,) = artifacts
        checkpoint = None if artifact is None else read_checkpoint(store, artifact)
        if artifact is None or checkpoint is None:
            return None  # the artifact is gone (its pack ended after all) or unreadable: from scratch
        saved_slots = {int(slot["trial"]): k for k, slot in enumerate(checkpoint["slots"])}
        slot_of: dict[int, int] = {}  # trial number -> its original's slot in the checkpoint
        for member in live:
            original = member.handle.retry_of
            if original is None or original not in saved_slots:
                return None  # a member the checkpoint does not hold: from scratch
            slot_of[member.handle.number] = saved_slots[original]
        if len(set(slot_of.values())) != len(live):
            return None  # two retries of one trial: from scratch
        index, epoch = int(checkpoint["fold_index"]), int(checkpoint["epoch"])
        n_epochs = _spec(live[0]).train.epochs
        if not (0 <= index < len(self.folds) and 0 < epoch < n_epochs):
            return None  # not a point of this executor's folds and epochs: from scratch
        ordered = sorted(live, key=lambda m: slot_of[m.handle.number])
        saved = [checkpoint["slots"][slot_of[m.handle.number]] for m in ordered]
        state = {"shared": checkpoint["population"], "members": [slot["state"] for slot in saved]}
        try:
            population = self._population(
                ordered, self.data.bundle(self.folds[index]), mutable=SpecPopulation.resume_mutable(state)
            )
            population.load_state(state)
        except (SpecError, RuntimeError, KeyError, TypeError, ValueError):
            return None  # the saved state does not fit these specs (the experiment changed): from scratch
        for member, slot in zip(ordered, saved, strict=True):
            member.values = {int(e): float(v) for e, v in slot["values"].items()}
            member.fold_values = [float(v) for v in slot["fold_values"]]
            member.best_epochs = [int(e) for e in slot["best_epochs"]]
            member.resumed_at = index * n_epochs + epoch
            # Which checkpoint it continued from, for the record (and `tunelab status`' readers).
            member.handle.set_attr("resumed_at_epoch", member.resumed_at)
        whole = len(ordered) == len(checkpoint["slots"])
        return _Resume(index, epoch, population, ordered, artifact, whole)

    def _train_fold(
        self,
        members: list[_Member],
        fold: int | None,
        *,
        index: int,
        offset: int,
        last: bool,
        checkpoints: PackCheckpoints | None = None,
        resume: _Resume | None = None,
    ) -> None:
        """Train ``members`` on ``fold`` (the ``index``-th), from its start or from ``resume``, each epoch
        checkpointed to ``checkpoints``."""
        bundle = self.data.bundle(fold)
        first = _spec(members[0])
        slots = list(members)
        if resume is None:
            population, start = self._population(members, bundle), 0
            for member in slots:
                member.values = {}
        else:
            population, start = resume.population, resume.epoch
        x, y = _prepared(bundle.X_train, bundle.y_train, bundle.task, population)
        x_val, y_val = _prepared(bundle.X_val, bundle.y_val, bundle.task, population)
        if resume is not None and checkpoints is not None:
            # The retries' own checkpoint at once: a kill before their next epoch leaves one that names them.
            checkpoints.write(_checkpoint(index, start, slots, population), [m.handle for m in slots])
            if resume.whole:  # the checkpoint resumed from is superseded; with members left, theirs to read
                checkpoints.discard(resume.artifact)
        n_epochs = first.train.epochs
        for epoch in range(start + 1, n_epochs + 1):
            losses = population.train_epoch(
                x, y, interrupt=partial(slots[0].handle.out_of_time, within_epoch=True)
            )
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
                    member.handle.end(Outcome.failed(_diverged(population, k, epoch)))
                    done.append(k)
            order = self._report_order(logs, alive)
            values = {k: self._value(logs[k]) for k in order}
            # PBT is asked member by member, each after the exploits of those that reported before it.
            together = (
                None
                if self.pbt is not None
                else report_together([(slots[k].handle, offset + epoch, values[k]) for k in order])
            )
            for i, k in enumerate(order):
                member = slots[k]
                member.values[epoch] = values[k]
                decision = (
                    together[i] if together is not None else member.handle.report(offset + epoch, values[k])
                )
                ends = early_stops[k] or epoch == n_epochs
                if isinstance(decision, Exploit):
                    self._exploit(population, slots, k, decision, logs, epoch=epoch, ends=ends)
                if decision is Decision.STOP:
                    member.handle.end(Outcome.pruned())
                elif ends:
                    best = population.best_epoch(k)
                    final = best if population.restores_best(k) and best is not None else epoch
                    member.fold_values.append(member.values[final])
                    member.best_epochs.append(best or epoch)
                    if last:
                        member.handle.end(_completed(member))
                else:
                    continue
                done.append(k)
            if len(done) == len(slots):
                return
            population.remove(done)
            gone = set(done)
            slots = [m for k, m in enumerate(slots) if k not in gone]
            if self._stopped_for_time(slots):  # they all have epochs to go: the others ended above
                return
            if checkpoints is not None:
                checkpoints.write(_checkpoint(index, epoch, slots, population), [m.handle for m in slots])

    def _stopped_for_time(self, members: list[_Member]) -> bool:
        """End ``members`` (trials with epochs to go) as pruned when the study's time budget is spent: the
        population's members share one clock, so the first one's answer is everyone's."""
        if not members[0].handle.out_of_time():
            return False
        self._end_for_time(members)
        return True

    @staticmethod
    def _end_for_time(members: list[_Member]) -> None:
        # Cut before any trial completed (the first member's answer, between epochs): each member's last
        # value becomes its result.
        cut = members[0].handle.cut_without_result
        for member in members:
            member.handle.stop_for_time()
            member.handle.cut_without_result = cut
            member.handle.end(
                Outcome.pruned(best_epochs=[member.handle.last_epoch]) if cut else Outcome.pruned()
            )

    def _report_order(self, logs: list[dict[str, float]], alive: list[bool]) -> list[int]:
        """The live members' slots in the order they report this epoch: slot order; under PBT best value
        first. PBT ranks each report against the latest values of the others, and those not yet reported
        this epoch still hold last epoch's: reported best first, a member is ranked against this epoch's
        values of every better one, so one in the bottom of the population is always found there."""
        live = [k for k in range(len(logs)) if alive[k]]
        pbt = self.pbt
        if pbt is None:
            return live
        return sorted(live, key=lambda k: (pbt.score(self._value(logs[k])), k))

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
            (j for j, m in enumerate(slots) if m.handle.number == decision.source_trial_id and j != k), None
        )
        if ends or source is None:
            # Ending now: nothing would train with the copy. (PBT ranks only live trials, which are the
            # members of this population, so a source is always found here.)
            member.handle.withdraw_exploit()
            return
        try:
            spec = self.make_spec(dict(decision.new_params))
        except TrainingError:  # the explored values make a spec the spec rejects: keep training as it was
            member.handle.withdraw_exploit()
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


def _spec(member: _Member) -> ExperimentSpec:
    if member.spec is None:  # members without a spec ended before training
        raise TrainingError(f"trial {member.handle.number} has no spec to train")
    return member.spec


def _checkpoint(index: int, epoch: int, slots: list[_Member], population: SpecPopulation) -> dict[str, Any]:
    """The checkpoint of ``slots`` (the population's members, in slot order) after ``epoch`` of the
    ``index``-th fold (:mod:`~tunelab.execute._pop_checkpoint`)."""
    state = population.state()
    return {
        "format": FORMAT_VERSION,
        "fold_index": index,
        "epoch": epoch,
        "population": state["shared"],
        "slots": [
            {
                "trial": member.handle.number,
                "values": dict(member.values),
                "fold_values": list(member.fold_values),
                "best_epochs": list(member.best_epochs),
                "state": member_state,
            }
            for member, member_state in zip(slots, state["members"], strict=True)
        ],
    }


def _completed(member: _Member) -> Outcome:
    """``member`` went through every fold: its trial's value is the mean (the loop fails a non-finite one)."""
    return Outcome.complete(
        statistics.fmean(member.fold_values), fold_values=member.fold_values, best_epochs=member.best_epochs
    )


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
