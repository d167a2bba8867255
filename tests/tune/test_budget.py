"""A time budget on a fake clock: it stops the search's running trials, even within an epoch, once the study
holds a result; it counts from the start of tune_experiment; re-evaluation starts only what fits."""

from __future__ import annotations

import datetime
from collections import Counter
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState
from torch.optim.optimizer import register_optimizer_step_post_hook

from tunelab.clock import ManualClock
from tunelab.execute import FoldRun
from tunelab.search import NoEvents, SearchSpace
from tunelab.spec import parse_spec
from tunelab.tune import tune_experiment
from tunelab.tune._select import reevaluate

IRIS = {
    "data": {"source": "iris"},
    "model": {"type": "mlp", "hidden": [8]},
    "train": {"epochs": 4, "batch_size": 32},
}
LR = {"train.lr": {"float": [1e-3, 1e-1], "log": True}}


class SpendsTheBudgetAt(NoEvents):
    """Moves the fake clock past the budget as trial ``number`` starts."""

    def __init__(self, clock: ManualClock, number: int, to: float) -> None:
        self.clock, self.number, self.to = clock, number, to

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        if number == self.number:
            self.clock.set(self.to)


@pytest.fixture
def optimizer_steps():
    """Optimizer steps per torch optimizer (one per trial and fold, then the re-evaluations' and the refit's),
    counted with torch's public hook on every optimizer's step. Keyed by the optimizer itself, which keeps it
    alive: an id could be reused by the next optimizer once the first is freed."""
    steps: Counter[Any] = Counter()
    handle = register_optimizer_step_post_hook(lambda optimizer, args, kwargs: steps.update([optimizer]))
    yield steps
    handle.remove()


@pytest.mark.parametrize("cv", [None, 2])
def test_a_spent_budget_stops_the_sequential_searchs_trials_within_an_epoch(tmp_path, optimizer_steps, cv):
    """`tunelab tune` with `fused: off`, a one-hour budget on a fake clock that jumps past the search's
    share as trial 1 starts. Trial 0 trained before the deadline and completes; trial 1's trainer asks after
    its first minibatch whether the budget is spent, which it is with a trial completed, so it stops there,
    pruned, saying why; the search then ends ("timeout") and the protocol refits trial 0."""
    clock = ManualClock()
    spec = parse_spec(
        {
            "name": "budget",
            **IRIS,
            "search": {
                "space": LR,
                "n_trials": 3,
                "budget": "1h",
                "top_k": 1,
                "n_seeds": 1,
                "fused": "off",
                "scheduler": {"name": "none"},  # only the budget stops trials
                "cv": cv,
            },
        }
    )
    result = tune_experiment(
        spec, out_dir=tmp_path / "run", clock=clock, progress=SpendsTheBudgetAt(clock, 1, to=3000.0)
    )
    study = optuna.load_study(study_name="budget", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert len(trials[0].intermediate_values) == 4 * (cv or 1)
    assert trials[1].intermediate_values == {}
    assert trials[1].user_attrs["stopped_by"] == "time budget"
    assert (result.stop_reason, result.winner.trial) == ("timeout", 0)
    per_optimizer = list(optimizer_steps.values())
    n_first = cv or 1
    assert all(n >= 4 * 2 for n in per_optimizer[:n_first])  # four epochs of at least two minibatches
    assert per_optimizer[n_first] == 1  # trial 1: one minibatch
    # 3000 s of 3600: the re-evaluation (one fresh run per fold, each about as long as trial 0's) fit.
    assert result.winner.n == n_first


class SpendsTheBudgetAtTheFirstReport(NoEvents):
    """Moves the fake clock past the budget as the first epoch is reported."""

    def __init__(self, clock: ManualClock, to: float) -> None:
        self.clock, self.to = clock, to

    def trial_reported(self, number: int, epoch: int, value: float) -> None:
        self.clock.set(max(self.clock.now, self.to))


@pytest.mark.parametrize("spent_at", ["start", "first report"])
def test_a_budget_spent_before_the_search_begins_still_gives_one_trial_and_a_model(
    tmp_path, spent_at, capsys
):
    """Loading data and probing come out of the search's share: here the clock jumps past the whole budget
    as the first trial starts (or reports its first epoch). That trial stops at the next minibatch (or
    after that epoch) and is recorded complete with its model's value as cut (a search always ends with a
    result), nothing else starts, the candidate is not re-evaluated, no refit fits, and the protocol
    delivers the model the search trained."""
    clock = ManualClock()
    spec = parse_spec(
        {
            "name": "late",
            **IRIS,
            "search": {
                "space": LR,
                "n_trials": 6,
                "budget": "10s",
                "fused": "off",
                "scheduler": {"name": "none"},
            },
        }
    )
    spends = (
        SpendsTheBudgetAt(clock, 0, to=100.0)
        if spent_at == "start"
        else SpendsTheBudgetAtTheFirstReport(clock, to=100.0)
    )
    result = tune_experiment(spec, out_dir=tmp_path / "run", clock=clock, progress=spends)
    assert (result.trials.n_complete, result.trials.n_finished, result.stop_reason) == (1, 1, "timeout")
    assert result.winner.n == 0  # no time left for a fresh run
    assert result.summary["candidates"][0]["n"] == 0
    assert (tmp_path / "run" / "best" / "metadata.json").is_file()
    study = optuna.load_study(study_name="late", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    cut = trial.user_attrs["cut_by_budget"]
    if spent_at == "start":  # scored after one minibatch of its first epoch
        assert trial.intermediate_values == {}
        assert "stopped within its first epoch, and its value is its model's as cut" in cut
    else:  # of its 4 epochs, one: scored as cut after it, that epoch's validation accuracy
        assert list(trial.intermediate_values) == [1]
        assert trial.value == pytest.approx(trial.intermediate_values[1])
        assert "stopped after reporting epoch 1, and its value is its model's as cut" in cut
    # Nor for a refit: the search's model is delivered, and the summary says so.
    assert (result.refit.epochs, result.refit.on_train_and_validation) == (0, False)
    assert result.summary["refit_budget"].endswith(
        "; delivered: the winner as trained in the search, cut by the budget"
    )
    assert result.summary["refit_budget"] in result.summary["protocol"]["refit"]
    from tunelab.cli._tune import _print_tune_summary

    _print_tune_summary(result.summary, tmp_path / "run")  # what `tunelab tune` prints at the end
    assert "the budget: the budget left 0.0 s for the refit" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("fused", ["off", "on"])
def test_the_searchs_share_of_a_budget_counts_from_the_start_of_tune_experiment(tmp_path, fused):
    """The search ends at 80% of the budget counted from the call, not from when the search began: a clock
    that reads 9 s later at every reading after the first puts the search past its 8 s share at once, so it
    trains its first trial (or population) only."""

    class Late(ManualClock):
        def monotonic(self) -> float:
            reading = super().monotonic()
            if self.n_reads == 1:
                self.now = 9.0
            return reading

    spec = parse_spec(
        {
            "name": "share",
            **IRIS,
            "train": {"epochs": 2, "batch_size": 32},
            "search": {
                "space": LR,
                "n_trials": 6,
                "budget": "10s",
                "fused": fused,
                "population_size": 2,
                "scheduler": {"name": "none"},
                "top_k": 1,
            },
        }
    )
    result = tune_experiment(spec, out_dir=tmp_path / "run", clock=Late())
    assert result.stop_reason == "timeout"
    assert result.trials.n_complete == (1 if fused == "off" else 2)
    assert result.trials.n_pruned == result.trials.n_failed == 0


def _reevaluation_spec(*, top_k: int) -> tuple[dict, Any]:
    """A search space over the learning rate and a spec that re-evaluates its ``top_k`` with two seeds."""
    space_dict = {"train.lr": {"float": [1e-3, 1e-1], "log": True}}
    spec = parse_spec(
        {
            "name": "re",
            "data": {"source": "iris"},
            "model": {"type": "mlp", "hidden": [8]},
            "search": {"space": space_dict, "top_k": top_k, "n_seeds": 2},
        }
    )
    return space_dict, spec


class _CountingEvaluator:
    """Scores every fresh run 0.5 at epoch 1 (with outputs on 4 validation rows), counting the runs (no
    training)."""

    def __init__(self) -> None:
        self.runs = 0

    def run(self, spec, fold, metric):
        self.runs += 1
        return FoldRun(0.5, 1, torch.zeros(4, 3))

    def bundle(self, fold):
        from types import SimpleNamespace

        return SimpleNamespace(X_val=[0.0] * 4)  # four validation rows


def _reevaluate(
    trials, space_dict, spec, evaluator, *, folds=(None,), deadline=None, events=None, clock=None
):
    """``reevaluate`` on ``trials`` as a study (what it reads of one), scored by validation accuracy."""
    from types import SimpleNamespace

    from tunelab.search import Events

    return reevaluate(
        SimpleNamespace(trials=trials),  # type: ignore[arg-type]
        SearchSpace.from_dict(space_dict),
        spec,
        evaluator,
        folds=list(folds),
        metric="val_accuracy",
        direction="maximize",
        deadline=deadline,
        events=events or Events(),
        clock=clock or ManualClock(0.0),
    )


@pytest.mark.parametrize(("seconds_left", "expected_runs"), [(1000.0, 2), (150.0, 0)])
def test_a_fresh_run_starts_only_if_it_and_the_refit_fit_in_the_budget(seconds_left, expected_runs):
    """The winner's re-evaluation with fresh seeds: a trial that took 100 s asks for about 200 s (its run,
    then the refit), so with 150 s left none starts and the search's own score decides."""

    from tunelab.search import Events

    space_dict, spec = _reevaluation_spec(top_k=1)
    trial = optuna.trial.create_trial(
        params={"train.lr": 0.01},
        distributions={"train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)},
        value=0.9,
        user_attrs={"best_epochs": [3]},
    )
    trial.datetime_start = datetime.datetime(2026, 1, 1, 12, 0, 0)
    trial.datetime_complete = trial.datetime_start + datetime.timedelta(seconds=100)
    evaluator = _CountingEvaluator()
    notes: list[str] = []
    clock = ManualClock(500.0)
    candidates = _reevaluate(
        [trial],
        space_dict,
        spec,
        evaluator,
        deadline=500.0 + seconds_left,
        events=Events(log=notes.append),
        clock=clock,
    )
    assert evaluator.runs == expected_runs
    assert candidates[0].n == expected_runs
    if not expected_runs:
        assert notes == [f"candidate trial {trial.number}: not re-evaluated (budget spent)"]


def test_a_fused_trials_fresh_run_is_planned_from_its_share_of_the_populations_time():
    """A trial trained in a population of 8 took the population's wall time; alone, at the probe's
    sequential rate, it takes speedup / 8 of it (speedup 4 measured at K=8)."""
    from collections import Counter

    from tunelab.tune._select import _alone_share

    throughput = {"sequential": 100.0, "K=1": 90.0, "K=4": 250.0, "K=8": 400.0}
    members = Counter({0: 8, 1: 3})

    def trial(population):
        attrs = {} if population is None else {"population": population}
        return optuna.trial.create_trial(value=0.5, user_attrs=attrs)

    assert _alone_share(trial(0), members, throughput) == pytest.approx(4 / 8)
    assert _alone_share(trial(1), members, throughput) == pytest.approx(1 / 3)  # K=1 probed below 3
    assert _alone_share(trial(None), members, throughput) == 1.0  # a sequential trial: all of it
    assert _alone_share(trial(0), members, {}) == 1.0  # no measurement: the safe side


class _TimedEvaluator(_CountingEvaluator):
    """Each fresh run takes 10 s on ``clock``; records (lr, fold) in the order runs start."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self.clock, self.order = clock, []

    def run(self, spec, fold, metric):
        self.order.append((spec.train.lr, fold))
        self.clock.advance(10.0)
        return super().run(spec, fold, metric)


def test_seeds_go_round_the_candidates_and_a_seed_cut_short_is_dropped():
    """Two candidates, two seeds, two folds; each run 10 s and planned at 2 x 5 s. With 45 s left: seed 1 on
    both candidates (4 runs, 40 s), then none of seed 2 (a run would end past the deadline with its refit).
    With 55 s: seed 2 of the first candidate starts one fold and is cut: those scores are not counted."""

    space_dict, spec = _reevaluation_spec(top_k=2)
    distributions = {"train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    trials = []
    for lr, value in ((0.01, 0.9), (0.02, 0.8)):
        trial = optuna.trial.create_trial(params={"train.lr": lr}, distributions=distributions, value=value)
        trial.datetime_start = datetime.datetime(2026, 1, 1, 12, 0, 0)
        trial.datetime_complete = trial.datetime_start + datetime.timedelta(seconds=10)  # 5 s per fold
        trials.append(trial)
    for seconds_left in (45.0, 55.0):
        clock = ManualClock(0.0)
        evaluator = _TimedEvaluator(clock)
        candidates = _reevaluate(
            trials, space_dict, spec, evaluator, folds=[0, 1], deadline=seconds_left, clock=clock
        )
        assert evaluator.order[:4] == [(0.01, 0), (0.01, 1), (0.02, 0), (0.02, 1)]  # seed 1 goes round first
        assert [c.n for c in candidates] == [2, 2]  # one complete seed each
        assert len(evaluator.order) == (4 if seconds_left == 45.0 else 5)  # 55 s: one fold of seed 2, dropped


def test_the_first_trials_are_re_evaluated_beside_the_top_ones():
    """The configuration the search started from (a small table's linear model) is a candidate even when
    the search ranks it below ``top_k``: the choice between it and the search's best rests on fresh runs."""

    space_dict = {"train.lr": {"float": [1e-3, 1e-1], "log": True}}
    spec = parse_spec(
        {
            "name": "re",
            "data": {"source": "iris"},
            "model": {"type": "mlp", "hidden": [8]},
            "search": {"space": space_dict, "top_k": 1, "n_seeds": 1, "first_trials": [{"train.lr": 0.002}]},
        }
    )
    distributions = {"train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    trials = [
        optuna.trial.create_trial(params={"train.lr": lr}, distributions=distributions, value=value)
        for lr, value in ((0.002, 0.7), (0.03, 0.9), (0.05, 0.8))
    ]
    for number, trial in enumerate(trials):
        trial.number = number
    evaluator = _CountingEvaluator()
    candidates = _reevaluate(trials, space_dict, spec, evaluator)
    assert sorted(c.trial for c in candidates) == [0, 1]  # the best, and the first trial; not trial 2
    assert evaluator.runs == 2
    assert all(c.n == 1 for c in candidates)


def test_the_budget_counts_from_started_when_the_caller_began_earlier(tmp_path):
    """`tunelab tune --data` reads the data to choose its experiment before calling tune_experiment, and
    passes the command's start: the budget counts from there. On a clock standing still, a 10 s budget
    begun 9 s ago leaves the search nothing (one trial, cut), where the same call from now runs all three."""
    spec = parse_spec(
        {
            "name": "started",
            **IRIS,
            "search": {
                "space": LR,
                "n_trials": 3,
                "budget": "10s",
                "fused": "off",
                "scheduler": {"name": "none"},
            },
        }
    )
    late = tune_experiment(spec, out_dir=tmp_path / "late", clock=ManualClock(100.0), started=91.0)
    assert (late.trials.n_finished, late.stop_reason) == (1, "timeout")
    now = tune_experiment(spec, out_dir=tmp_path / "now", clock=ManualClock(100.0))
    assert now.trials.n_finished == 3
