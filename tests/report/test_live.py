"""Live progress of a study: JSON lines parse, quiet is silent, plain lines carry no control codes, the rich
panel shows the state, and concurrent trials neither race nor deadlock."""

from __future__ import annotations

import io
import json
import re
import threading

import pytest
from rich.console import Console

from tunelab.errors import SpecError
from tunelab.report._live import (
    JsonLinesProgress,
    PlainProgress,
    RichProgress,
    TuneProgress,
    make_progress,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drive(progress: TuneProgress, clock: FakeClock) -> None:
    """A study of 4 trials over 60 s: 0 and 3 complete (3 is best when maximizing), 1 pruned, 2 failed."""
    progress.start(total_trials=5, budget_s=120.0)
    outcomes = [("complete", 0.80), ("pruned", 0.50), ("failed", None), ("complete", 0.90)]
    for number, (state, value) in enumerate(outcomes):
        progress.trial_started(number, {"train.lr": 0.001 * (number + 1), "train.optimizer": "adam"})
        for epoch in (1, 2, 3):
            clock.now += 5.0
            progress.trial_reported(number, epoch, 0.1 * epoch)
        progress.trial_finished(number, state, value)
    progress.phase("re-evaluating the top 2 candidates")
    progress.close()


@pytest.fixture
def no_forced_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich treats any stream as a terminal when these are set (as some CI services do)."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "TERM"):
        monkeypatch.delenv(name, raising=False)


def test_json_lines_are_one_parseable_event_per_call() -> None:
    clock, out = FakeClock(), io.StringIO()
    drive(make_progress("json", metric="val_accuracy", stream=out, clock=clock), clock)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start"
    assert kinds[-2:] == ["phase", "end"]
    assert kinds.count("trial_started") == kinds.count("trial_finished") == 4
    assert kinds.count("trial_reported") == 12
    finished = [e for e in events if e["event"] == "trial_finished"]
    assert [e["state"] for e in finished] == ["complete", "pruned", "failed", "complete"]
    assert finished[2]["value"] is None
    assert [e["best_trial"] for e in finished] == [0, 0, 0, 3]
    assert finished[-1]["best_params"] == {"train.lr": 0.004, "train.optimizer": "adam"}
    end = events[-1]
    assert end["counts"] == {"complete": 2, "pruned": 1, "failed": 1}
    assert end["elapsed_s"] == 60.0
    assert end["trials_per_minute"] == pytest.approx(4.0)  # 4 trials in 60 s
    assert end["epochs_per_second"] == pytest.approx(0.2)  # 12 epochs in 60 s


def test_json_lines_write_non_finite_values_as_null() -> None:
    out = io.StringIO()
    progress = JsonLinesProgress(out)
    progress.start(None, None)
    progress.trial_reported(0, 1, float("nan"))
    progress.trial_finished(0, "complete", float("inf"))
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert "NaN" not in out.getvalue()
    assert "Infinity" not in out.getvalue()
    assert records[1]["value"] is None
    assert records[2]["value"] is None
    assert records[2]["best_trial"] is None  # a non-finite score is never the best


def test_minimizing_keeps_the_lowest_value_as_best() -> None:
    clock, out = FakeClock(), io.StringIO()
    drive(JsonLinesProgress(out, metric="val_rmse", direction="minimize", clock=clock), clock)
    end = json.loads(out.getvalue().splitlines()[-1])
    assert (end["best_trial"], end["best_value"]) == (0, 0.80)


def test_quiet_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    progress = make_progress("quiet", clock=clock)
    drive(progress, clock)
    assert capsys.readouterr() == ("", "")
    assert type(progress) is TuneProgress


@pytest.mark.usefixtures("no_forced_terminal")
def test_rich_mode_on_a_non_terminal_writes_plain_lines() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = make_progress("rich", metric="val_accuracy", stream=out, clock=clock)
    assert isinstance(progress, PlainProgress)
    drive(progress, clock)
    text = out.getvalue()
    assert "\x1b" not in text
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0] == "tuning val_accuracy (maximize): up to 5 trials and a budget of 2:00"
    assert lines[4].startswith("[1:00] trial   3 complete val_accuracy 0.9")
    assert "best 0.9 (trial 3)" in lines[4]
    assert "4/5 trials · 1:00 of 2:00 (1:00 left)" in lines[4]
    assert lines[5] == "[1:00] re-evaluating the top 2 candidates"
    assert lines[6].startswith(
        "search done in 1:00: 2 complete, 1 pruned, 1 failed; 4.0 trials/min, 0.2 epochs/s"
    )


@pytest.mark.usefixtures("no_forced_terminal")
def test_rich_mode_defaults_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    drive(make_progress("rich", clock=clock), clock)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "search done" in captured.err


def test_rich_panel_shows_counts_best_and_running_trials() -> None:
    clock = FakeClock()
    progress = RichProgress(Console(file=io.StringIO(), force_terminal=True, width=120), clock=clock)
    progress.start(total_trials=10, budget_s=None)
    progress.trial_started(0, {"train.lr": 0.01})
    progress.trial_finished(0, "complete", 0.75)
    progress.trial_started(1, {"train.lr": 0.02})
    clock.now += 30.0
    progress.trial_reported(1, 4, 0.5)
    recorder = Console(record=True, width=120, file=io.StringIO())
    recorder.print(progress.render())
    panel = recorder.export_text()
    progress.close()
    assert "1/10 trials · 0:30" in panel
    assert "running 1  complete 1  pruned 0  failed 0" in panel
    assert "2.0 trials/min" in panel
    assert "best value 0.75 (trial 0)  train.lr=0.01" in panel
    assert re.search(r"^\s*1\s+4\s+0\.5\s+train\.lr=0\.02\s*$", panel, re.MULTILINE)  # trial, epoch, value


def test_concurrent_trials_from_many_threads_do_not_deadlock() -> None:
    """Worker threads report while rich's refresh thread draws: both must get through."""
    out = io.StringIO()
    progress = RichProgress(Console(file=out, force_terminal=True, width=100))
    progress.start(total_trials=40, budget_s=None)

    def worker(first: int) -> None:
        for number in range(first, 40, 4):
            progress.trial_started(number, {"x": number})
            for epoch in range(1, 6):
                progress.trial_reported(number, epoch, float(epoch))
            progress.trial_finished(number, "complete" if number % 3 else "pruned", float(number))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "progress deadlocked"
    progress.close()
    assert "search done" in out.getvalue()
    assert "26 complete, 14 pruned" in out.getvalue()


def test_unknown_mode_names_the_choices() -> None:
    with pytest.raises(SpecError, match=r"'jsonl' is not one of rich, quiet, json\. Did you mean 'json'\?"):
        make_progress("jsonl")  # type: ignore[arg-type]


def test_unknown_trial_state_is_refused() -> None:
    progress = TuneProgress()
    with pytest.raises(ValueError, match="complete, pruned, failed"):
        progress.trial_finished(0, "COMPLETE", 1.0)


def test_close_twice_reports_the_end_once() -> None:
    out = io.StringIO()
    progress = JsonLinesProgress(out)
    with progress:
        progress.start(1, None)
    progress.close()
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["start", "end"]
