"""Tracking the best value of a monitored quantity: the small, explicit state behind early stopping,
``best.pt`` and the plateau schedule."""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

from tunelab.train._metrics import GREATER_IS_BETTER

__all__ = ["MonitorState", "resolve_mode", "update_monitor"]


class MonitorState(NamedTuple):
    """``best`` value so far, the (1-based) epoch it was seen, and epochs since then without improvement."""

    best: float
    best_epoch: int | None = None
    n_bad_epochs: int = 0

    @classmethod
    def initial(cls, mode: Literal["min", "max"]) -> MonitorState:
        return cls(math.inf if mode == "min" else -math.inf)


def resolve_mode(monitor: str, mode: Literal["auto", "min", "max"]) -> Literal["min", "max"]:
    """``auto``: ``max`` for a quantity where greater is better (accuracy, f1, roc_auc, r2), else ``min``."""
    if mode != "auto":
        return mode
    name = monitor.removeprefix("val_")
    return "max" if name in GREATER_IS_BETTER else "min"


def update_monitor(
    state: MonitorState, value: float, *, epoch: int, mode: Literal["min", "max"], min_delta: float
) -> MonitorState:
    """State after ``epoch`` whose value was ``value``: improved if better than ``best`` by more than
    ``min_delta`` (a NaN never improves)."""
    improved = value < state.best - min_delta if mode == "min" else value > state.best + min_delta
    if improved:
        return MonitorState(value, epoch, 0)
    return state._replace(n_bad_epochs=state.n_bad_epochs + 1)
