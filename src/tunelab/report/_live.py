"""Live progress of a study for ``tunelab tune``: trials running / complete / pruned / failed, the best so
far, budget used and left, throughput.

``tune`` calls the same six methods whatever the mode; :func:`make_progress` picks how they show:

- ``"rich"``: a live panel on stderr, with one line per finished trial scrolling above it. When stderr is not
  a terminal (a log file, CI), plain lines without control codes instead.
- ``"json"``: one JSON object per event on stdout, for scripts (``tunelab tune ... --progress json | jq``).
- ``"quiet"``: nothing.

Call order: ``start`` once, then per trial ``trial_started`` → ``trial_reported``\\* → ``trial_finished``
(trials may interleave when several run at once; every method is thread-safe), ``phase`` whenever the study
moves on (re-evaluation, refit...), and ``close`` once (also on errors: use it as a context manager).
"""

from __future__ import annotations

import difflib
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import IO, Any, Literal

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from tunelab.errors import SpecError

__all__ = [
    "PROGRESS_MODES",
    "JsonLinesProgress",
    "PlainProgress",
    "RichProgress",
    "TuneProgress",
    "make_progress",
]

PROGRESS_MODES = ("rich", "quiet", "json")
TRIAL_STATES = ("complete", "pruned", "failed")
Direction = Literal["minimize", "maximize"]


@dataclass
class _Running:
    params: dict[str, Any]
    epoch: int = 0
    value: float | None = None


@dataclass
class _State:
    """Everything the displays show; mutated only under ``TuneProgress._lock``."""

    started_at: float = 0.0
    total_trials: int | None = None
    budget_s: float | None = None
    phase: str = "searching"
    running: dict[int, _Running] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRIAL_STATES, 0))
    n_epochs: int = 0
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_finished(self) -> int:
        return sum(self.counts.values())

    def copy(self) -> _State:
        """A snapshot another thread may read while this one changes."""
        running = {n: _Running(r.params, r.epoch, r.value) for n, r in self.running.items()}
        return replace(self, running=running, counts=dict(self.counts))


class TuneProgress:
    """Progress of one study. This base class keeps the state and shows nothing (the ``"quiet"`` mode);
    subclasses show it. ``metric`` and ``direction`` say what "best" means; ``clock`` returns seconds."""

    def __init__(
        self,
        *,
        metric: str = "value",
        direction: Direction = "maximize",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metric = metric
        self.direction = direction
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _State(started_at=clock())
        self._closed = False

    # ------------------------------------------------------------------------------------ the interface

    def start(self, total_trials: int | None, budget_s: float | None) -> None:
        """The study begins: at most ``total_trials`` trials and ``budget_s`` seconds (``None``: no limit)."""
        with self._lock:
            self._state.started_at = self._clock()
            self._state.total_trials, self._state.budget_s = total_trials, budget_s
            self._on_event("start", {"total_trials": total_trials, "budget_s": budget_s})

    def trial_started(self, number: int, params: Mapping[str, Any]) -> None:
        with self._lock:
            self._state.running[number] = _Running(dict(params))
            self._on_event("trial_started", {"number": number, "params": dict(params)})

    def trial_reported(self, number: int, epoch: int, value: float) -> None:
        """Trial ``number`` finished ``epoch`` with validation ``value`` (one epoch of throughput)."""
        with self._lock:
            running = self._state.running.setdefault(number, _Running({}))
            running.epoch, running.value = epoch, value
            self._state.n_epochs += 1
            self._on_event("trial_reported", {"number": number, "epoch": epoch, "value": value})

    def trial_finished(self, number: int, state: str, value: float | None) -> None:
        """Trial ``number`` ended as ``"complete"``, ``"pruned"`` or ``"failed"`` with ``value`` (or None)."""
        if state not in TRIAL_STATES:
            raise ValueError(f"trial state '{state}' is not one of {', '.join(TRIAL_STATES)}")
        with self._lock:
            st = self._state
            params = st.running.pop(number, _Running({})).params
            st.counts[state] += 1
            if state == "complete" and _finite(value) and _better(value, st.best_value, self.direction):
                st.best_trial, st.best_value, st.best_params = number, value, params
            self._on_event("trial_finished", {"number": number, "state": state, "value": value})

    def phase(self, message: str) -> None:
        """The study moves on (``"re-evaluating 3 candidates"``, ``"refit"``...)."""
        with self._lock:
            self._state.phase = message
            self._on_event("phase", {"message": message})

    def close(self) -> None:
        """The study is over; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._on_event("end", {})

    def __enter__(self) -> TuneProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ for subclasses

    def _on_event(self, event: str, fields: dict[str, Any]) -> None:
        """Called under the lock after each state change; ``fields`` are the call's arguments."""

    def _elapsed(self, state: _State | None = None) -> float:
        return max(0.0, self._clock() - (state or self._state).started_at)

    def _throughput(self, state: _State | None = None) -> tuple[float, float]:
        """(trials per minute, epochs per second) since ``start``."""
        st = state or self._state
        elapsed = self._elapsed(st)
        if elapsed <= 0:
            return 0.0, 0.0
        return st.n_finished * 60.0 / elapsed, st.n_epochs / elapsed

    def _budget_text(self, state: _State | None = None) -> str:
        st = state or self._state
        parts = [
            f"{st.n_finished}/{st.total_trials} trials" if st.total_trials else f"{st.n_finished} trials"
        ]
        elapsed = self._elapsed(st)
        if st.budget_s is not None:
            parts.append(
                f"{_clock_text(elapsed)} of {_clock_text(st.budget_s)} "
                f"({_clock_text(max(0.0, st.budget_s - elapsed))} left)"
            )
        else:
            parts.append(_clock_text(elapsed))
        return " · ".join(parts)

    def _fraction(self, state: _State | None = None) -> float | None:
        """The share of the budget spent: trials or time, whichever runs out first; None without limits."""
        st = state or self._state
        shares = []
        if st.total_trials:
            shares.append(st.n_finished / st.total_trials)
        if st.budget_s:
            shares.append(self._elapsed(st) / st.budget_s)
        return min(1.0, max(shares)) if shares else None

    def _finished_line(self, number: int, state: str, value: float | None) -> str:
        st = self._state
        best = (
            f"best {_num(st.best_value)} (trial {st.best_trial})"
            if st.best_trial is not None
            else "no best yet"
        )
        return (
            f"[{_clock_text(self._elapsed())}] trial {number:>3} {state:<8} {self.metric} {_num(value):<8}  "
            f"{best}  ·  {self._budget_text()}"
        )


class PlainProgress(TuneProgress):
    """Plain lines for a log file or CI: a line per finished trial and per phase; no control codes."""

    def __init__(self, stream: IO[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stream = stream if stream is not None else sys.stderr

    def _on_event(self, event: str, fields: dict[str, Any]) -> None:
        if event == "start":
            self._write(f"tuning {self.metric} ({self.direction}): {self._limits_text()}")
        elif event == "trial_finished":
            self._write(self._finished_line(fields["number"], fields["state"], fields["value"]))
        elif event == "phase":
            self._write(f"[{_clock_text(self._elapsed())}] {fields['message']}")
        elif event == "end":
            self._write(_summary_line(self))

    def _limits_text(self) -> str:
        st = self._state
        limits = [f"up to {st.total_trials} trials"] if st.total_trials else []
        if st.budget_s is not None:
            limits.append(f"a budget of {_clock_text(st.budget_s)}")
        return " and ".join(limits) or "no limit"

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()


class JsonLinesProgress(TuneProgress):
    """One JSON object per event, flushed at once: ``{"event": ..., "elapsed_s": ..., ...}``.

    Events: ``start``, ``trial_started``, ``trial_reported``, ``trial_finished`` (with the counts and the best
    so far), ``phase`` and ``end`` (totals and throughput). Non-finite numbers are written as ``null``.
    """

    def __init__(self, stream: IO[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stream = stream if stream is not None else sys.stdout

    def _on_event(self, event: str, fields: dict[str, Any]) -> None:
        record: dict[str, Any] = {"event": event, "elapsed_s": round(self._elapsed(), 3), **fields}
        st = self._state
        if event in ("trial_finished", "end"):
            record.update(
                counts=dict(st.counts),
                running=len(st.running),
                best_trial=st.best_trial,
                best_value=st.best_value,
                best_params=st.best_params,
            )
        if event == "end":
            per_minute, per_second = self._throughput()
            record.update(epochs=st.n_epochs, trials_per_minute=per_minute, epochs_per_second=per_second)
        self._stream.write(json.dumps(_json_safe(record), default=str) + "\n")
        self._stream.flush()


class RichProgress(TuneProgress):
    """A live panel on a terminal (rich), refreshed a few times a second, with a line per finished trial."""

    def __init__(self, console: Console | None = None, *, max_running_rows: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._console = console if console is not None else Console(stderr=True)
        self._max_rows = max_running_rows
        self._live: Live | None = None
        # What the refresh thread draws: a copy taken after each event. The thread must not take our lock:
        # it holds rich's while it draws, and printing a trial's line (under our lock) needs rich's.
        self._snapshot = self._state.copy()

    def _on_event(self, event: str, fields: dict[str, Any]) -> None:
        self._snapshot = self._state.copy()
        if event == "start":
            self._live = Live(
                console=self._console,
                get_renderable=lambda: self.render(self._snapshot),
                refresh_per_second=4,
                transient=True,
            )
            self._live.start()
        elif event == "trial_finished":
            style = {"complete": "", "pruned": "dim", "failed": "red"}[fields["state"]]
            line = self._finished_line(fields["number"], fields["state"], fields["value"])
            self._console.print(Text(line, style=style), highlight=False)
        elif event == "phase":
            self._console.print(Text(f"[{_clock_text(self._elapsed())}] {fields['message']}", style="bold"))
        elif event == "end":
            if self._live is not None:
                self._live.stop()
            self._console.print(Text(_summary_line(self), style="bold"), highlight=False)

    def render(self, state: _State | None = None) -> RenderableType:
        """The panel for ``state`` (a snapshot; the current state by default)."""
        st = state or self._state
        fraction = self._fraction(st)
        bar = ProgressBar(total=1.0, completed=fraction or 0.0, pulse=fraction is None, width=36)
        head = Table.grid(padding=(0, 1))
        head.add_row(bar, Text(self._budget_text(st)))
        per_minute, per_second = self._throughput(st)
        counts = Text.assemble(
            (f"running {len(st.running)}", "cyan"),
            "  ",
            (f"complete {st.counts['complete']}", "green"),
            "  ",
            (f"pruned {st.counts['pruned']}", "yellow"),
            "  ",
            (f"failed {st.counts['failed']}", "red" if st.counts["failed"] else ""),
            f"    {per_minute:.1f} trials/min · {per_second:.1f} epochs/s",
        )
        if st.best_trial is not None:
            best = Text.assemble(
                ("best ", "bold"),
                (f"{self.metric} {_num(st.best_value)}", "bold green"),
                f" (trial {st.best_trial})  ",
                (_params_text(st.best_params), "dim"),
            )
        else:
            best = Text("best: no trial complete yet", style="dim")
        rows: list[RenderableType] = [Text(f"{st.phase}", style="bold"), head, counts, best]
        if st.running:
            table = Table(box=None, padding=(0, 2), show_edge=False, header_style="dim")
            for column in ("trial", "epoch", self.metric, "parameters"):
                table.add_column(column, no_wrap=column != "parameters", overflow="ellipsis")
            shown = sorted(st.running.items())[: self._max_rows]
            for number, run in shown:
                table.add_row(str(number), str(run.epoch), _num(run.value), _params_text(run.params))
            rows.append(table)
            if len(st.running) > len(shown):
                rows.append(Text(f"… and {len(st.running) - len(shown)} more running", style="dim"))
        return Group(*rows)


def make_progress(
    mode: Literal["rich", "quiet", "json"],
    *,
    metric: str = "value",
    direction: Direction = "maximize",
    stream: IO[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TuneProgress:
    """The progress display for ``mode``. ``stream`` overrides where it writes (stderr for ``"rich"``,
    stdout for ``"json"``); ``"rich"`` on a stream that is not a terminal writes plain lines instead."""
    common: dict[str, Any] = {"metric": metric, "direction": direction, "clock": clock}
    if mode == "quiet":
        return TuneProgress(**common)
    if mode == "json":
        return JsonLinesProgress(stream, **common)
    if mode == "rich":
        console = Console(file=stream if stream is not None else sys.stderr)
        if console.is_terminal and not console.is_dumb_terminal:
            return RichProgress(console, **common)
        return PlainProgress(stream, **common)
    close = difflib.get_close_matches(str(mode), PROGRESS_MODES, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise SpecError(f"progress mode '{mode}' is not one of {', '.join(PROGRESS_MODES)}.{hint}")


# ------------------------------------------------------------------------------------------------- helpers


def _summary_line(progress: TuneProgress) -> str:
    st = progress._state
    per_minute, per_second = progress._throughput()
    best = (
        f"; best {progress.metric} {_num(st.best_value)} (trial {st.best_trial})"
        if st.best_trial is not None
        else ""
    )
    return (
        f"search done in {_clock_text(progress._elapsed())}: {st.counts['complete']} complete, "
        f"{st.counts['pruned']} pruned, {st.counts['failed']} failed; "
        f"{per_minute:.1f} trials/min, {per_second:.1f} epochs/s{best}"
    )


def _better(value: float | None, best: float | None, direction: Direction) -> bool:
    if value is None:
        return False
    if best is None:
        return True
    return value > best if direction == "maximize" else value < best


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _num(value: Any) -> str:
    return f"{value:.4g}" if _finite(value) else "—"


def _clock_text(seconds: float) -> str:
    """Seconds as ``m:ss`` (``h:mm:ss`` past an hour)."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _params_text(params: Mapping[str, Any], *, limit: int = 110) -> str:
    text = "  ".join(f"{k}={_num(v) if isinstance(v, float) else v}" for k, v in params.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_safe(value: Any) -> Any:
    """Non-finite floats → None (``json.dumps`` would write ``NaN``, which is not JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
