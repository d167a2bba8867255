"""Where tunelab reads the time: a :class:`Clock` passed to whatever keeps a time budget.

Budgets and deadline checks never call ``time.monotonic()`` themselves; they ask the clock they were given,
:class:`SystemClock` by default. Tests (and simulations) pass a :class:`ManualClock` and move time forward
by hand, so a budget of an hour can be spent in a millisecond, deterministically.

Only budgets read a :class:`Clock`. Measurements of how long work took (throughput probes, epoch timings)
read ``time.perf_counter()``: they measure the machine, which a fake clock cannot.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock", "system_clock"]


@runtime_checkable
class Clock(Protocol):
    """A source of monotonic time in seconds. Only differences between readings mean anything."""

    def monotonic(self) -> float: ...


class SystemClock:
    """The machine's monotonic clock (``time.monotonic()``): the same clock in every process of a machine,
    so a deadline computed in one process holds in the worker processes it starts."""

    def monotonic(self) -> float:
        return time.monotonic()

    def __repr__(self) -> str:
        return "SystemClock()"


system_clock = SystemClock()


class ManualClock:
    """A clock that moves only when told: :meth:`advance` by some seconds, or :meth:`set` to a time.
    ``n_reads`` counts the readings taken."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)
        self.n_reads = 0

    def monotonic(self) -> float:
        self.n_reads += 1
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back; got advance({seconds!r})")
        self.now += seconds

    def set(self, now: float) -> None:
        if now < self.now:
            raise ValueError(f"a monotonic clock cannot go back from {self.now} to {now}")
        self.now = float(now)

    def __repr__(self) -> str:
        return f"ManualClock(now={self.now})"
