"""The front and the pick on synthetic measurements: non-dominated entries only, re-measured ones re-ranked,
never a model slower than the original at some batch size, and the screen's rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tunelab.compress._candidate import Footprint, Knobs
from tunelab.compress._measure import Latency
from tunelab.compress._search import CompressionExecutor, Entry
from tunelab.compress._select import Pick, choose, pareto_front, remeasure


def entry(trial: int | None, score: float, ms1: float, ms256: float, size: int) -> Entry:
    latencies = tuple(
        Latency("onnxruntime", batch, 1, 30, ms, 0.01, batch / (ms / 1e3))
        for batch, ms in ((1, ms1), (256, ms256))
    )
    return Entry(trial, Knobs(), score, Footprint(latencies, size * 2, size, 100, 1000))


ORIGINAL = entry(None, 0.92, 0.20, 28.0, 1500)


def pick_of(front: list[Entry], *, floor: float, original: Entry = ORIGINAL, **options: object) -> Pick:
    """``choose`` with batches 1 and 256, accuracy, acceptable from ``floor`` up (``prefer`` latency)."""
    settings: dict = {"prefer": "latency", "batches": [1, 256], "metric": "accuracy", **options}
    return choose(front, original, acceptable=lambda v: v >= floor, **settings)


def test_the_front_holds_exactly_the_non_dominated_entries() -> None:
    a = entry(0, 0.92, 0.2, 20.0, 400)  # accurate, slowish
    b = entry(1, 0.91, 0.1, 8.0, 100)  # fast and small
    c = entry(2, 0.90, 0.1, 9.0, 120)  # dominated by b
    d = entry(3, 0.85, 0.05, 3.0, 100)  # fastest, least accurate
    front = pareto_front([a, b, c, d], batch=256, maximize=True)
    assert [e.trial for e in front] == [3, 1, 0]  # fastest first
    low_is_good = pareto_front([a, b, c, d], batch=256, maximize=False)  # an error metric: lower is better
    assert [e.trial for e in low_is_good] == [3]  # d is then best on all three


def test_the_pick_is_the_fastest_acceptable_and_never_slower_than_the_original() -> None:
    fast_but_slow_at_one = entry(0, 0.915, 0.30, 5.0, 100)  # faster at 256, slower than the original at 1
    steady = entry(1, 0.915, 0.15, 8.0, 110)
    inaccurate = entry(2, 0.80, 0.05, 2.0, 50)
    pick = pick_of([inaccurate, fast_but_slow_at_one, steady], floor=0.91)
    assert pick.entry is steady
    assert pick.slower_than_original == (0,)
    assert "3.50x the original's speed" in pick.reason
    smallest = pick_of([entry(3, 0.915, 0.15, 9.0, 90), steady], floor=0.91, prefer="size")
    assert smallest.entry is not None
    assert smallest.entry.trial == 3


def test_when_nothing_qualifies_the_winner_stays_and_the_reason_says_why() -> None:
    slower = entry(0, 0.92, 0.30, 30.0, 400)
    pick = pick_of([slower], floor=0.91)
    assert pick.entry is None
    assert "slower than the fp32 original" in pick.reason
    assert "winner stays" in pick.reason


def test_remeasure_interleaves_rounds_and_takes_the_median() -> None:
    calls: list[int | None] = []
    times = iter([1.0, 10.0, 3.0, 30.0, 2.0, 20.0])  # A B A B A B

    def timer(e: Entry) -> list[Latency]:
        calls.append(e.trial)
        ms = next(times)
        return [Latency("onnxruntime", 256, 1, 30, ms, 0.1, 256 / (ms / 1e3))]

    a, b = entry(0, 0.9, 1, 1, 10), entry(1, 0.9, 1, 1, 10)
    b = Entry(b.trial, Knobs(width=0.5), b.score, b.footprint)  # another structure: measured on its own
    out = remeasure([a, b], timer, rounds=3)
    assert calls == [0, 1, 0, 1, 0, 1]
    assert out[0].latency(256) == pytest.approx(2.0)
    assert out[1].latency(256) == pytest.approx(20.0)
    assert out[0].footprint.latencies[0].runs == 90


def test_the_screen_stops_a_candidate_an_acceptable_model_beats_on_latency_and_size() -> None:
    source = SimpleNamespace(metric="accuracy", reference=0.92, scorer=SimpleNamespace(direction="maximize"))
    spec = SimpleNamespace(max_drop=1.0, throughput_batch=256)
    executor = CompressionExecutor.__new__(CompressionExecutor)
    executor.source, executor.spec, executor.original = source, spec, ORIGINAL  # type: ignore[assignment]
    executor.allowed, executor.completed = 0.01, [entry(0, 0.915, 0.1, 8.0, 100), entry(1, 0.80, 0.05, 2, 20)]
    blocker = executor.dominated_by(entry(None, 0.0, 0.2, 9.0, 120).footprint)
    assert blocker is not None
    assert blocker.trial == 0
    # only an inaccurate model (trial 1) is faster and smaller: it cannot stop anything
    assert executor.dominated_by(entry(None, 0.0, 0.1, 5.0, 50).footprint) is None
    # the original itself stops a candidate as slow and as large as it is
    original_blocks = executor.dominated_by(entry(None, 0.0, 0.3, 30.0, 1500).footprint)
    assert original_blocks is ORIGINAL


def test_a_pick_that_gains_nothing_leaves_the_winner_as_it_is() -> None:
    same = entry(0, 0.921, 0.199, 27.5, 1490)  # within the ties of the original on latency and size
    pick = pick_of([same], floor=0.91)
    assert pick.entry is None
    assert "neither faster" in pick.reason
    assert "winner stays" in pick.reason
    smaller_only = entry(1, 0.915, 0.199, 27.5, 700)  # as fast, half the size: worth it
    pick = pick_of([same, smaller_only], floor=0.91, prefer="size")
    assert pick.entry is smaller_only


def test_latencies_within_noise_are_a_tie_that_accuracy_breaks() -> None:
    """The fastest by 1% gives way to one 0.4 points more accurate; a model 20% faster does not."""
    edge = entry(0, 0.9133, 0.05, 9.236, 100)
    better = entry(1, 0.9177, 0.08, 9.316, 110)
    pick = pick_of([edge, better], floor=0.913)
    assert pick.entry is better
    much_faster = entry(2, 0.9140, 0.05, 7.0, 100)
    pick = pick_of([edge, better, much_faster], floor=0.913)
    assert pick.entry is much_faster
    errors = choose(  # an error metric: lower is better, so the tie goes to the lower value
        [entry(3, 10.0, 0.05, 9.2, 100), entry(4, 9.0, 0.05, 9.3, 100)],
        entry(None, 9.5, 0.2, 28.0, 1500),
        acceptable=lambda v: v <= 10.5,
        prefer="latency",
        batches=[1, 256],
        metric="rmse",
        maximize=False,
    )
    assert errors.entry is not None
    assert errors.entry.trial == 4


def test_entries_of_one_structure_share_one_pooled_latency() -> None:
    """Sparsity and fine-tuning change no computation: such entries get the median of all their runs."""
    times = iter([8.3, 8.8, 11.1, 8.4, 8.9, 10.0])
    seen: list[int | None] = []

    def timer(e: Entry) -> list[Latency]:
        seen.append(e.trial)
        ms = next(times)
        return [Latency("onnxruntime", 256, 1, 30, ms, 0.1, 256 / (ms / 1e3))]

    same = [
        Entry(trial, Knobs(width=0.5, quant="dynamic", sparsity=s), 0.91, entry(trial, 0, 1, 1, 10).footprint)
        for trial, s in ((4, 0.0), (13, 0.5), (15, 0.5))
    ]
    out = remeasure(same, timer, rounds=2)
    assert seen == [4, 13, 15, 4, 13, 15]
    assert [e.latency(256) for e in out] == pytest.approx([8.85, 8.85, 8.85])
    assert out[0].footprint.latencies[0].runs == 180
