"""``TrialHandle``: what an objective function receives: its parameters and a way to report progress."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from tunelab.errors import SpecError
from tunelab.search.schedulers import BaseScheduler, Decision, Exploit, SchedulerDecision

__all__ = ["StudyDeadline", "TrialHandle"]

_STORAGE_QUERY_INTERVAL_S = 1.0


class StudyDeadline:
    """Whether the time budget is spent (``past_deadline``) and the study holds a completed trial, so that
    stopping a running trial leaves the study a result.

    Between epochs (``throttled=False``) it reads the storage whenever the deadline has passed and no
    completed trial was seen yet. Within an epoch, after every minibatch (``throttled=True``), it reads the
    clock, and the storage at most once every ``_STORAGE_QUERY_INTERVAL_S`` seconds. A completed trial, once
    seen, stays seen.
    """

    def __init__(self, past_deadline: Callable[[], bool], study: optuna.Study) -> None:
        self._past_deadline, self._study = past_deadline, study
        self._seen_complete = False
        self._next_query = -math.inf

    def __call__(self, *, throttled: bool = False) -> bool:
        if not self._past_deadline():
            return False
        now = time.monotonic()
        if not self._seen_complete and (not throttled or now >= self._next_query):
            self._next_query = now + _STORAGE_QUERY_INTERVAL_S
            states = (TrialState.COMPLETE,)
            self._seen_complete = bool(self._study.get_trials(deepcopy=False, states=states))
        return self._seen_complete


class TrialHandle:
    """One trial, as its objective sees it.

    ``params``: the nested override dict to merge into the experiment spec. ``number``: the study's trial
    number. Call :meth:`report` after every epoch and obey its answer: on ``Decision.STOP`` return at once
    (the trial is recorded as pruned whatever it returns); on an :class:`~tunelab.search.schedulers.Exploit`,
    load the source trial's checkpoint and carry on with ``decision.new_params``. Between epochs (not after
    the last) and within epochs, :meth:`out_of_time` says whether the study's time budget is spent: then
    stop as for ``Decision.STOP``.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        params: dict[str, Any],
        *,
        scheduler: BaseScheduler,
        multi_objective: bool = False,
        after_report: Callable[[], None] | None = None,
        out_of_time: StudyDeadline | None = None,
    ) -> None:
        self._trial = trial
        self._out_of_time = out_of_time
        self.params = params
        self._scheduler = scheduler
        self._multi_objective = multi_objective
        self._after_report = after_report
        self.last_epoch = 0
        self.stopped = False
        self.exploits: list[dict[str, Any]] = []

    @property
    def number(self) -> int:
        return self._trial.number

    @property
    def retry_of(self) -> int | None:
        """The number of the interrupted trial this one retries (same parameters), or None."""
        original = self._trial.user_attrs.get("retry_of")
        return int(original) if original is not None else None

    def report(
        self, epoch: int, value: float, *, decision: SchedulerDecision | None = None
    ) -> SchedulerDecision:
        """Record ``value`` (the metric) after ``epoch`` (1-based, increasing) and ask the scheduler, unless
        ``decision`` is the scheduler's answer already (taken with others' through ``on_reports``)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch <= self.last_epoch:
            raise SpecError(
                f"trial {self.number}: report() needs increasing epochs (1, 2, ...); got {epoch!r} after "
                f"{self.last_epoch}."
            )
        value = float(value)
        self.last_epoch = epoch
        if not self._multi_objective:  # Optuna keeps intermediate values for single-objective studies only
            self._trial.report(value, epoch)
        if self._after_report is not None:
            self._after_report()
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
        value. Never True before a trial of the study has completed, so a search always ends with a result,
        however short its budget."""
        if self._out_of_time is None or self.stopped or not self._out_of_time(throttled=within_epoch):
            return False
        self.stop_for_time()
        return True

    def stop_for_time(self) -> None:
        """Stop this trial for the time budget (what :meth:`out_of_time` does when it answers True), for a
        caller that asked another trial on the same clock."""
        self.stopped = True
        self._trial.set_user_attr("stopped_by", "time budget")

    def set_attr(self, key: str, value: Any) -> None:
        """Store a JSON-serializable value with the trial (Optuna user attribute)."""
        self._trial.set_user_attr(key, value)

    def _record_exploit(self, epoch: int, decision: Exploit) -> None:
        self.exploits.append(
            {"epoch": epoch, "source": decision.source_trial_id, "params": _plain(decision.new_params)}
        )
        self.params = dict(_plain(decision.new_params))
        self._trial.set_user_attr("pbt_exploits", self.exploits)


def _plain(value: Any) -> Any:
    """Mappings as dicts, recursively, so Optuna can store them as JSON."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
