"""``tell``: Optuna's ``Study.tell`` without the copy of the finished trial it returns."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

__all__ = ["tell"]


def _find_tell() -> Callable[..., Any] | None:
    """Optuna's ``Study.tell`` minus its last step, when this Optuna has it with the expected parameters."""
    try:
        from optuna.study._tell import _tell_with_warning
    except ImportError:
        return None
    expected = ["study", "trial", "value_or_values", "state", "skip_if_finished", "suppress_warning"]
    if list(inspect.signature(_tell_with_warning).parameters) != expected:
        return None
    return _tell_with_warning


_TELL = _find_tell()


def tell(
    study: optuna.Study, trial: optuna.Trial, values: Sequence[float] | None, *, state: TrialState
) -> None:
    """``study.tell(trial, values, state=state)`` without building the deep copy of the finished trial that
    ``Study.tell`` returns (and the search never reads): about 0.4 ms a trial, a fifth of an in-memory TPE
    trial's whole cost. Uses the function ``Study.tell`` itself calls first (private to Optuna, so checked by
    signature once; any other Optuna takes ``study.tell``, slower but the same)."""
    if _TELL is None:
        study.tell(trial, values, state=state)
    else:
        _TELL(study, trial, values, state, False, False)
