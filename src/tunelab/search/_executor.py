"""The contract between the study loop, which decides, and an executor, which trains (:class:`Executor`).

The loop asks the study for a pack of trials and hands their handles to the executor; the executor trains
them, reports through the handles and gives back an :class:`Outcome` per trial. It never tells the study:
the loop does, in one place, for every executor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import optuna

from tunelab.errors import SpecError, TrainingError
from tunelab.search.schedulers import BaseScheduler

if TYPE_CHECKING:
    from tunelab.search._handle import TrialHandle

__all__ = ["BaseExecutor", "Executor", "ObjectiveExecutor", "Outcome", "OutcomeState"]

OutcomeState = Literal["complete", "pruned", "failed"]


class Outcome(NamedTuple):
    """How a trial ended. ``values``: the objective's values (complete trials; one per objective).
    ``reason``: why it failed. ``attrs``: user attributes to store with the trial (JSON-serializable).
    A named tuple: one is made per trial, and a tuple is made fastest."""

    state: OutcomeState
    values: tuple[float, ...] = ()
    reason: str | None = None
    attrs: Mapping[str, Any] = MappingProxyType({})

    @classmethod
    def complete(cls, *values: float, **attrs: Any) -> Outcome:
        return cls("complete", tuple(map(float, values)), None, attrs)

    @classmethod
    def pruned(cls, **attrs: Any) -> Outcome:
        return cls("pruned", attrs=attrs)

    @classmethod
    def failed(cls, reason: str, **attrs: Any) -> Outcome:
        return cls("failed", reason=reason, attrs=attrs)

    @classmethod
    def from_error(cls, error: BaseException) -> Outcome:
        return cls.failed(f"{type(error).__name__}: {error}")


class Executor(Protocol):
    """Carries out the trials the study loop asks for. The loop calls :meth:`start` once, with the study's
    scheduler (a population executor sizes populations by its rungs, and trains PBT's populations its way),
    then, per pack:

    1. :meth:`pack_size` with the first trial's parameters (nested overrides): how many trials to train
       together, at most ``cap`` (what the budgets leave); ``time_left`` is the study's time in seconds (None
       without a time budget). The other trials of the pack share the first one's parameters except
       :attr:`per_member_paths`.
    2. :meth:`run` with the pack's handles. Training reports through them (``handle.report``, obeying its
       answer) and asks ``handle.out_of_time()``; the return is one :class:`Outcome` per handle, in order.
       A trial may end earlier through ``handle.end(outcome)``; its returned outcome is then ignored. An
       exception ends every trial still running as failed, and propagates.

    ``max_pack_size``: 1 for an executor that trains one trial at a time. ``checkpoints``: trials save
    checkpoints as they train, so the loop writes a trial to the storage when it starts and at every report,
    and a trial a kill interrupts is retried from its checkpoint; otherwise a trial reaches the storage when
    it ends (an interrupted one runs again from scratch).
    """

    @property
    def max_pack_size(self) -> int: ...

    @property
    def per_member_paths(self) -> Collection[str]: ...

    @property
    def checkpoints(self) -> bool: ...

    def start(self, scheduler: BaseScheduler) -> None: ...

    def pack_size(self, params: dict[str, Any], *, cap: int, time_left: float | None) -> int: ...

    def run(self, pack: Sequence[TrialHandle]) -> Sequence[Outcome]: ...


class BaseExecutor:
    """What most executors share: one trial at a time (``max_pack_size`` 1), no per-member parameters, no
    checkpoints, nothing to do at the start; :meth:`run` trains the pack's trials one after another with
    :meth:`run_trial`, which a subclass writes. A population executor overrides :meth:`pack_size` and
    :meth:`run`."""

    max_pack_size: int = 1
    per_member_paths: Collection[str] = ()
    checkpoints: bool = False

    def start(self, scheduler: BaseScheduler) -> None:
        pass

    def pack_size(self, params: dict[str, Any], *, cap: int, time_left: float | None) -> int:
        return min(cap, self.max_pack_size)

    def run(self, pack: Sequence[TrialHandle]) -> list[Outcome]:
        return [self.run_trial(handle) for handle in pack]

    def run_trial(self, handle: TrialHandle) -> Outcome:
        raise NotImplementedError(f"{type(self).__name__} must define run_trial (or run)")


Objective = Callable[["TrialHandle"], Any]


class ObjectiveExecutor(BaseExecutor):
    """An objective function as an executor: ``objective(handle)`` trains one trial and returns its value (a
    sequence of values for several objectives).

    Returned a number → complete (the loop fails it if the number is not finite). Told STOP, or raised
    ``optuna.TrialPruned`` → pruned. Raised :class:`~tunelab.errors.TrainingError` → failed with the reason,
    and the study goes on. Any other exception propagates (its trial fails with the reason).
    """

    checkpoints = True  # the objective may save checkpoints (handle.retry_of names the trial to resume)

    def __init__(self, objective: Objective, *, n_objectives: int = 1) -> None:
        if not callable(objective):
            raise SpecError(
                f"the objective must be a function of a TrialHandle (or an Executor); got "
                f"{type(objective).__name__}."
            )
        self.objective = objective
        self.n_objectives = n_objectives

    def run_trial(self, handle: TrialHandle) -> Outcome:
        try:
            result = self.objective(handle)
        except optuna.TrialPruned:
            return Outcome.pruned()
        except TrainingError as err:
            return Outcome.from_error(err)
        if handle.stopped:
            return Outcome.pruned()
        return Outcome.complete(*_as_values(result, n_objectives=self.n_objectives))


def _as_values(result: Any, *, n_objectives: int) -> list[float]:
    """The objective's result as ``n_objectives`` floats (a user's mistake here is a SpecError)."""
    items = list(result) if isinstance(result, list | tuple) else [result]
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
    return values


def not_finite(values: Sequence[float]) -> str | None:
    """Why a completed trial's values cannot be told as they are (one is not finite), or None."""
    if all(math.isfinite(v) for v in values):
        return None
    shown = values[0] if len(values) == 1 else list(values)
    return f"the objective returned {shown!r}, which is not finite"
