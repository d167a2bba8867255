"""A series' time stamps and its seasonal period (the seasonal-naive reference's season)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tunelab.data._dataset import Dataset
from tunelab.data._spec import DataSpec

__all__ = ["infer_season", "season_length", "series_times"]

# (the median spacing between rows in days, from, to) -> the season in rows, and what to call the spacing.
_SPACINGS: tuple[tuple[float, float, int, str], ...] = (
    (0.9 / 24, 1.1 / 24, 24, "hourly"),
    (0.9, 1.1, 7, "daily"),
    (6.5, 7.5, 52, "weekly"),
    (27.5, 31.5, 12, "monthly"),
    (88.0, 93.0, 4, "quarterly"),
    (360.0, 370.0, 1, "yearly"),
)


def series_times(frame: pd.DataFrame, time_column: str | None) -> np.ndarray | None:
    """The rows' time stamps (datetime64) from ``time_column``, or else from the table's only date column;
    None when there is no such column or its values are not all dates."""
    if time_column is not None:
        candidates = [time_column] if time_column in frame.columns else []
    else:
        candidates = [str(name) for name in frame.columns if _looks_like_dates(frame[name])]
    if len(candidates) != 1:
        return None
    times = _as_dates(frame[candidates[0]])
    return None if times is None else times.to_numpy()


def infer_season(times: np.ndarray | None) -> tuple[int, str]:
    """The seasonal period in rows from the median spacing of ``times``, and the spacing's name: hourly 24,
    daily 7, weekly 52, monthly 12, quarterly 4; 1 (no season: the naive forecast) for anything else."""
    if times is None or len(times) < 2:
        return 1, "no time column"
    steps = np.diff(np.asarray(times, dtype="datetime64[s]").astype(np.int64)) / 86_400.0
    spacing = float(np.median(steps))
    for low, high, season, name in _SPACINGS:
        if low <= spacing <= high:
            return season, name
    return 1, f"rows {spacing:.3g} days apart"


def season_length(spec: DataSpec, dataset: Dataset) -> tuple[int, str]:
    """``data.season`` when given, else the season inferred from the series' time stamps; and where it came
    from, in words."""
    if spec.season is not None:
        return spec.season, "data.season"
    season, spacing = infer_season(dataset.times)
    return season, f"inferred from the time column ({spacing})"


def _looks_like_dates(column: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(column):
        return True
    text = pd.api.types.is_string_dtype(column) or pd.api.types.is_object_dtype(column)
    return text and _as_dates(column) is not None


def _as_dates(column: pd.Series) -> Any:
    if pd.api.types.is_datetime64_any_dtype(column):
        dates = column
    elif pd.api.types.is_numeric_dtype(column):
        return None
    else:
        try:
            dates = pd.to_datetime(column, format="ISO8601")
        except (ValueError, TypeError):
            return None
    return None if dates.isna().any() else dates
