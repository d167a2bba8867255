"""The scheduler contract: trials report, the scheduler answers with a decision; an executor carries it out.

Call order, per trial (``trial_id`` is the study's trial number, 0, 1, 2, ...):

1. ``on_trial_start(trial_id, params)`` once, with the trial's nested override dict;
2. ``on_report(trial_id, epoch, value)`` once per finished epoch (``epoch`` = 1, 2, ... increasing; the
resource
   that multi-fidelity schedulers count), returning a :class:`Decision` or, from PBT, an :class:`Exploit`;
3. ``on_trial_end(trial_id, status)`` once, when the trial completed, was stopped (``pruned``) or failed.

Trials that finish an epoch together (the members of a fused population) may report through
``on_reports([(trial_id, epoch, value), ...])`` instead, one decision each, in order. By default that is
``on_report`` on each in turn; the rung schedulers (ASHA, Hyperband) record every result at a rung before
deciding, so results that arrive together are ranked together rather than in the order they are listed.

Schedulers only decide: they never train, copy weights or touch storage, so the same scheduler drives an
in-process loop, a fused population, worker processes or a simulated clock in tests.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from tunelab.errors import SpecError

__all__ = [
    "BaseScheduler",
    "Decision",
    "Direction",
    "Exploit",
    "NoScheduler",
    "SchedulerDecision",
    "TrialStatus",
]

Direction: TypeAlias = Literal["minimize", "maximize"]
TrialStatus: TypeAlias = Literal["complete", "pruned", "failed"]
_DIRECTIONS = ("minimize", "maximize")


class Decision(enum.Enum):
    """What the executor should do with a trial after it reported."""

    CONTINUE = "continue"  # keep training
    STOP = "stop"  # stop now; the trial ends as pruned
    PROMOTE = "promote"  # passed a rung: keep training towards the next one
    EXPLOIT = "exploit"  # PBT: see Exploit


@dataclass(frozen=True)
class Exploit:
    """PBT's decision: copy the weights (and optimizer state) of ``source_trial_id``, then train on with
    ``new_params`` (nested overrides: the source's parameters, perturbed). The executor does the copy."""

    source_trial_id: int
    new_params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def decision(self) -> Decision:
        return Decision.EXPLOIT


SchedulerDecision: TypeAlias = Decision | Exploit


def check_direction(direction: str) -> Direction:
    if direction not in _DIRECTIONS:
        raise SpecError(f"direction must be 'minimize' or 'maximize', got {direction!r}.")
    return direction  # type: ignore[return-value]


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{name} must be a whole number >= {minimum}, got {value!r}.")
    return value


class BaseScheduler:
    """Base class of every scheduler; see the module docstring for the call order.

    Subclasses compare *scores*: ``value`` for minimize, ``-value`` for maximize, ``+inf`` for NaN, so that
    lower is always better inside and a diverged trial is always the worst.
    """

    def __init__(self, *, direction: Direction = "minimize") -> None:
        self.direction: Direction = check_direction(direction)

    def score(self, value: float) -> float:
        if math.isnan(value):
            return math.inf
        return value if self.direction == "minimize" else -value

    def on_trial_start(self, trial_id: int, params: Mapping[str, Any]) -> None:
        """A trial starts with these parameters (its nested override dict)."""

    def on_report(self, trial_id: int, epoch: int, value: float) -> SchedulerDecision:
        """The trial finished ``epoch`` (1-based) with metric ``value``; decide what it does next."""
        raise NotImplementedError

    def on_reports(self, reports: Sequence[tuple[int, int, float]]) -> list[SchedulerDecision]:
        """Several trials finished an epoch at once: ``(trial_id, epoch, value)`` each; a decision each."""
        return [self.on_report(trial_id, epoch, value) for trial_id, epoch, value in reports]

    def on_trial_end(self, trial_id: int, status: TrialStatus) -> None:
        """The trial ended: ``complete``, ``pruned`` (stopped by a decision) or ``failed``."""


class NoScheduler(BaseScheduler):
    """Every trial trains to the end."""

    def on_report(self, trial_id: int, epoch: int, value: float) -> SchedulerDecision:
        return Decision.CONTINUE
