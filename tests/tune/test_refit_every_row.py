"""``search.refit: all`` (the default): after the test, the delivered model is trained once more on every
row (train + validation + test) with the recipe that was tested, when the budget allows and the data set has
no test part of its own; the record says what was done and the test score stays the tested model's."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tunelab.clock import ManualClock
from tunelab.data import load_dataset
from tunelab.execute import Evaluator
from tunelab.search import Events
from tunelab.spec import parse_spec
from tunelab.train import Trainer
from tunelab.tune import tune_experiment
from tunelab.tune._ensemble import Delivered, Recipe, refit_on_every_row
from tunelab.tune._result import Candidate, EnsembleChoice
from tunelab.tune._select import refit_winner

EPOCH = 2.0  # the winner's measured seconds per epoch on the training part


def _spec(refit: object = "all"):
    return parse_spec(
        {
            "name": "every-row",
            "data": {"source": "digits"},
            "model": {"type": "mlp", "hidden": [16]},
            "train": {"epochs": 10, "batch_size": 64},
            "search": {"space": {"train.lr": {"float": [1e-3, 1e-1], "log": True}}, "refit": refit},
        }
    )


def _tested(spec, evaluator):
    winner = Candidate(0, {}, 0.9, best_epochs=[3, 3], epoch_seconds=EPOCH)
    refit, trainer = refit_winner(spec, winner, evaluator, Events())
    delivered = Delivered(
        EnsembleChoice(False, "off", refit.test_metrics),
        trainer,
        None,
        recipes=(Recipe({}, None, refit.epochs, EPOCH),),
    )
    return refit, delivered


@pytest.fixture
def fitted_rows(monkeypatch):
    """The number of rows each ``Trainer.fit`` trains on, in order."""
    rows: list[int] = []
    fit = Trainer.fit

    def recording(self, train, *args, **kwargs):
        rows.append(len(train[0]))
        return fit(self, train, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", recording)
    return rows


def test_the_delivered_model_trains_again_on_every_row(fitted_rows):
    spec = _spec()
    evaluator = Evaluator(spec, spec.data)
    bundle = evaluator.bundle(None)
    refit, delivered = _tested(spec, evaluator)
    notes: list[str] = []
    final, record = refit_on_every_row(spec, delivered, refit, evaluator, None, Events(log=notes.append))
    everything = len(bundle.X_train) + len(bundle.X_val) + len(bundle.X_test)
    assert everything == 1797  # every digit
    assert fitted_rows == [len(bundle.X_train) + len(bundle.X_val), everything]
    assert len(final.trainer.history.epochs) == refit.epochs == 3
    assert final.tested is delivered.trainer  # the test predictions come from the tested model
    assert final.trainer is not delivered.trainer
    assert record.on_every_row
    assert record.test_metrics == refit.test_metrics
    assert record.every_row_note is not None
    assert "all 1797 rows" in record.every_row_note
    assert notes[-1].startswith("refit on every row: the winner trained again on all 1797 rows")
    with torch.no_grad():  # a different model: it saw 360 more rows
        assert not torch.equal(final.trainer.outputs(bundle.X_test), delivered.trainer.outputs(bundle.X_test))


def test_no_fit_on_every_row_when_the_budget_has_no_room(fitted_rows):
    spec = _spec()
    evaluator = Evaluator(spec, spec.data)
    bundle = evaluator.bundle(None)
    refit, delivered = _tested(spec, evaluator)
    rows = len(bundle.X_train) + len(bundle.X_val) + len(bundle.X_test)
    needed = 3 * EPOCH * rows / len(bundle.X_train)
    clock = ManualClock(50.0)
    final, record = refit_on_every_row(
        spec, delivered, refit, evaluator, 50.0 + 0.9 * needed, Events(), clock=clock
    )
    assert final is delivered
    assert not record.on_every_row
    assert fitted_rows == [len(bundle.X_train) + len(bundle.X_val)]  # the refit only
    assert record.every_row_note == (
        f"not done: training the winner on all {rows} rows would take about {needed:.3g} s and the budget "
        f"left {0.9 * needed:.1f} s; delivered: the refit on train + validation, as tested"
    )
    final, record = refit_on_every_row(
        spec, delivered, refit, evaluator, 50.0 + 1.1 * needed, Events(), clock=clock
    )
    assert record.on_every_row
    assert fitted_rows[-1] == rows


def test_refit_true_and_no_refit_leave_the_tested_model(fitted_rows):
    spec = _spec(refit=True)
    evaluator = Evaluator(spec, spec.data)
    refit, delivered = _tested(spec, evaluator)
    assert refit_on_every_row(spec, delivered, refit, evaluator, None, Events()) == (delivered, refit)
    spec = _spec()
    refit = dataclasses.replace(refit, on_train_and_validation=False)
    final, record = refit_on_every_row(spec, delivered, refit, evaluator, None, Events())
    assert final is delivered
    assert not record.on_every_row
    assert record.every_row_note is not None
    assert "there is no refit to repeat" in record.every_row_note
    assert len(fitted_rows) == 1


def test_a_data_sets_own_test_part_stays_out_of_training(fitted_rows):
    spec = _spec()
    digits = load_dataset(spec.data)
    own_test = dataclasses.replace(
        digits,
        features=digits.features[200:],
        target=digits.target[200:],
        test_features=digits.features[:200],
        test_target=digits.target[:200],
    )
    assert own_test.has_test_part
    evaluator = Evaluator(spec, spec.data, dataset=own_test)
    refit, delivered = _tested(spec, evaluator)
    final, record = refit_on_every_row(spec, delivered, refit, evaluator, None, Events())
    assert final is delivered
    assert not record.on_every_row
    assert (
        record.every_row_note
        == "not done: the data set brings its own test part, which stays out of training"
    )


def test_a_tune_run_records_the_fit_on_every_row(tmp_path):
    spec = parse_spec(
        {
            "name": "iris-every-row",
            "data": {"source": "iris"},
            "model": {"type": "mlp", "hidden": [8]},
            "train": {"epochs": 3},
            "search": {
                "n_trials": 2,
                "top_k": 1,
                "n_seeds": 1,
                "ensemble": False,
                "space": {"train.lr": {"float": [1e-3, 1e-1], "log": True}},
            },
        }
    )
    result = tune_experiment(spec, out_dir=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["trained_on_test"] is True
    assert summary["trained_on_validation"] is True
    assert "all 150 rows" in summary["refit_every_row"]
    assert "trained on every row, test rows included" in summary["protocol"]["test"]
    assert summary["test_metrics"] == result.refit.test_metrics
    metadata = json.loads((tmp_path / "run" / "best" / "metadata.json").read_text())
    assert metadata["trained_on_test"] is True
