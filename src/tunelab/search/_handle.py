"""``TrialHandle``: what an executor (or an objective function) holds of a trial: its parameters, a way to
report progress and hear the scheduler's decision, whether the study's time is spent, and how to end it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from tunelab.clock import Clock, system_clock
from tunelab.errors import SpecError
from tunelab.search._executor import Outcome
from tunelab.search.schedulers import BaseScheduler, Decision, Exploit, SchedulerDecision

__all__ = ["StudyDeadline", "TrialHandle", "cut_note", "report_together"]


def cut_note(last_epoch: int, *, scored: bool) -> str:
    """The ``cut_by_budget`` attribute of a trial the time budget cut before any trial completed."""
    value = "its model's as cut" if scored else f"epoch {last_epoch}'s"
    when = f"after reporting epoch {last_epoch}" if last_epoch else "within its first epoch"
    return (
        f"the time budget ended the search before any trial completed; this one was stopped {when}, and its "
        f"value is {value}"
    )


class StudyDeadline:
    """Whether the study's time is spent (its ``deadline`` passed on ``clock``) and the study holds a
    completed trial, so that stopping a running trial leaves the study a result.

    Between epochs (``throttled=False``) it reads the storage whenever the deadline has passed and no
    completed trial was seen yet. Within an epoch, after every minibatch (``throttled=True``), it reads the
    clock, and the storage at most once every ``query_interval_s`` seconds. A completed trial, once seen,
    stays seen. One per pack: a check carried over could answer from before the last pack's trials completed.
    """

    def __init__(
        self,
        deadline: float,
        study: optuna.Study,
        *,
        clock: Clock = system_clock,
        query_interval_s: float = 1.0,
    ) -> None:
        self.deadline, self._study, self._clock = deadline, study, clock
        self.query_interval_s = query_interval_s
        self.n_queries = 0  # storage reads so far
        self._seen_complete = False
        self._next_query = -math.inf

    def __call__(self, *, throttled: bool = False) -> bool:
        now = self._clock.monotonic()
        if now < self.deadline:
            return False
        if not self._seen_complete and (not throttled or now >= self._next_query):
            self._next_query = now + self.query_interval_s
            self.n_queries += 1
            states = (TrialState.COMPLETE,)
            self._seen_complete = bool(self._study.get_trials(deepcopy=False, states=states))
        return self._seen_complete

    def passed(self) -> bool:
        """Whether the deadline has passed, completed trial or not."""
        return self._clock.monotonic() >= self.deadline


class TrialHandle:
    """One running trial, as its executor (or objective function) sees it.

    ``params``: the nested override dict to merge into the experiment spec. ``number``: the study's trial
    number. Call :meth:`report` after every epoch and obey its answer: on ``Decision.STOP`` stop training (the
    trial is then pruned); on an :class:`~tunelab.search.schedulers.Exploit`, load the source trial's state
    and carry on with ``decision.new_params``. Between epochs (not after the last) and within epochs,
    :meth:`out_of_time` says whether the study's time budget is spent: then stop as for ``Decision.STOP``.
    :meth:`end` ends the trial with its :class:`~tunelab.search.Outcome`; the study loop tells the study.

    ``lost``: another process took the trial back (its worker was thought dead, :mod:`tunelab.storage`'s
    leases) and ended it in the study; its reports and attributes are no longer stored, :meth:`report`
    answers ``Decision.STOP``, and the loop drops its result.

    The loop builds handles: ``on_report(handle, epoch, value)`` and ``on_end(handle, outcome)`` are its
    hooks, ``out_of_time`` the pack's :class:`StudyDeadline` (None without a time budget).
    """

    def __init__(
        self,
        trial: optuna.Trial,
        params: dict[str, Any],
        *,
        scheduler: BaseScheduler,
        on_report: Callable[[TrialHandle, int, float], None] | None = None,
        on_end: Callable[[TrialHandle, Outcome], None] | None = None,
        out_of_time: StudyDeadline | None = None,
    ) -> None:
        self._trial = trial
        self.params = params
        self._sampled_params = params  # params follows PBT's exploits; these stay as sampled
        self._scheduler = scheduler
        self._keeps_reports: bool | None = None  # whether the study keeps reports: read at the first
        self._on_report, self._on_end, self._out_of_time = on_report, on_end, out_of_time
        self.last_epoch = 0
        self.last_value: float | None = None
        self.stopped = False
        # Stopped by the time budget before any trial of the study completed: its last value is its result.
        self.cut_without_result = False
        # Set by an executor that scores a trial's model as cut: then it may be cut before its first value.
        self.scores_cut = False
        self.outcome: Outcome | None = None  # set once the trial has ended
        self.exploits: list[dict[str, Any]] = []
        self.lost = False

    @property
    def number(self) -> int:
        return self._trial.number

    @property
    def scheduler(self) -> BaseScheduler:
        """The study's scheduler (read it; the handle asks it for decisions)."""
        return self._scheduler

    @property
    def retry_of(self) -> int | None:
        """The number of the interrupted trial this one retries (same parameters), or None."""
        original = self._trial.user_attrs.get("retry_of")
        return int(original) if original is not None else None

    @property
    def resume_from(self) -> str | None:
        """The id of the artifact holding the checkpoint this retry continues from (the interrupted trial's
        ``checkpoint`` user attribute, given to its retry as ``resume_from``), or None."""
        artifact = self._trial.user_attrs.get("resume_from")
        return str(artifact) if artifact is not None else None

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    def report(
        self, epoch: int, value: float, *, decision: SchedulerDecision | None = None
    ) -> SchedulerDecision:
        """Record ``value`` (the metric) after ``epoch`` (1-based, increasing) and ask the scheduler, unless
        ``decision`` is the scheduler's answer already (taken with others' by :func:`report_together`)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch <= self.last_epoch:
            raise SpecError(
                f"trial {self.number}: report() needs increasing epochs (1, 2, ...); got {epoch!r} after "
                f"{self.last_epoch}."
            )
        value = float(value)
        self.last_epoch, self.last_value = epoch, value
        if self._keeps_reports is None:  # Optuna keeps reports for single-objective studies only
            self._keeps_reports = len(self._trial.study.directions) == 1
        if self._keeps_reports and not self.lost:
            try:
                self._trial.report(value, epoch)
            except UpdateFinishedTrialError:
                self.lost = True
        if self.lost:
            self.stopped = True
            return Decision.STOP
        if self._on_report is not None:
            self._on_report(self, epoch, value)
        if self.stopped:
            return Decision.STOP
        if decision is None:
            decision = self._scheduler.on_report(self.number, epoch, value)
        if decision is Decision.STOP:
            self.stopped = True
        elif isinstance(decision, Exploit):
            self._record_exploit(epoch, decision)
        return decision

    def out_of_time(self, *, within_epoch: bool = False) -> bool:
        """Whether the study's time budget is spent while this trial still has work to do. Ask between
        epochs (never after the last one), and, with ``within_epoch=True``, as often as after every
        minibatch: then it reads the clock, and the storage at most once a second. True stops the trial: it
        is recorded as pruned, with the user attribute ``stopped_by: "time budget"``, and its last reported
        value. Before a trial of the study has completed it is True only once this trial has a value: one it
        reported, or, if its executor scores a model as cut (``scores_cut``), at once. The trial is then cut
        (``cut_without_result``) and recorded complete, with its last value or its model's as cut, so that a
        search always ends with a result, however short its budget."""
        deadline = self._out_of_time
        if deadline is None or self.stopped:
            return False
        if deadline(throttled=within_epoch):
            self.stop_for_time()
            return True
        if (self.last_value is None and not self.scores_cut) or not deadline.passed():
            return False
        self.stop_for_time()
        self.cut_without_result = True
        return True

    def stop_for_time(self) -> None:
        """Stop this trial for the time budget (what :meth:`out_of_time` does when it answers True), for a
        caller that asked another trial on the same clock."""
        self.stopped = True
        self.set_attr("stopped_by", "time budget")

    def end(self, outcome: Outcome) -> None:
        """End the trial with ``outcome``; the study loop tells the study, its scheduler and its storage."""
        if self.outcome is not None:
            raise SpecError(f"trial {self.number} has ended already ({self.outcome.state}).")
        self.outcome = outcome
        if self._on_end is not None:
            self._on_end(self, outcome)

    def set_attr(self, key: str, value: Any) -> None:
        """Store a JSON-serializable value with the trial (Optuna user attribute); nothing once it is
        :attr:`lost`."""
        if self.lost:
            return
        try:
            self._trial.set_user_attr(key, value)
        except UpdateFinishedTrialError:
            self.lost = True

    def withdraw_exploit(self) -> None:
        """Take the exploit just recorded off the trial (it was not carried out): its recorded exploits and
        current parameters are as before it."""
        self.exploits.pop()
        self.params = dict(self.exploits[-1]["params"]) if self.exploits else self._sampled_params
        self.set_attr("pbt_exploits", self.exploits)

    def _record_exploit(self, epoch: int, decision: Exploit) -> None:
        self.exploits.append(
            {"epoch": epoch, "source": decision.source_trial_id, "params": _plain(decision.new_params)}
        )
        self.params = dict(_plain(decision.new_params))
        self.set_attr("pbt_exploits", self.exploits)


def report_together(reports: Sequence[tuple[TrialHandle, int, float]]) -> list[SchedulerDecision]:
    """Trials that end an epoch together (a population's members) report together: the scheduler ranks them
    as one group (:meth:`~tunelab.search.schedulers.BaseScheduler.on_reports`), then each handle records its
    value and that decision. Returns the decisions, in order."""
    if not reports:
        return []
    scheduler = reports[0][0].scheduler
    decisions = scheduler.on_reports([(handle.number, epoch, value) for handle, epoch, value in reports])
    return [
        handle.report(epoch, value, decision=decision)
        for (handle, epoch, value), decision in zip(reports, decisions, strict=True)
    ]


def _plain(value: Any) -> Any:
    """Mappings as dicts, recursively, so Optuna can store them as JSON."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
