"""Date columns in a table become numbers the model can use, fitted on the training part, applied alike to new
rows by the exported preprocessing."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tunelab.data import DataSpec, Preprocessor, load_dataset, prepare_data

from .conftest import make_table


def _dated(tmp_path, dates, **columns):
    frame = make_table().iloc[: len(dates)].assign(joined=dates, **columns)
    path = tmp_path / "dated.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_a_date_column_becomes_its_parts_and_days_since_the_earliest(tmp_path):
    dates = pd.date_range("2020-01-01", periods=150, freq="7D").strftime("%Y-%m-%d")
    path, frame = _dated(tmp_path, dates)
    dataset = load_dataset(DataSpec(source=str(path), target="label"))
    assert any("'joined' holds dates" in notice for notice in dataset.notices)
    bundle = prepare_data(DataSpec(source=str(path), target="label"), seed=0)
    names = bundle.feature_names
    parts = ["joined.year", "joined.month", "joined.day", "joined.day_of_week", "joined.days"]
    assert [name for name in names if name.startswith("joined.")] == parts  # no hour: no times given
    features = bundle.preprocessor.features
    # The earliest date of the training part is day 0 (the origin is fitted there, not on all rows).
    train_rows = frame.set_index("row").loc[_rows(bundle), "joined"]
    assert features.date_origin == [float((pd.Timestamp(train_rows.min()) - pd.Timestamp("1970-01-01")).days)]
    # Raw values come back from the standardized features of a new row.
    new = frame.iloc[:1].assign(joined="2021-03-04")
    x = bundle.preprocessor.transform(new).double().numpy()[0]
    raw = {
        name: x[i] * features.scale[i] + features.mean[i]
        for i, name in enumerate(names[: len(features.scale)])
    }
    assert [round(raw[f"joined.{part}"]) for part in ("year", "month", "day", "day_of_week")] == [
        2021,
        3,
        4,
        3,
    ]


def _rows(bundle) -> np.ndarray:
    """The source row numbers of the training part (the table's 'row' column)."""
    features = bundle.preprocessor.features
    column = features.numeric.index("row")
    values = bundle.X_train[:, column].double().numpy() * features.scale[column] + features.mean[column]
    return np.rint(values).astype(int)


def test_times_add_the_hour_and_time_zones_are_read_as_utc(tmp_path):
    stamps = pd.date_range("2021-05-01 08:00", periods=150, freq="5h", tz="Europe/Paris")
    path, _ = _dated(tmp_path, stamps.strftime("%Y-%m-%dT%H:%M:%S%z"))
    bundle = prepare_data(DataSpec(source=str(path), target="label"), seed=0)
    assert "joined.hour" in bundle.feature_names
    assert np.isfinite(bundle.X_train.numpy()).all()


def test_missing_and_unreadable_dates_are_imputed_and_the_state_round_trips(tmp_path):
    dates = list(pd.date_range("2019-06-01", periods=150, freq="3D").strftime("%Y-%m-%d"))
    dates[3], dates[7] = None, "someday"
    path, frame = _dated(tmp_path, dates)
    bundle = prepare_data(DataSpec(source=str(path), target="label"), seed=0)
    assert np.isfinite(bundle.X_train.numpy()).all()
    new = frame.iloc[:3].assign(joined=["2030-01-01", "not a date", None])
    x = bundle.preprocessor.transform(new).numpy()
    assert np.isfinite(x).all()
    again = Preprocessor.from_state(bundle.preprocessor.to_state())
    assert np.array_equal(again.transform(new).numpy(), x)


def test_a_state_from_before_date_columns_still_loads(tmp_path):
    """Exports written before date columns were read have no date entries in their preprocessing."""
    path, _ = _dated(
        tmp_path, ["x"] * 0 + list(pd.date_range("2020-01-01", periods=150).strftime("%Y-%m-%d"))
    )
    bundle = prepare_data(DataSpec(source=str(path), target="label", drop_columns=["joined"]), seed=0)
    state = bundle.preprocessor.to_state()
    for key in ("dates", "date_origin", "date_hours"):
        state["features"].pop(key)
    old = Preprocessor.from_state(state)
    assert old.features.dates == []
    frame = make_table().iloc[:5]
    assert np.array_equal(old.transform(frame).numpy(), bundle.preprocessor.transform(frame).numpy())


def test_forecasting_windows_still_leave_dates_out(tmp_path):
    frame = pd.DataFrame(
        {"day": pd.date_range("2023-01-01", periods=80).strftime("%Y-%m-%d"), "sales": np.arange(80.0) % 7}
    )
    path = tmp_path / "series.csv"
    frame.to_csv(path, index=False)
    spec = DataSpec(source=str(path), target="sales", task="forecasting", window=5)
    dataset = load_dataset(spec)
    assert any("'day' holds dates" in notice and "left out" in notice for notice in dataset.notices)
