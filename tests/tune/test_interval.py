"""A candidate's 95% interval stays inside its metric's range, however few and extreme its runs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunelab.tune._interval import interval, metric_range

RANGES = {
    "val_accuracy": st.floats(0.0, 1.0),
    "val_f1": st.floats(0.0, 1.0),
    "val_roc_auc": st.floats(0.0, 1.0),
    "val_rmse": st.floats(0.0, 1e6),
    "val_loss": st.floats(0.0, 1e3),
    "val_r2": st.floats(-1e3, 1.0),
}


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    data=st.data(),
    metric=st.sampled_from(sorted(RANGES)),
    n=st.integers(2, 12),
    n_rows=st.one_of(st.none(), st.integers(1, 100_000)),
)
def test_the_interval_lies_inside_the_metrics_range(data, metric, n, n_rows):
    scores = data.draw(st.lists(RANGES[metric], min_size=n, max_size=n))
    record = interval(scores, metric, n_rows=n_rows)
    low, high = record["ci95"]
    lowest, highest = metric_range(metric)
    assert record["n"] == n
    assert lowest <= low <= high <= highest, (scores, record)


def test_two_runs_near_a_bound_give_a_wide_interval_that_stops_at_it():
    """The demo's case: two accuracies near 1, where a plain t-interval ended above 1 (1.009)."""
    record = interval([0.9749, 0.9799], "val_accuracy")
    low, high = record["ci95"]
    assert high <= 1.0
    assert low < 0.9749  # two runs: wide, around both
    assert high > 0.9799
    assert record["mean"] == pytest.approx(0.9774)


def test_errors_stay_positive_and_identical_runs_give_a_point():
    low, high = interval([0.01, 0.5, 0.02], "val_rmse")["ci95"]
    assert 0.0 < low < high
    assert interval([0.8, 0.8, 0.8], "val_accuracy")["ci95"] == pytest.approx((0.8, 0.8))


def test_fewer_than_two_runs_have_no_interval():
    assert all(math.isnan(end) for end in interval([0.9], "val_accuracy")["ci95"])
    assert interval([math.nan], "val_accuracy")["n"] == 0


def test_a_perfect_run_does_not_stretch_an_accuracy_interval_to_zero():
    """Runs at 0.96-1.0 on 73 validation rows: on the empirical-logit scale the interval stays near them;
    the bare logit of 1 - 1e-9 would put its lower end near 0."""
    scores = [0.9589, 1.0, 0.9726, 1.0]
    low, high = interval(scores, "val_accuracy", n_rows=73)["ci95"]
    assert 0.9 < low < min(scores)
    assert high == 1.0
    assert interval(scores, "val_accuracy")["ci95"][0] < 0.5  # why the row count is passed
