"""run_study: outcomes, budgets, schedulers in the loop, real SQLite with write-behind and resume."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from tunelab.clock import ManualClock
from tunelab.errors import SpecError, TrainingError
from tunelab.search import (
    AshaScheduler,
    Decision,
    MedianStoppingScheduler,
    SearchSpace,
    WriteBehind,
    run_study,
)
from tunelab.search.schedulers import NoScheduler
from tunelab.storage import INTERRUPTED, open_backend

SPACE = SearchSpace.from_dict({"train.x": {"float": [-3.0, 3.0]}, "train.y": {"float": [-3.0, 3.0]}})


def quadratic(handle):
    p = handle.params["train"]
    return p["x"] ** 2 + p["y"] ** 2


def curve_objective(n_epochs: int):
    """Reports a decreasing curve whose floor is the quadratic; stops when told."""

    def objective(handle):
        final = quadratic(handle)
        for epoch in range(1, n_epochs + 1):
            if handle.report(epoch, final + 1.0 / epoch) is Decision.STOP:
                return final  # ignored: a stopped trial is pruned
        return final

    return objective


def test_minimizes_and_returns_nested_best_params():
    summary = run_study(quadratic, SPACE, n_trials=40, seed=0)
    assert summary.n_complete == 40
    assert summary.n_pruned == summary.n_failed == 0
    assert summary.stop_reason == "n_trials"
    assert set(summary.best_params) == {"train"}
    assert summary.best_value == pytest.approx(
        summary.best_params["train"]["x"] ** 2 + summary.best_params["train"]["y"] ** 2
    )
    assert summary.best_value < 0.5


def test_same_seed_same_study():
    first = run_study(quadratic, SPACE, n_trials=15, seed=5)
    assert run_study(quadratic, SPACE, n_trials=15, seed=5).best_params == first.best_params


def test_scheduler_stops_become_pruned_trials_with_their_curves():
    storage = optuna.storages.InMemoryStorage()
    summary = run_study(
        curve_objective(9),
        SPACE,
        n_trials=30,
        scheduler=AshaScheduler(max_resource=9),
        storage=storage,
        seed=0,
    )
    trials = optuna.load_study(study_name="tunelab", storage=storage).trials
    assert summary.n_pruned == sum(t.state == TrialState.PRUNED for t in trials) > 0
    assert summary.n_complete + summary.n_pruned == 30
    for trial in trials:
        last = max(trial.intermediate_values)
        assert last in (1, 3, 9)  # stopped exactly at a rung, or completed
        assert (trial.state == TrialState.COMPLETE) == (last == 9)
    assert summary.n_epochs == sum(max(t.intermediate_values) for t in trials)


def test_failures_are_recorded_and_the_study_goes_on():
    def objective(handle):
        n = handle.number
        if n == 1:
            raise TrainingError("loss is nan at epoch 3")
        if n == 2:
            return math.nan
        return quadratic(handle)

    storage = optuna.storages.InMemoryStorage()
    summary = run_study(objective, SPACE, n_trials=5, storage=storage, seed=0)
    assert (summary.n_complete, summary.n_failed) == (3, 2)
    trials = optuna.load_study(study_name="tunelab", storage=storage).trials
    assert trials[1].user_attrs["fail_reason"] == "TrainingError: loss is nan at epoch 3"
    assert "not finite" in trials[2].user_attrs["fail_reason"]


def test_other_exceptions_fail_the_trial_and_propagate():
    storage = optuna.storages.InMemoryStorage()

    def objective(handle):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_study(objective, SPACE, n_trials=3, storage=storage)
    (trial,) = optuna.load_study(study_name="tunelab", storage=storage).trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "KeyError: 'bug'"


def test_budgets_epochs_target_and_time():
    by_epochs = run_study(curve_objective(4), SPACE, max_total_epochs=10, seed=0)
    assert (by_epochs.stop_reason, by_epochs.n_epochs) == ("max_total_epochs", 12)  # trials finish: 4+4+4

    by_target = run_study(quadratic, SPACE, n_trials=500, target=1.0, seed=0)
    assert by_target.stop_reason == "target"
    assert by_target.best_value <= 1.0
    assert by_target.n_complete < 500

    clock = ManualClock()

    def one_second(handle):
        clock.advance(1.0)
        return quadratic(handle)

    by_time = run_study(one_second, SPACE, timeout_s=5.0, seed=0, clock=clock)
    assert (by_time.stop_reason, by_time.n_complete, by_time.elapsed_s) == ("timeout", 5, 5.0)


def test_grid_search_stops_when_exhausted():
    grid = SearchSpace.from_dict({"a": {"int": [1, 3]}, "b": {"choice": ["u", "v"]}})
    summary = run_study(lambda h: h.params["a"], grid, sampler="grid", n_trials=100)
    assert (summary.stop_reason, summary.n_complete) == ("grid_exhausted", 6)


def test_several_objectives_give_a_pareto_front():
    summary = run_study(
        lambda h: (h.params["train"]["x"] ** 2, (h.params["train"]["x"] - 1) ** 2),
        SPACE,
        directions=["minimize", "minimize"],
        n_trials=20,
        sampler="nsga2",
    )
    assert summary.best_value is None
    assert summary.pareto_front
    for params, values in summary.pareto_front:
        assert values[0] == pytest.approx(params["train"]["x"] ** 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give the study a budget"),
        ({"n_trials": 0}, "n_trials must be a positive"),
        ({"n_trials": 1, "direction": "maximize"}, "direction='minimize' but the study will maximize"),
        (
            {"n_trials": 1, "directions": ["minimize", "minimize"]},
            "with several objectives use scheduler=None",
        ),
    ],
)
def test_bad_study_arguments(kwargs, message):
    with pytest.raises(SpecError, match=message):
        run_study(quadratic, SPACE, scheduler=MedianStoppingScheduler(), **kwargs)


def test_report_needs_increasing_epochs():
    def objective(handle):
        handle.report(2, 1.0)
        handle.report(2, 1.0)

    with pytest.raises(SpecError, match="increasing epochs"):
        run_study(objective, SPACE, n_trials=1)


# -- SQLite ------------------------------------------------------------------------------------------------


def _objective_with_everything(handle):
    handle.set_attr("note", {"params": handle.params})
    handle.report(1, 10.0)
    handle.report(2, math.inf)  # stored as +inf, not lost
    return quadratic(handle)


def test_sqlite_write_behind_is_an_ordinary_optuna_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    memory = optuna.storages.InMemoryStorage()
    run_study(_objective_with_everything, SPACE, n_trials=30, storage=memory, seed=2)
    summary = run_study(
        _objective_with_everything, SPACE, n_trials=30, storage=WriteBehind(url, flush_every=7), seed=2
    )
    expected = optuna.load_study(study_name="tunelab", storage=memory).trials
    stored = optuna.load_study(study_name="tunelab", storage=url).trials
    assert len(stored) == 30
    assert summary.n_complete == 30
    for a, b in zip(expected, stored, strict=True):
        assert (a.number, a.state, a.params, a.distributions) == (
            b.number,
            b.state,
            b.params,
            b.distributions,
        )
        assert a.values == pytest.approx(b.values)
        assert a.intermediate_values == b.intermediate_values == {1: 10.0, 2: math.inf}
        assert a.user_attrs == b.user_attrs
        assert a.system_attrs == b.system_attrs


def test_sqlite_rerun_continues_the_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    run_study(quadratic, SPACE, n_trials=10, storage=url)
    summary = run_study(quadratic, SPACE, n_trials=25, storage=url)  # n_trials counts the study's trials
    trials = optuna.load_study(study_name="tunelab", storage=url).trials
    assert [t.number for t in trials] == list(range(25))
    assert summary.n_complete == 25
    with pytest.raises(SpecError, match="created with directions"):
        run_study(quadratic, SPACE, n_trials=30, storage=url, direction="maximize")


def test_interrupted_trials_are_failed_and_retried_with_the_same_params(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    run_study(quadratic, SPACE, n_trials=3, storage=url)
    # A run that dies mid-trial, after a flush wrote the running trial (no close(): like kill -9).
    sampler = optuna.samplers.RandomSampler(seed=0)
    crashed = open_backend(
        WriteBehind(url, flush_interval_s=0.0), study_name="tunelab", directions=["minimize"], sampler=sampler
    )
    trial = crashed.study.ask()
    params = SPACE.sample(trial)
    crashed.touch(trial.number)

    seen = []
    summary = run_study(lambda h: seen.append(h.params) or quadratic(h), SPACE, n_trials=6, storage=url)
    trials = optuna.load_study(study_name="tunelab", storage=url).trials
    assert trials[3].state == TrialState.FAIL
    assert trials[3].user_attrs["fail_reason"] == INTERRUPTED
    assert seen[0] == params
    assert trials[4].user_attrs["retry_of"] == 3
    # 3 + the retry + 2 new: the interrupted trial is not counted, its retry stands for it
    assert (summary.n_complete, len(trials)) == (6, 7)
    assert summary.n_failed == 0


def test_a_resumed_study_restores_the_scheduler_state(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    run_study(curve_objective(9), SPACE, n_trials=8, storage=url, scheduler=AshaScheduler(max_resource=9))
    resumed = AshaScheduler(max_resource=9)
    run_study(curve_objective(9), SPACE, n_trials=8, storage=url, scheduler=resumed)  # budget already spent
    trials = optuna.load_study(study_name="tunelab", storage=url).trials
    assert len(resumed.rungs.scores_at(0)) == sum(1 in t.intermediate_values for t in trials) == 8


def test_direct_storage_for_several_workers(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    summary = run_study(
        quadratic, SPACE, n_trials=4, storage=WriteBehind(url, enabled=False), scheduler=NoScheduler()
    )
    assert summary.n_complete == len(optuna.load_study(study_name="tunelab", storage=url).trials) == 4


def test_a_spent_time_budget_stops_running_trials_once_one_has_completed():
    """Each epoch takes 1000 s of a fake clock; the study has 7000 s. The first trial runs its five epochs
    past no deadline. The second is told at epoch 2 (7000 s) that the time is spent, and a completed trial
    exists, so it stops there as pruned; the study then ends on time."""
    clock = ManualClock()
    storage = optuna.storages.InMemoryStorage()

    def objective(handle):
        for epoch in range(1, 6):
            clock.advance(1000.0)
            handle.report(epoch, quadratic(handle) + 1.0 / epoch)
            if epoch < 5 and handle.out_of_time():
                return None
        return quadratic(handle)

    summary = run_study(objective, SPACE, n_trials=5, timeout_s=7000.0, storage=storage, seed=0, clock=clock)
    trials = optuna.load_study(study_name="tunelab", storage=storage).trials
    assert trials[0].state == TrialState.COMPLETE
    assert max(trials[0].intermediate_values) == 5
    assert "stopped_by" not in trials[0].user_attrs
    assert trials[1].state == TrialState.PRUNED
    assert sorted(trials[1].intermediate_values) == [1, 2]
    assert trials[1].user_attrs["stopped_by"] == "time budget"
    assert (summary.n_complete, summary.n_pruned, summary.stop_reason) == (1, 1, "timeout")
    assert clock.now == 7000.0


def test_a_budget_too_short_for_one_trial_still_ends_with_one():
    """Time ends a study only once it has a result. Before a trial has completed, the running one is told it
    is out of time only once it has reported a value: it is then recorded complete with its last value,
    marked as cut."""
    clock = ManualClock()
    told = []

    def objective(handle):
        for epoch in range(1, 4):
            told.append(handle.out_of_time(within_epoch=True))  # no value yet: it trains on
            clock.advance(10.0)
            handle.report(epoch, 5.0 - epoch)
            if handle.out_of_time(within_epoch=True):
                told.append("cut")
                return None
        return 0.0

    storage = optuna.storages.InMemoryStorage()
    summary = run_study(objective, SPACE, n_trials=5, timeout_s=1.0, storage=storage, seed=0, clock=clock)
    assert (summary.n_complete, summary.stop_reason, told) == (1, "timeout", [False, "cut"])
    (trial,) = optuna.load_study(study_name="tunelab", storage=storage).trials
    assert trial.value == 4.0  # its one epoch's value
    assert "stopped after reporting epoch 1" in trial.user_attrs["cut_by_budget"]


def test_without_a_time_budget_trials_are_never_out_of_time():
    clock = ManualClock()
    seen = []

    def objective(handle):
        clock.advance(1e9)
        seen.append(handle.out_of_time())
        return quadratic(handle)

    run_study(objective, SPACE, n_trials=3, seed=0, clock=clock)
    assert seen == [False, False, False]


def test_the_deadline_check_reads_the_storage_at_most_once_an_interval_within_epochs():
    """After every minibatch the check costs a clock read; the storage is read at most once an interval,
    while between epochs it is read until a completed trial has been seen. Before the deadline it reads
    nothing."""
    from tunelab.search import StudyDeadline

    clock = ManualClock(10.0)
    study = optuna.create_study(direction="minimize")
    check = StudyDeadline(60.0, study, clock=clock, query_interval_s=1.0)
    assert (check(), check(throttled=True), check.n_queries) == (False, False, 0)  # before the deadline
    clock.set(100.0)
    assert (check(throttled=True), check(throttled=True), check.n_queries) == (False, False, 1)
    assert (check(), check.n_queries) == (False, 2)  # between epochs: always read
    study.add_trial(optuna.trial.create_trial(value=1.0))
    assert (check(throttled=True), check.n_queries) == (False, 2)  # within the interval: the last answer
    clock.advance(1.0)
    assert (check(throttled=True), check.n_queries) == (True, 3)
    assert (check(throttled=True), check(), check.n_queries) == (True, True, 3)  # seen once, seen for good


def quadratic_of(trial):
    return trial.params["train.x"] ** 2 + trial.params["train.y"] ** 2
