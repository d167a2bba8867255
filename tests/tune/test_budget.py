"""A time budget stops the search's running trials, even within an epoch, once the study holds a result."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from tunelab.search._study import _Budget
from tunelab.spec import parse_spec
from tunelab.train import Trainer
from tunelab.tune import tune_experiment
from tunelab.tune._search import make_plan, run_search
from tunelab.tune._trials import Evaluator, Events


@pytest.mark.parametrize("cv", [None, 2])
def test_a_spent_budget_stops_the_sequential_searchs_trials_within_an_epoch(tmp_path, monkeypatch, cv):
    """`tunelab tune` with `fused: off`: the trainer's callback asks the trial after every minibatch whether
    the budget is spent (here always, inside trials; the loop's own check keeps the real clock, so the study
    goes on to its n_trials). The first trial completes regardless, and is the one the protocol refits; the
    others end after their first minibatch."""
    monkeypatch.setattr(_Budget, "past_deadline", lambda self: True)
    steps: dict[int, int] = {}  # optimizer steps per Trainer (one per trial and fold, then the refit's)
    optimizer_step = Trainer._optimizer_step

    def counted(self, loss):
        steps[id(self)] = steps.get(id(self), 0) + 1
        return optimizer_step(self, loss)

    monkeypatch.setattr(Trainer, "_optimizer_step", counted)
    spec = parse_spec(
        {
            "name": "budget",
            "data": {"source": "iris"},
            "model": {"type": "mlp", "hidden": [8]},
            "train": {"epochs": 4, "batch_size": 32},
            "search": {
                "space": {"train.lr": {"float": [1e-3, 1e-1], "log": True}},
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
    result = tune_experiment(spec, out_dir=tmp_path / "run")
    study = optuna.load_study(study_name="budget", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.COMPLETE
    assert len(trials[0].intermediate_values) == 4 * (cv or 1)
    for trial in trials[1:]:
        assert trial.state == TrialState.PRUNED
        assert trial.intermediate_values == {}
        assert trial.user_attrs["stopped_by"] == "time budget"
    assert result.summary["best_trial"] == 0
    per_trainer = list(steps.values())
    n_first = cv or 1
    assert all(n >= 4 * 2 for n in per_trainer[:n_first])  # four epochs of at least two minibatches
    assert per_trainer[n_first : n_first + 2] == [1, 1]


class _CountingEvaluator:
    """Scores every fresh run 0.5 at epoch 1, counting the runs (no training)."""

    def __init__(self) -> None:
        self.runs = 0

    def score(self, spec, fold, metric):
        self.runs += 1
        return 0.5, 1


@pytest.mark.parametrize(("seconds_left", "expected_runs"), [(1000.0, 2), (150.0, 0)])
def test_a_fresh_run_starts_only_if_it_and_the_refit_fit_in_the_budget(seconds_left, expected_runs):
    """The winner's re-evaluation with fresh seeds: a trial that took 100 s asks for about 200 s (its run,
    then the refit), so with 150 s left none starts and the search's own score decides."""
    import datetime
    import time
    from types import SimpleNamespace

    from tunelab.search import SearchSpace
    from tunelab.search._tune_spec import SearchSpec
    from tunelab.tune._select import reevaluate

    space_dict = {"train.lr": {"float": [1e-3, 1e-1], "log": True}}
    spec = parse_spec({"name": "re", "data": {"source": "iris"}, "model": {"type": "mlp", "hidden": [8]}})
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
    candidates = reevaluate(
        SimpleNamespace(trials=[trial]),  # what reevaluate reads of a study
        SearchSpace.from_dict(space_dict),
        spec,
        evaluator,
        [None],
        "val_accuracy",
        "maximize",
        SearchSpec(space=space_dict, top_k=1, n_seeds=2),
        time.monotonic() + seconds_left,
        notes.append,
    )
    assert evaluator.runs == expected_runs
    assert candidates[0]["n"] == expected_runs
    if not expected_runs:
        assert notes == [f"candidate trial {trial.number}: not re-evaluated (budget spent)"]


@pytest.mark.parametrize("fused", ["off", "on"])
def test_the_searchs_share_of_a_budget_counts_from_the_start_of_tune_experiment(tmp_path, fused):
    """Loading data, probing fusion and starting workers come out of the search's 80%, not after it: here
    9 s of a 10 s budget went before the search began, so its 8 s share is spent and it trains its first
    trial (or population) only, which a search always completes."""
    spec = parse_spec(
        {
            "name": "late",
            "data": {"source": "iris"},
            "model": {"type": "mlp", "hidden": [8]},
            "train": {"epochs": 2, "batch_size": 32},
            "search": {
                "space": {"train.lr": {"float": [1e-3, 1e-1], "log": True}},
                "n_trials": 6,
                "budget": "10s",
                "fused": fused,
                "population_size": 2,
                "scheduler": {"name": "none"},
            },
        }
    )
    assert spec.search is not None
    plan = make_plan(
        spec,
        spec.search,
        tmp_path,
        f"sqlite:///{tmp_path / 'study.db'}",
        1,
        task="classification",
        started=time.monotonic() - 9.0,
    )
    plan.metric, plan.direction = "val_accuracy", "maximize"
    summary = run_search(plan, Evaluator(spec, plan.data_spec), Events())
    assert summary.stop_reason == "timeout"
    assert summary.n_complete == (1 if fused == "off" else 2)
    assert summary.n_pruned == summary.n_failed == 0
