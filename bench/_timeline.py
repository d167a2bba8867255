"""A study's trials on a wall-clock timeline: best-so-far curves and the time one side reaches a value.

Times are seconds since the side's budget started (``started``, a ``time.time()`` value), taken from Optuna's
``datetime_start`` / ``datetime_complete`` (naive local datetimes, which ``.timestamp()`` reads as local time,
the same clock ``time.time()`` reads).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial, TrialState

__all__ = ["best_at", "best_so_far", "time_to_reach", "trial_records"]


def trial_records(trials: Sequence[FrozenTrial], *, started: float) -> list[dict[str, Any]]:
    """One JSON-ready record per finished trial, ordered by the time it finished.

    ``state`` is ``complete``, ``pruned``, ``cut`` (stopped by the wall-time budget, baseline only) or
    ``failed``; ``value`` is the objective for complete trials, else the last reported validation value;
    ``epochs`` the last epoch reported.
    """
    records: list[dict[str, Any]] = []
    for trial in trials:
        if trial.datetime_complete is None:
            continue
        state = {
            TrialState.COMPLETE: "complete",
            TrialState.PRUNED: "cut" if trial.user_attrs.get("cut_by_budget") else "pruned",
        }.get(trial.state, "failed")
        last_epoch = max(trial.intermediate_values, default=0)
        value = (
            trial.value if trial.state == TrialState.COMPLETE else trial.intermediate_values.get(last_epoch)
        )
        records.append(
            {
                "number": trial.number,
                "state": state,
                "start_s": _seconds(trial.datetime_start, started),
                "end_s": _seconds(trial.datetime_complete, started),
                "value": value,
                "epochs": last_epoch,
                "params": trial.params,
            }
        )
    records.sort(key=lambda record: record["end_s"])
    return records


def _seconds(moment: Any, started: float) -> float | None:
    return None if moment is None else round(moment.timestamp() - started, 3)


def best_so_far(records: Sequence[dict[str, Any]], *, until_s: float | None = None) -> list[list[float]]:
    """``[[seconds, best validation value so far], ...]``: one point per improvement by a complete trial.

    Only trials finished by ``until_s`` count. Draw it as a step plot (``where="post"``) from the first point
    to the side's end time.
    """
    curve: list[list[float]] = []
    for record in sorted(records, key=lambda r: r["end_s"]):
        if record["state"] != "complete" or (until_s is not None and record["end_s"] > until_s):
            continue
        if not curve or record["value"] > curve[-1][1]:
            curve.append([record["end_s"], record["value"]])
    return curve


def best_at(curve: Sequence[Sequence[float]], seconds: float) -> float | None:
    """The best-so-far value at ``seconds`` (None before the first complete trial)."""
    value = None
    for at, best in curve:
        if at > seconds:
            break
        value = best
    return value


def time_to_reach(curve: Sequence[Sequence[float]], target: float | None) -> float | None:
    """The first time the curve's best-so-far is ``>= target`` (None if it never is, or no target)."""
    if target is None:
        return None
    return next((at for at, best in curve if best >= target), None)
