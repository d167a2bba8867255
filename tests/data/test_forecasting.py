"""Forecasting: sliding windows over a CSV series, chronological splits, scaling fitted on the past only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tunelab.data import DataSpec, Preprocessor, load_dataset, n_splits, prepare_data
from tunelab.errors import DataError

N_STEPS = 200


@pytest.fixture
def series_csv(tmp_path):
    """A trending daily series (so train and later parts differ in level), a weather column, a text column,
    and rows written out of order with an ISO date column to sort them by."""
    steps = np.arange(N_STEPS, dtype=float)
    frame = pd.DataFrame(
        {
            "date": pd.date_range("2023-01-01", periods=N_STEPS, freq="D").strftime("%Y-%m-%d"),
            "sales": 100 + steps + 10 * np.sin(steps / 5),
            "temperature": 20 + 5 * np.cos(steps / 7),
            "weekday": pd.date_range("2023-01-01", periods=N_STEPS, freq="D").day_name(),
        }
    )
    path = tmp_path / "sales.csv"
    frame.sample(frac=1.0, random_state=0).to_csv(path, index=False)
    return path, frame


def _spec(path, **options) -> DataSpec:
    return DataSpec(source=str(path), target="sales", task="forecasting", time_column="date", **options)


def test_windows_hold_past_rows_and_targets_hold_the_next_values(series_csv):
    path, frame = series_csv
    bundle = prepare_data(_spec(path, window=6, horizon=3), seed=0)
    assert bundle.kind == "sequence"
    assert bundle.input_shape == (6, 2)
    assert bundle.feature_names == ["sales", "temperature"]  # text and date columns are not window features
    assert any("'weekday' is text" in notice for notice in bundle.notices)
    assert bundle.y_train.shape == (len(bundle.X_train), 3)
    assert bundle.y_train.dtype == torch.float32
    features = bundle.preprocessor.features.table
    sales = frame["sales"].to_numpy()
    for part, X, y in (("train", bundle.X_train, bundle.y_train), ("test", bundle.X_test, bundle.y_test)):
        positions = getattr(bundle.indices, part)
        first = int(positions[0])
        past = X[0, :, 0].double().numpy() * features.scale[0] + features.mean[0]
        np.testing.assert_allclose(past, sales[first : first + 6], rtol=1e-5)
        future = bundle.preprocessor.inverse_target(y[:1])[0]
        np.testing.assert_allclose(future, sales[first + 6 : first + 9], rtol=1e-5)


def test_splits_are_chronological_with_a_gap_of_horizon_minus_one(series_csv):
    path, _ = series_csv
    horizon = 4
    for fold in [None, *range(n_splits(_spec(path, split={"method": "timeseries", "n_folds": 3})))]:
        spec = _spec(path, window=10, horizon=horizon, split={"method": "timeseries", "n_folds": 3})
        indices = prepare_data(spec, seed=0, fold=fold).indices
        # Window i's targets are rows i+w .. i+w+h-1: a gap of h-1 positions keeps target rows disjoint.
        assert indices.train.max() + horizon - 1 < indices.val.min()
        assert indices.val.max() + horizon - 1 < indices.test.min()
        assert indices.test.max() == N_STEPS - 10 - horizon


def test_scaler_sees_only_rows_covered_by_training_windows(series_csv):
    path, frame = series_csv
    bundle = prepare_data(_spec(path, window=8, horizon=2), seed=0)
    last_row = int(bundle.indices.train.max()) + 8 + 2
    features = bundle.preprocessor.features.table
    assert features.mean[0] == pytest.approx(frame["sales"].iloc[:last_row].mean(), rel=1e-12)
    assert features.mean[0] < frame["sales"].mean() - 10, "a trending series: the past has a lower mean"
    mean, _ = bundle.target_scale
    assert mean.shape == (2,)


def test_series_transform_gives_every_window_and_round_trips(series_csv):
    path, frame = series_csv
    bundle = prepare_data(_spec(path, window=5), seed=0)
    recent = frame.iloc[-12:]
    windows = bundle.preprocessor.transform(recent)
    assert windows.shape == (8, 5, 2)
    rebuilt = Preprocessor.from_state(bundle.preprocessor.to_state())
    assert torch.equal(rebuilt.transform(recent), windows)
    with pytest.raises(DataError, match="a window needs 5"):
        bundle.preprocessor.transform(recent.iloc[:3])


def test_series_shorter_than_window_plus_horizon(series_csv):
    path, _ = series_csv
    with pytest.raises(DataError, match=r"window \(150\) \+ horizon \(60\) need 210 rows.*Fix: lower"):
        prepare_data(_spec(path, window=150, horizon=60), seed=0)


def test_max_rows_keeps_the_start_of_a_series(series_csv):
    path, frame = series_csv
    dataset = load_dataset(_spec(path, max_rows=50))
    assert dataset.features["sales"].tolist() == frame["sales"].iloc[:50].tolist()


def test_univariate_series_needs_no_other_column(tmp_path):
    path = tmp_path / "one.csv"
    pd.DataFrame({"t": np.arange(60), "level": np.sin(np.arange(60) / 4)}).to_csv(path, index=False)
    spec = DataSpec(
        source=str(path), target="level", task="forecasting", time_column="t", window=8, horizon=2
    )
    bundle = prepare_data(spec, seed=0)
    assert bundle.input_shape == (8, 1)
    assert bundle.feature_names == ["level"]
    assert bundle.y_val.shape == (len(bundle.X_val), 2)


def test_table_with_a_timeseries_split_keeps_time_order(tmp_path):
    path = tmp_path / "ordered.csv"
    steps = np.arange(120, dtype=float)
    pd.DataFrame({"step": steps, "y": steps * 2 + 1}).to_csv(path, index=False)
    spec = DataSpec(source=str(path), target="y", split={"method": "timeseries", "n_folds": 4})
    for fold in range(4):
        bundle = prepare_data(spec, seed=0, fold=fold)
        train, val, test = (
            bundle.preprocessor.inverse_target(y)[:, 0] for y in (bundle.y_train, bundle.y_val, bundle.y_test)
        )
        assert train.max() < val.min()
        assert val.max() < test.min()
