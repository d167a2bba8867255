"""The report's figures hold the numbers they claim to: counts, residuals, intervals, pruned trials."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.metrics import classification_report, confusion_matrix

from tunelab.report import _model_figures as model_figs
from tunelab.report import _search_figures as search_figs


@pytest.fixture
def study_with_pruned_trials() -> optuna.Study:
    """Six trials reporting 5 epochs each: 0, 2, 4 complete; 1 and 3 pruned after 2 epochs; 5 failed."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for number in range(6):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        n_epochs = 2 if number in (1, 3) else 5
        for epoch in range(1, n_epochs + 1):
            trial.report(0.1 * number + 0.01 * epoch, epoch)
        if number in (1, 3):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif number == 5:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, 0.1 * number + 0.05)
    return study


def test_learning_curves_mark_pruned_trials_where_they_stopped(
    study_with_pruned_trials: optuna.Study,
) -> None:
    fig = search_figs.trial_curves_figure(study_with_pruned_trials, metric="val_accuracy")
    traces = {trace.name: trace for trace in fig.data}
    assert set(traces) == {"completed", "pruned", "failed", "stopped here", "best (trial 4)"}
    assert traces["pruned"].line.dash == "dot"
    stopped = traces["stopped here"]
    assert list(stopped.x) == [2, 2]
    assert list(stopped.y) == pytest.approx([0.12, 0.32])
    assert traces["best (trial 4)"].y[:-1] == pytest.approx([0.41, 0.42, 0.43, 0.44, 0.45])
    # completed trials other than the best: 0 and 2, joined into one trace with a break between them
    completed = traces["completed"]
    assert list(completed.x) == [1, 2, 3, 4, 5, None, 1, 2, 3, 4, 5, None]
    assert {t for t in completed.text if t} == {"trial 0", "trial 2"}


def test_fold_boundaries_are_drawn_between_folds(study_with_pruned_trials: optuna.Study) -> None:
    fig = search_figs.trial_curves_figure(study_with_pruned_trials, metric="m", epochs_per_fold=2, n_folds=3)
    assert [shape.x0 for shape in fig.layout.shapes] == [2.5, 4.5]


def test_curves_need_reported_epochs() -> None:
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert search_figs.trial_curves_figure(study, metric="m") is None


def test_optuna_plots_are_skipped_without_a_completed_trial() -> None:
    study = optuna.create_study()
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert search_figs.optuna_figure(optuna.visualization.plot_slice, study, metric="m") is None


def test_confusion_matrix_counts_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, size=200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 4, size=200))
    frame = pd.DataFrame({"y_true": y_true, "y_pred": y_pred, **{f"proba_{k}": 0.25 for k in range(4)}})
    heatmap = model_figs.confusion_figure(frame, class_names=["a", "b", "c", "d"]).data[0]
    expected = confusion_matrix(y_true, y_pred, labels=range(4))
    assert np.array_equal(np.asarray(heatmap.text), expected)
    assert np.allclose(np.asarray(heatmap.z), expected / expected.sum(axis=1, keepdims=True))
    assert list(heatmap.x) == ["a", "b", "c", "d"]


def test_per_class_scores_match_scikit_learn_and_name_every_class() -> None:
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, size=150)
    y_pred = np.where(rng.random(150) < 0.6, y_true, rng.integers(0, 4, size=150))  # class 3: never true
    frame = pd.DataFrame({"y_true": y_true, "y_pred": y_pred, **{f"proba_{k}": 0.25 for k in range(4)}})
    scores = model_figs.per_class_scores(frame, class_names=["a", "b", "c", "d"])
    assert list(scores.index) == ["a", "b", "c", "d", "macro average"]
    report = classification_report(y_true, y_pred, labels=range(4), output_dict=True, zero_division=0.0)
    for k, name in enumerate("abcd"):
        row = report[str(k)]
        assert scores.loc[name, "precision"] == pytest.approx(row["precision"])
        assert scores.loc[name, "recall"] == pytest.approx(row["recall"])
        assert scores.loc[name, "f1"] == pytest.approx(row["f1-score"])
        assert scores.loc[name, "support"] == row["support"]
    assert scores.loc["macro average", "f1"] == pytest.approx(report["macro avg"]["f1-score"])
    assert scores.loc["macro average", "support"] == 150


def test_confusion_matrix_keeps_classes_never_seen_in_the_test_part() -> None:
    frame = pd.DataFrame(
        {"y_true": [0, 0, 1], "y_pred": [0, 1, 1], "proba_0": 0.0, "proba_1": 0.0, "proba_2": 1.0}
    )
    heatmap = model_figs.confusion_figure(frame).data[0]
    assert np.asarray(heatmap.text).shape == (3, 3)
    assert np.asarray(heatmap.z)[2].tolist() == [0.0, 0.0, 0.0]  # an empty row is zero, not NaN


def test_residuals_are_actual_minus_predicted_for_every_target() -> None:
    frame = pd.DataFrame(
        {
            "y_true_0": [1.0, 2.0, 3.0],
            "y_pred_0": [1.5, 2.0, 2.0],
            "y_true_1": [0.0, 1.0, 0.0],
            "y_pred_1": 0.0,
        }
    )
    scatter = [t for t in model_figs.residuals_figure(frame, task="regression").data if t.type == "scatter"]
    assert [t.name for t in scatter] == ["target 0", "target 1"]
    assert list(scatter[0].y) == [-0.5, 0.0, 1.0]
    assert list(scatter[1].y) == [0.0, 1.0, 0.0]
    names = [t.name for t in model_figs.parity_figure(frame, task="forecasting").data]
    assert names == ["horizon 1", "horizon 2", "perfect"]


def test_parity_plot_uses_one_range_for_both_axes() -> None:
    frame = pd.DataFrame({"y_true_0": [0.0, 10.0], "y_pred_0": [5.0, 20.0]})
    layout = model_figs.parity_figure(frame, task="regression").layout
    assert tuple(layout.xaxis.range) == tuple(layout.yaxis.range) == pytest.approx((-0.8, 20.8))


def test_candidates_show_mean_and_the_95_percent_interval() -> None:
    candidates = [
        {"trial": 3, "search_value": 0.9, "scores": [0.8, 0.84], "mean": 0.82, "ci95": [0.7, 0.94], "n": 2},
        {
            "trial": 1,
            "search_value": 0.88,
            "scores": [0.81],
            "mean": 0.81,
            "ci95": [math.nan, math.nan],
            "n": 1,
        },
    ]
    fig = model_figs.candidates_figure(candidates, metric="val_accuracy")
    runs, means, search = fig.data
    assert list(runs.y) == [0.8, 0.84, 0.81]
    assert list(means.y) == [0.82, 0.81]
    assert list(means.error_y.arrayminus) == pytest.approx([0.12, 0.0])  # no interval from one run
    assert list(means.error_y.array) == pytest.approx([0.12, 0.0])
    assert list(search.y) == [0.9, 0.88]
    assert list(fig.layout.xaxis.ticktext) == ["trial 3", "trial 1"]


def test_training_curves_leave_out_the_validation_panel_when_there_is_none() -> None:
    refit = [{"epoch": e, "loss": 1.0 / e, "lr": 0.01} for e in range(1, 4)]
    fig = model_figs.training_figure(refit)
    assert [a.text for a in fig.layout.annotations] == ["loss", "learning rate"]
    assert fig.layout.yaxis2.type != "log"  # a constant rate: a log axis would only add clutter

    trained = [
        {"epoch": e, "loss": 1.0 / e, "val_loss": 1.2 / e, "val_accuracy": 0.5 + 0.1 * e, "lr": 10.0**-e}
        for e in range(1, 4)
    ]
    fig = model_figs.training_figure(trained, best_epoch=2)
    assert [a.text for a in fig.layout.annotations] == ["loss", "validation metrics", "learning rate"]
    assert fig.layout.yaxis3.type == "log"
    assert {t.name for t in fig.data} == {"train loss", "validation loss", "val_accuracy", "learning rate"}
    assert [shape.x0 for shape in fig.layout.shapes] == [2, 2]


def test_importance_bars_are_sorted_with_the_most_important_on_top() -> None:
    bars = search_figs.importance_figure(
        {"train.lr": 0.7, "model.dropout": 0.1, "train.batch_size": 0.2}
    ).data[0]
    assert list(bars.y) == ["model.dropout", "train.batch_size", "train.lr"]  # plotly draws bottom-up
    assert search_figs.importance_figure({}) is None


def test_forecast_plot_follows_the_test_windows_in_time_order() -> None:
    frame = pd.DataFrame(
        {"y_true_0": [1.0, 2.0, 4.0], "y_pred_0": [1.1, 1.9, 3.0], "y_true_1": 0.0, "y_pred_1": 0.0}
    )
    actual, forecast = model_figs.forecast_figure(frame).data
    assert list(actual.x) == list(forecast.x) == [0, 1, 2]
    assert list(actual.y) == [1.0, 2.0, 4.0]
    assert list(forecast.y) == [1.1, 1.9, 3.0]
    assert model_figs.forecast_figure(pd.DataFrame({"y_true": [0], "y_pred": [0]})) is None
