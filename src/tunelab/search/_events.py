"""What the study loop tells a progress display: phases, and each trial's start, reports and end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["Events", "NoEvents", "StudyEvents"]


@runtime_checkable
class StudyEvents(Protocol):
    """A live display of a study (``tunelab.report.make_progress`` makes one; ``tunelab.tune.Events`` fans
    out to one and a line log). ``state`` is complete, pruned or failed; ``value`` the trial's value (None
    unless complete)."""

    def phase(self, message: str) -> None: ...

    def trial_started(self, number: int, params: dict[str, Any]) -> None: ...

    def trial_reported(self, number: int, epoch: int, value: float) -> None: ...

    def trial_finished(self, number: int, state: str, value: float | None) -> None: ...


class NoEvents:
    """Tells nobody."""

    def phase(self, message: str) -> None:
        pass

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        pass

    def trial_reported(self, number: int, epoch: int, value: float) -> None:
        pass

    def trial_finished(self, number: int, state: str, value: float | None) -> None:
        pass


class Events:
    """Fans a study's events out to a live display (``progress``, a :class:`StudyEvents`) and a line log
    (``log``: called with one line per phase and per finished trial); either may be None. Calling it with a
    message reports a phase."""

    def __init__(self, progress: StudyEvents | None = None, log: Callable[[str], None] | None = None) -> None:
        self.progress, self.log = progress, log

    def phase(self, message: str) -> None:
        if self.progress is not None:
            self.progress.phase(message)
        if self.log is not None:
            self.log(message)

    __call__ = phase

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.trial_started(number, params)

    def trial_reported(self, number: int, epoch: int, value: float) -> None:
        if self.progress is not None:
            self.progress.trial_reported(number, epoch, value)

    def trial_finished(self, number: int, state: str, value: float | None) -> None:
        if self.progress is not None:
            self.progress.trial_finished(number, state, value)
        if self.log is not None:
            shown = "" if value is None else f" {value:.4f}"
            self.log(f"trial {number:>3} {state}{shown}")
