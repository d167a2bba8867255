"""Table features: impute, standardize, one-hot encode; and sliding windows over a series.

scikit-learn fits (SimpleImputer, StandardScaler, OneHotEncoder); the fitted numbers are kept as plain arrays
and lists and applied here, so a transform rebuilt from its state runs the same code as the fitted one and
needs neither pickle nor a matching scikit-learn version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tunelab.data._hints import listing
from tunelab.errors import DataError

__all__ = ["TableFeatures", "WindowFeatures", "as_datetimes", "text_values"]


@dataclass(frozen=True)
class TableFeatures:
    """Raw table rows → float32 ``[N, F]``: numeric columns, and the numbers of each date column (year,
    month, day, day of week, hour where the training part has times, and days since its earliest date),
    median-imputed and standardized; then text columns most-frequent-imputed and one-hot encoded (unknown
    categories encode as all zeros)."""

    numeric: list[str]
    fill: np.ndarray  # [n_numeric + date parts] medians of the training part
    mean: np.ndarray  # [n_numeric + date parts]
    scale: np.ndarray  # [n_numeric + date parts] standard deviations (1 for constant columns)
    categorical: list[str]
    category_fill: list[str]  # most frequent value per categorical column
    categories: list[list[str]]  # sorted categories seen in the training part
    dates: list[str] = field(default_factory=list)  # date columns (datetime64 when fitted)
    date_origin: list[float] = field(default_factory=list)  # per date column: earliest training day (epoch)
    date_hours: list[bool] = field(default_factory=list)  # per date column: whether it carries times of day

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> TableFeatures:
        """Fit on the training rows; numeric columns are those with a numeric dtype, date columns those with a
        datetime dtype, the others are text."""
        dates = [str(name) for name in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[name])]
        numeric = [str(name) for name in frame.columns if pd.api.types.is_numeric_dtype(frame[name])]
        categorical = [str(name) for name in frame.columns if str(name) not in {*numeric, *dates}]
        origins, hours = [], []
        for name in dates:
            days = _days(frame[name])
            origins.append(float(np.nanmin(days)) if np.isfinite(days).any() else 0.0)
            hours.append(bool(np.nanmax(np.abs(days - np.floor(days)), initial=0.0) > 0))
        fill = mean = scale = np.zeros(0)
        numbers = _numbers_and_dates(frame, numeric, dates, origins, hours)
        if numbers.shape[1]:
            imputer = SimpleImputer(strategy="median", keep_empty_features=True)
            filled = imputer.fit_transform(numbers)
            scaler = StandardScaler().fit(filled)
            fill, mean, scale = imputer.statistics_, scaler.mean_, scaler.scale_
        category_fill: list[str] = []
        categories: list[list[str]] = []
        if categorical:
            text = np.column_stack([text_values(frame[name]) for name in categorical])
            imputer = SimpleImputer(strategy="most_frequent", keep_empty_features=True)
            filled = imputer.fit_transform(text)
            encoder = OneHotEncoder(handle_unknown="ignore").fit(filled)
            category_fill = [str(value) for value in imputer.statistics_]
            categories = [[str(value) for value in column] for column in encoder.categories_]
        return cls(
            numeric,
            np.asarray(fill),
            np.asarray(mean),
            np.asarray(scale),
            categorical,
            category_fill,
            categories,
            dates,
            origins,
            hours,
        )

    @property
    def input_columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.dates]

    @property
    def date_parts(self) -> list[str]:
        """The names of the numbers read from the date columns, in order."""
        return [
            f"{name}.{part}"
            for name, hours in zip(self.dates, self.date_hours, strict=True)
            for part in _DATE_PARTS
            if hours or part != "hour"
        ]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (len(self.output_names),)

    @property
    def output_names(self) -> list[str]:
        """One name per output column: numeric columns, then ``column=category`` for each one-hot column."""
        one_hot = [
            f"{name}={value}"
            for name, values in zip(self.categorical, self.categories, strict=True)
            for value in values
        ]
        return [*self.numeric, *self.date_parts, *one_hot]

    def apply(self, frame: pd.DataFrame) -> np.ndarray:
        """Transform raw rows (extra columns such as the target are ignored) into float32 ``[N, F]``."""
        missing = [name for name in self.input_columns if name not in frame.columns]
        if missing:
            raise DataError(
                f"the data lacks column(s) {listing(missing)} that the model was trained on. Expected "
                f"columns: {listing(self.input_columns)}. Fix: add them (empty values are imputed)."
            )
        blocks: list[np.ndarray] = []
        numbers = _numbers_and_dates(frame, self.numeric, self.dates, self.date_origin, self.date_hours)
        if numbers.shape[1]:
            numbers = np.where(np.isnan(numbers), self.fill, numbers)
            blocks.append((numbers - self.mean) / self.scale)
        for name, fill, categories in zip(self.categorical, self.category_fill, self.categories, strict=True):
            text = text_values(frame[name])
            text = np.where(pd.isna(text), fill, text)
            blocks.append(text[:, None] == np.asarray(categories, dtype=object)[None, :])
        if not blocks:
            return np.zeros((len(frame), 0), dtype=np.float32)
        return np.concatenate([block.astype(np.float32) for block in blocks], axis=1)

    def to_state(self) -> dict[str, Any]:
        return {
            "type": "table",
            "numeric": list(self.numeric),
            "fill": self.fill.astype(np.float64),
            "mean": self.mean.astype(np.float64),
            "scale": self.scale.astype(np.float64),
            "categorical": list(self.categorical),
            "category_fill": list(self.category_fill),
            "categories": [list(values) for values in self.categories],
            "dates": list(self.dates),
            "date_origin": [float(origin) for origin in self.date_origin],
            "date_hours": [bool(hours) for hours in self.date_hours],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TableFeatures:
        return cls(
            numeric=[str(name) for name in state["numeric"]],
            fill=np.asarray(state["fill"], dtype=np.float64),
            mean=np.asarray(state["mean"], dtype=np.float64),
            scale=np.asarray(state["scale"], dtype=np.float64),
            categorical=[str(name) for name in state["categorical"]],
            category_fill=[str(value) for value in state["category_fill"]],
            categories=[[str(value) for value in values] for values in state["categories"]],
            # exports written before date columns were read have none
            dates=[str(name) for name in state.get("dates", [])],
            date_origin=[float(origin) for origin in state.get("date_origin", [])],
            date_hours=[bool(hours) for hours in state.get("date_hours", [])],
        )


@dataclass(frozen=True)
class WindowFeatures:
    """A time-ordered series → float32 windows ``[T - window + 1, window, F]`` of its scaled numeric columns.

    Window ``i`` holds rows ``i .. i + window - 1``; it predicts the target at the rows after it.
    """

    table: TableFeatures
    window: int

    @classmethod
    def fit(cls, frame: pd.DataFrame, *, window: int) -> WindowFeatures:
        """Fit the scaler on the training rows of the series."""
        return cls(TableFeatures.fit(frame), window)

    @property
    def output_names(self) -> list[str]:
        return self.table.output_names

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.window, len(self.table.output_names))

    def apply(self, frame: pd.DataFrame) -> np.ndarray:
        if len(frame) < self.window:
            raise DataError(
                f"the series has {len(frame)} rows but a window needs {self.window}. "
                f"Fix: pass at least the last {self.window} rows."
            )
        rows = self.table.apply(frame)
        windows = np.lib.stride_tricks.sliding_window_view(rows, self.window, axis=0)  # [M, F, window]
        return np.ascontiguousarray(windows.transpose(0, 2, 1))

    def to_state(self) -> dict[str, Any]:
        return {"type": "window", "window": self.window, "table": self.table.to_state()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WindowFeatures:
        return cls(TableFeatures.from_state(state["table"]), int(state["window"]))


def text_values(column: pd.Series) -> np.ndarray:
    """A column as an object array of str, with NaN where values are missing."""
    return np.asarray([np.nan if pd.isna(value) else str(value) for value in column], dtype=object)


_DATE_PARTS = ("year", "month", "day", "day_of_week", "hour", "days")
_DAY = np.timedelta64(1, "D")


def _days(column: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 (fractional: the time of day), NaN where the value is not a date."""
    values = as_datetimes(column).to_numpy()
    days = (values - np.datetime64("1970-01-01")) / _DAY
    return np.where(np.isnat(values), np.nan, days)


def _numbers_and_dates(
    frame: pd.DataFrame, numeric: list[str], dates: list[str], origins: list[float], hours: list[bool]
) -> np.ndarray:
    """float64 ``[N, numeric + date parts]``: the numeric columns, then each date column's parts (NaN where
    a value is missing or not a date)."""
    columns = [_numbers(frame[name], name) for name in numeric]
    for name, origin, with_hours in zip(dates, origins, hours, strict=True):
        days = _days(frame[name])
        stamps = pd.to_datetime(pd.Series(days), unit="D", origin="unix").dt
        parts: dict[str, pd.Series] = {
            "year": stamps.year,
            "month": stamps.month,
            "day": stamps.day,
            "day_of_week": stamps.day_of_week,
            "hour": stamps.hour + stamps.minute / 60.0,
            "days": pd.Series(days - origin),
        }
        columns += [
            parts[part].to_numpy(dtype=np.float64, na_value=np.nan)
            for part in _DATE_PARTS
            if with_hours or part != "hour"
        ]
    if not columns:
        return np.zeros((len(frame), 0), dtype=np.float64)
    return np.column_stack(columns)


def as_datetimes(column: pd.Series) -> pd.Series:
    """A column of dates (datetimes, date objects or ISO text) as naive datetime64 (UTC for time-zoned ones);
    values that are not dates become NaT, which the features impute."""
    if pd.api.types.is_datetime64_any_dtype(column):
        values = column
    else:
        text = column.map(lambda value: value if pd.isna(value) else str(value))
        values = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.astype("datetime64[ns]")


def _numbers(column: pd.Series, name: str) -> np.ndarray:
    try:
        return pd.to_numeric(column).to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError) as error:
        raise DataError(
            f"column '{name}' should hold numbers (it did in the training data) but it has {error}. "
            "Fix: correct those values or leave them empty."
        ) from error
