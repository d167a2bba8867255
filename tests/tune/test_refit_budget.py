"""The refit under a time budget (#14): planned from the winner's measured epoch time, as many epochs as end
before the deadline; with none, the winner's re-evaluation model; the summary says what the budget did."""

from __future__ import annotations

import pytest

from tunelab.clock import ManualClock
from tunelab.execute import Evaluator
from tunelab.search import Events
from tunelab.spec import parse_spec
from tunelab.tune._result import Candidate, SeedRun
from tunelab.tune._select import refit_winner

EPOCH = 2.0  # the winner's measured seconds per epoch on a fold's training part


def _setup(*, with_run: bool):
    spec = parse_spec(
        {
            "name": "refit",
            "data": {"source": "digits"},
            "model": {"type": "mlp", "hidden": [16]},
            "train": {"epochs": 10, "batch_size": 64},
            "search": {"space": {"train.lr": {"float": [1e-3, 1e-1], "log": True}}},
        }
    )
    evaluator = Evaluator(spec, spec.data)
    bundle = evaluator.bundle(None)
    runs = ()
    if with_run:
        runs = (SeedRun(1, (bundle.y_val,), 1.0, evaluator.trainer(spec, bundle)),)
    winner = Candidate(0, {}, 0.9, best_epochs=[4, 4], runs=runs, epoch_seconds=EPOCH)
    # An epoch of the refit trains on train + validation: that many more rows.
    scale = (len(bundle.X_train) + len(bundle.X_val)) / len(bundle.X_train)
    return spec, evaluator, winner, EPOCH * scale


def _refit(spec, evaluator, winner, seconds_left):
    notes: list[str] = []
    clock = ManualClock(100.0)
    deadline = None if seconds_left is None else 100.0 + seconds_left
    refit, trainer = refit_winner(
        spec, winner, evaluator, Events(log=notes.append), deadline=deadline, clock=clock
    )
    return refit, trainer, notes


def test_a_refit_that_fits_trains_its_epochs_and_says_nothing_of_the_budget():
    spec, evaluator, winner, per_epoch = _setup(with_run=True)
    for seconds_left in (None, 4.5 * per_epoch):
        refit, trainer, notes = _refit(spec, evaluator, winner, seconds_left)
        assert refit.epochs == 4
        assert refit.budget_note is None
        assert len(trainer.history.epochs) == 4
        assert notes[-1].startswith("refit on train + validation for 4 epochs; test: ")


def test_a_refit_that_does_not_fit_trains_the_epochs_that_do():
    spec, evaluator, winner, per_epoch = _setup(with_run=True)
    refit, trainer, notes = _refit(spec, evaluator, winner, 2.5 * per_epoch)
    assert refit.epochs == 2
    assert refit.on_train_and_validation
    assert len(trainer.history.epochs) == 2
    assert refit.budget_note is not None
    assert refit.budget_note.endswith("refit for 2 of its 4 epochs")
    assert f"takes about {per_epoch:.2g} s" in refit.budget_note
    assert "(the budget left" in notes[-1]


def test_without_time_for_an_epoch_the_re_evaluation_model_is_delivered():
    spec, evaluator, winner, per_epoch = _setup(with_run=True)
    refit, trainer, notes = _refit(spec, evaluator, winner, 0.5 * per_epoch)
    assert trainer is winner.runs[0].trainer
    assert (refit.epochs, refit.on_train_and_validation) == (0, False)
    assert refit.budget_note is not None
    assert "no refit; delivered: the winner as trained in its first re-evaluation run" in refit.budget_note
    assert set(refit.test_metrics) == {"loss", "accuracy", "f1"}
    assert notes[-1].startswith("the budget left")


@pytest.mark.parametrize("seconds_left", [0.5 * EPOCH, -5.0])
def test_without_time_or_a_model_at_hand_one_epoch_is_trained_and_the_overrun_said(seconds_left):
    spec, evaluator, winner, _ = _setup(with_run=False)
    refit, trainer, _ = _refit(spec, evaluator, winner, seconds_left)
    assert refit.epochs == 1
    assert len(trainer.history.epochs) == 1
    assert refit.budget_note is not None
    assert refit.budget_note.endswith("no trained model at hand, so a refit of one epoch, past the budget")


def test_a_trial_cut_within_its_first_epoch_counts_all_its_time_as_less_than_an_epoch():
    """Its epoch time is unknown but at least the time it trained: a refit is planned on that, not assumed
    to fit (a Fashion-MNIST CNN cut so then refit for 90 s past a 90 s budget)."""
    import datetime

    import optuna

    from tunelab.tune._select import _trial_epoch_seconds

    def trial(reports: dict[int, float]):
        made = optuna.trial.create_trial(value=0.5, intermediate_values=reports)
        made.datetime_start = datetime.datetime(2026, 1, 1, 12, 0, 0)
        made.datetime_complete = made.datetime_start + datetime.timedelta(seconds=60)
        return made

    assert _trial_epoch_seconds(trial({})) == 60.0
    assert _trial_epoch_seconds(trial({1: 0.4, 2: 0.5, 3: 0.6})) == 20.0
