"""``StudyBudget``: when a study stops, and how many trials its next pack may take."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tunelab.clock import Clock, system_clock
from tunelab.errors import SpecError
from tunelab.search._handle import StudyDeadline
from tunelab.storage import StudyCounts

__all__ = ["StudyBudget", "check_positive"]


@dataclass(frozen=True)
class StudyBudget:
    """A study's budgets: ``n_trials`` finished trials (counting those of an earlier run of the same study,
    so rerunning after a crash finishes the job), a ``deadline`` on ``clock`` (an absolute time: one time
    budget, however many processes and phases share it), ``max_total_epochs`` reported over the study, and a
    ``target`` value that ends it once a trial reaches it.

    Budgets are checked between packs; running trials ask :class:`StudyDeadline` within and between epochs.
    """

    n_trials: int | None = None
    deadline: float | None = None
    max_total_epochs: int | None = None
    target: float | None = None
    clock: Clock = field(default=system_clock, compare=False)

    def __post_init__(self) -> None:
        check_positive(self.n_trials, "n_trials", whole=True)
        check_positive(self.max_total_epochs, "max_total_epochs", whole=True)
        if self.n_trials is None and self.deadline is None and self.max_total_epochs is None:
            raise SpecError("give the study a budget: n_trials, timeout_s or max_total_epochs (or several).")

    def spent(self, counts: StudyCounts) -> str | None:
        """The budget that is used up (its name, the study's stop reason), or None to go on."""
        if self.n_trials is not None and counts.n_finished >= self.n_trials:
            return "n_trials"
        # Time ends a study only once it has run a trial: a search always ends with a result (or the first
        # trial's failure), however little time it was given.
        if counts.n_finished and self.past_deadline():
            return "timeout"
        if self.max_total_epochs is not None and counts.n_epochs >= self.max_total_epochs:
            return "max_total_epochs"
        return None

    def past_deadline(self) -> bool:
        return self.deadline is not None and self.clock.monotonic() >= self.deadline

    def time_left(self) -> float | None:
        """Seconds to the deadline (negative once past it); None without a time budget."""
        return None if self.deadline is None else self.deadline - self.clock.monotonic()

    def trial_deadline(self, study: Any) -> StudyDeadline | None:
        """The check a pack's running trials make (:meth:`TrialHandle.out_of_time`); None without a time
        budget."""
        return None if self.deadline is None else StudyDeadline(self.deadline, study, clock=self.clock)

    def reached_target(self, value: float, direction: str) -> bool:
        """Whether a trial's ``value`` reaches the target of a study that goes in ``direction``."""
        if self.target is None:
            return False
        return value <= self.target if direction == "minimize" else value >= self.target

    def pack_cap(self, counts: StudyCounts, size: int) -> int:
        """At most ``size`` trials, and no more than the trial and epoch budgets leave room for: the epochs
        left divided by this study's mean epochs per finished trial."""
        if size <= 1:
            return 1
        cap = size
        if self.n_trials is not None:
            cap = min(cap, self.n_trials - counts.n_finished)
        if self.max_total_epochs is not None and counts.n_finished:
            per_trial = max(1.0, counts.n_epochs / counts.n_finished)
            cap = min(cap, max(1, math.ceil((self.max_total_epochs - counts.n_epochs) / per_trial)))
        return max(1, cap)


def check_positive(value: Any, name: str, *, whole: bool) -> None:
    if value is None:
        return
    kinds = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        raise SpecError(f"{name} must be a positive {'whole number' if whole else 'number'}, got {value!r}.")
