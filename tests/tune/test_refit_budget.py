"""The refit under a time budget (#14): planned from the winner's measured epoch time; when its epochs do not
all fit, the winner as already trained (a re-evaluation run, the search's model), and only without one a
shorter refit; the summary says what the budget did."""

from __future__ import annotations

import pytest

from tunelab.clock import ManualClock
from tunelab.execute import Evaluator
from tunelab.search import Events
from tunelab.spec import parse_spec
from tunelab.tune._result import Candidate, SeedRun
from tunelab.tune._select import refit_winner

EPOCH = 2.0  # the winner's measured seconds per epoch on a fold's training part


def _setup(*, with_run: bool, **train: object):
    spec = parse_spec(
        {
            "name": "refit",
            "data": {"source": "digits"},
            "model": {"type": "mlp", "hidden": [16]},
            "train": {"epochs": 10, "batch_size": 64, **train},
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


def test_a_refit_that_does_not_fit_trains_the_epochs_that_do_when_no_model_is_at_hand():
    spec, evaluator, winner, per_epoch = _setup(with_run=False)
    refit, trainer, notes = _refit(spec, evaluator, winner, 2.5 * per_epoch)
    assert refit.epochs == 2
    assert refit.on_train_and_validation
    assert len(trainer.history.epochs) == 2
    assert refit.budget_note is not None
    assert refit.budget_note.endswith("refit for 2 of its 4 epochs (no model of it at hand)")
    assert f"takes about {per_epoch:.2g} s" in refit.budget_note
    assert "(the budget left" in notes[-1]


@pytest.mark.parametrize("epochs_left", [2.5, 0.5])
def test_a_refit_that_does_not_fit_delivers_the_re_evaluation_model(epochs_left):
    """A shorter refit is not the model that was validated: the winner as already trained is delivered."""
    spec, evaluator, winner, per_epoch = _setup(with_run=True)
    refit, trainer, notes = _refit(spec, evaluator, winner, epochs_left * per_epoch)
    assert trainer is winner.runs[0].trainer
    assert (refit.epochs, refit.on_train_and_validation) == (0, False)
    assert refit.budget_note is not None
    assert refit.budget_note.endswith(
        f"no refit ({int(epochs_left)} of its 4 epochs would fit); delivered: the winner as trained in its "
        "first re-evaluation run"
    )
    assert set(refit.test_metrics) == {"loss", "accuracy", "f1"}
    assert notes[-1].startswith("the budget left")


def test_without_a_re_evaluation_the_search_s_model_of_the_winner_is_delivered():
    spec, evaluator, winner, per_epoch = _setup(with_run=False)
    trained = evaluator.trainer(spec, evaluator.bundle(None))
    evaluator.keep_search_model(winner.trial, trained, 0.9, keep=2, minimize=False)
    refit, trainer, _ = _refit(spec, evaluator, winner, 2.5 * per_epoch)
    assert trainer is trained
    assert refit.budget_note is not None
    assert refit.budget_note.endswith("delivered: the winner as trained in the search")


def test_the_evaluator_keeps_the_best_models_by_value():
    spec, evaluator, _, _ = _setup(with_run=False)
    bundle = evaluator.bundle(None)
    models = {n: evaluator.trainer(spec, bundle) for n in range(4)}
    for number, value in zip(models, [0.5, 0.9, 0.7, float("nan")], strict=True):
        evaluator.keep_search_model(number, models[number], value, keep=2, minimize=False)
    assert evaluator.search_models == {1: models[1], 2: models[2]}
    for number, value in zip(models, [0.5, 0.9, 0.7, 0.1], strict=True):
        evaluator.keep_search_model(number, models[number], value, keep=2, minimize=True)
    assert set(evaluator.search_models) == {3, 0}


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


def test_a_refit_replays_the_validated_runs_schedule_and_stops_at_its_epoch():
    """The validated model is epoch 4 of a 10-epoch cosine run: the refit's rate follows that run's
    schedule (horizon 10 epochs, of its own steps) and it stops after epoch 4, rather than squeezing the
    whole schedule into 4 epochs."""
    import math

    spec, evaluator, winner, _ = _setup(with_run=False, schedule={"name": "cosine", "min_lr": 0.0})
    bundle = evaluator.bundle(None)
    refit, trainer, _ = _refit(spec, evaluator, winner, None)
    assert refit.epochs == 4
    assert len(trainer.history.epochs) == 4
    rows = len(bundle.X_train) + len(bundle.X_val)
    steps = math.ceil(rows / spec.train.batch_size)  # per epoch, on train + validation
    for epoch, logs in enumerate(trainer.history.epochs, start=1):
        last_step = epoch * steps - 1  # the rate of the epoch's last step, in a run of 10 epochs
        expected = spec.train.lr * (1 + math.cos(math.pi * last_step / (10 * steps))) / 2
        assert logs["lr"] == pytest.approx(expected, rel=1e-6)
    assert trainer.history.epochs[-1]["lr"] > 0.3 * spec.train.lr  # not annealed to zero at epoch 4
