"""Forecasting in the tune protocol: the zero-config space of lag models, the seasonal period, the first
trials, and the seasonal-naive and lagged-ridge references in summary.json and the report."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest

from tunelab.data import DataSpec, infer_season, load_dataset, prepare_data, season_length
from tunelab.errors import SpecError
from tunelab.execute import trial_spec
from tunelab.execute._fusion import choose_fusion
from tunelab.models import MLPSpec, RNNSpec, WindowedModel
from tunelab.search import SearchSpace, SearchSpec, run_study
from tunelab.spec import parse_spec
from tunelab.tune import default_experiment, tune_experiment
from tunelab.tune._references import forecast_references

N_ROWS = 150


def _series(path, *, freq: str = "MS", periodic: bool = False):
    steps = np.arange(N_ROWS, dtype=float)
    season = 10 * np.sin(2 * np.pi * steps / 12)
    noise = 0.0 if periodic else np.random.default_rng(0).normal(0, 1, N_ROWS)
    frame = pd.DataFrame(
        {
            "date": pd.date_range("2000-01-01", periods=N_ROWS, freq=freq).strftime("%Y-%m-%d %H:%M:%S"),
            "y": season + noise + (0.0 if periodic else 0.2 * steps),
        }
    )
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("freq", "season"), [("MS", 12), ("D", 7), ("QS", 4), ("YS", 1), ("h", 24)])
def test_season_is_inferred_from_the_date_column(tmp_path, freq, season):
    path = _series(tmp_path / "s.csv", freq=freq)
    spec = DataSpec(source=str(path), target="y", task="forecasting")
    assert season_length(spec, load_dataset(spec))[0] == season
    given = spec.model_copy(update={"season": 5})
    assert season_length(given, load_dataset(given)) == (5, "data.season")
    assert infer_season(None) == (1, "no time column")


def test_forecast_targets_share_the_series_columns_scaling(tmp_path):
    spec = DataSpec(source=str(_series(tmp_path / "s.csv")), target="y", task="forecasting", window=6)
    bundle = prepare_data(spec, seed=0)
    table = bundle.preprocessor.features.table
    mean, std = bundle.target_scale
    assert (float(mean[0]), float(std[0])) == pytest.approx((table.mean[0], table.scale[0]), rel=1e-6)
    # So the next value, scaled, is the next window's last input.
    np.testing.assert_allclose(bundle.y_train[:-1, 0].numpy(), bundle.X_train[1:, -1, 0].numpy(), rtol=1e-5)


def test_zero_config_forecaster_searches_lag_models_and_the_window(tmp_path):
    experiment = default_experiment(
        {"source": "s.csv", "target": "y", "task": "forecasting"},
        kind="sequence",
        task="forecasting",
        season=12,
        n_rows=500,
    )
    spec = parse_spec(experiment)
    space = spec.search.search_space()
    assert space["model.type"].choices == ("linear", "mlp", "lstm", "gru")
    assert space["model.lags"].choices == (3, 6, 12, 24)
    assert spec.data.window == 24
    first = spec.search.first_trials
    assert [trial["model.type"] for trial in first] == ["linear", "mlp"]
    as_specs = [trial_spec(spec, space.overrides_from_params(params)) for params in first]
    assert all(s.model.lags == 24 for s in as_specs)
    # The linear model on the levels, fitted by L-BFGS (ridge regression); the MLP predicts changes.
    assert (as_specs[0].model.normalize, as_specs[0].train.optimizer) == ("none", "lbfgs")
    assert (as_specs[1].model.normalize, as_specs[1].train.optimizer) == ("last", "adamw")
    assert as_specs[0].model.hidden == []
    assert as_specs[1].model.hidden == [64]
    lstm = trial_spec(spec, {"model": {"type": "lstm", "lags": 6, "hidden_size": 16}})
    assert isinstance(lstm.model, RNNSpec)
    assert (lstm.model.cell, lstm.model.lags) == ("lstm", 6)
    # Weekly data: windows as long as the season where the series is long enough for them.
    weekly = default_experiment(
        {"source": "s.csv"}, kind="sequence", task="forecasting", season=52, n_rows=600
    )
    assert weekly["data"]["window"] == 52
    assert 52 in weekly["search"]["space"]["model.lags"]["choice"]
    one = parse_spec(
        default_experiment({"source": "s.csv"}, kind="sequence", task="forecasting", model="lstm")
    )
    assert "model.hidden" not in one.search.search_space()
    assert one.model.cell == "lstm"
    with pytest.raises(SpecError, match="--model linear is for forecasting"):
        default_experiment({"source": "t.csv"}, kind="table", model="linear")


def test_first_trials_are_checked_and_tried_first():
    space = SearchSpace.from_dict({"x": {"float": [0.0, 1.0]}, "k": {"choice": [1, 2]}})
    with pytest.raises(SpecError, match="'y' is not a parameter this space searches"):
        space.check_params({"y": 1})
    with pytest.raises(SpecError, match="3 is not a value 'k' can take"):
        space.check_params({"k": 3})
    with pytest.raises(ValueError, match=r"search.first_trials\[0\]"):
        SearchSpec(space={"x": {"float": [0.0, 1.0]}}, first_trials=[{"x": 2.0}])
    seen = []

    def objective(handle):
        seen.append(handle.params)
        return handle.params["x"]

    summary = run_study(objective, space, n_trials=3, first_trials=[{"x": 0.25, "k": 2}], seed=0)
    assert seen[0] == {"x": 0.25, "k": 2}
    assert summary.counts.n_complete == 3


def test_fusion_falls_back_for_lag_models_and_mixed_families(tmp_path):
    data = {"source": str(_series(tmp_path / "s.csv")), "target": "y", "task": "forecasting"}
    spec = parse_spec(default_experiment(data, kind="sequence", task="forecasting", season=12))
    bundle = prepare_data(spec.data, seed=0)
    decision = choose_fusion(spec.search, bundle, make_spec=lambda o: trial_spec(spec, o))
    assert not decision.fused
    assert "chooses among model types" in decision.reason
    mlp_only = parse_spec(default_experiment(data, kind="sequence", task="forecasting", model="mlp"))
    decision = choose_fusion(mlp_only.search, bundle, make_spec=lambda o: trial_spec(mlp_only, o))
    assert not decision.fused
    assert "no population layers" in decision.reason
    forced = mlp_only.search.model_copy(update={"fused": "on"})
    with pytest.raises(SpecError, match=r"model\.lags / model\.normalize"):
        choose_fusion(forced, bundle, make_spec=lambda o: trial_spec(mlp_only, o))


def test_references_are_exact_where_the_series_allows(tmp_path):
    """A noiseless series of period 12: seasonal naive is exact, and so is ridge on 24 lags."""
    spec = DataSpec(source=str(_series(tmp_path / "p.csv", periodic=True)), target="y", task="forecasting")
    dataset = load_dataset(spec)
    refs = forecast_references(
        spec,
        dataset,
        prepare_data(spec, seed=0, dataset=dataset),
        refit=True,
        winner_validation={"rmse": 1.0},
        winner_test={"rmse": 2.0, "mae": 1.5},
    )
    assert (refs["season"], refs["lags"]) == (12, 24)
    for part in ("validation", "test"):
        assert refs[part]["seasonal_naive"]["rmse"] == pytest.approx(0.0, abs=1e-9)
        assert refs[part]["lagged_ridge"]["rmse"] < 0.05  # of a signal of amplitude 10
    assert refs["test"]["winner"] == {"rmse": 2.0, "mae": 1.5}
    long = spec.model_copy(update={"season": 500})
    bundle = prepare_data(long, seed=0)
    with pytest.raises(SpecError, match=r"data\.season is 500"):
        forecast_references(long, dataset, bundle, refit=True, winner_validation={}, winner_test={})


def test_tuned_forecaster_is_reported_beside_the_references(tmp_path):
    data = {"source": str(_series(tmp_path / "s.csv")), "target": "y", "task": "forecasting"}
    raw = default_experiment(data, kind="sequence", task="forecasting", season=12, n_rows=N_ROWS)
    raw["train"]["epochs"] = 3
    # The first trials are re-evaluated beside the top one; no ensemble of them, so one model is delivered.
    raw["search"] |= {"n_trials": 3, "top_k": 1, "n_seeds": 1, "ensemble": False}
    result = tune_experiment(parse_spec(raw), out_dir=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    refs = summary["references"]
    assert refs["test"]["winner"]["rmse"] == pytest.approx(summary["test_metrics"]["rmse"])
    assert refs["validation"]["winner"]["rmse"] == pytest.approx(result.best_value)
    for part in ("validation", "test"):
        assert set(refs[part]) == {"winner", "lagged_ridge", "seasonal_naive"}
        assert refs[part]["seasonal_naive"]["rmse"] > 0
        assert refs[part]["lagged_ridge"]["alpha"] > 0
    study = optuna.load_study(study_name=result.name, storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert study.trials[0].params["model.type"] == "linear"  # the first trial
    assert isinstance(result.trainer.model, WindowedModel)
    report = (tmp_path / "run" / "report.html").read_text()
    assert "Against simple forecasts" in report
    assert "lagged ridge" in report
    assert isinstance(parse_spec(raw).model, MLPSpec)
