"""Table columns: which can be features (numeric / categorical), which are left out, and the target's task."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tunelab.data._dataset import Task
from tunelab.data._hints import did_you_mean, listing
from tunelab.data._table_features import as_datetimes, text_values
from tunelab.errors import DataError

__all__ = ["clean_target", "infer_task", "select_features", "take_target"]

# A text column whose non-missing values are at least this share distinct carries no pattern a model can
# learn from (names, ids, free text) and would one-hot into as many columns as rows.
IDENTIFIER_UNIQUE_SHARE = 0.95
# A text column is free text (tokenized, read by a text model) when its values have at least this many words
# (median) and are mostly distinct: reviews, tickets, descriptions; names and codes are shorter.
TEXT_MIN_WORDS = 4
TEXT_MIN_DISTINCT_SHARE = 0.3
# An integer-valued target with at most max(this, sqrt(N)) distinct values is read as class labels.
MIN_CLASS_LIMIT = 20
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}"


def take_target(frame: pd.DataFrame, target: str, drop_columns: list[str], *, source: str) -> pd.DataFrame:
    """Check that ``target`` and ``drop_columns`` exist in ``frame``; return the frame without the drops."""
    columns = [str(name) for name in frame.columns]
    if target not in columns:
        raise DataError(
            f"target column '{target}' is not in {source}.{did_you_mean(target, columns)} "
            f"Available columns: {listing(columns)}. Fix: set `target` to one of them."
        )
    unknown = [name for name in drop_columns if name not in columns]
    if unknown:
        hints = "".join(did_you_mean(name, columns) for name in unknown)
        raise DataError(
            f"drop_columns names {listing(unknown)}, which {source} does not have.{hints} "
            f"Available columns: {listing(columns)}."
        )
    return frame.drop(columns=drop_columns)


def select_features(
    frame: pd.DataFrame,
    *,
    forecasting: bool = False,
    time_column: str | None = None,
    text_columns: list[str] | None = None,
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The columns a model can use (numeric as float64, categorical and free text as str objects), the free
    text columns among them, and notices.

    Numeric and boolean columns are kept. Date columns are kept as datetimes (the features derive numbers
    from them, with a notice). Text columns are free text when their values have several words and are
    mostly distinct (or when ``text_columns`` lists them: then exactly those are), categorical when few
    values repeat, and identifiers (left out with a notice) when (nearly) all their short values are
    distinct. Columns whose values are lists, dicts or mixed objects cannot be encoded and raise
    :class:`DataError`. Forecasting windows use numeric columns only.
    """
    kept: dict[str, pd.Series] = {}
    texts: list[str] = []
    notices: list[str] = []
    if text_columns is not None:
        _check_text_columns(frame, text_columns)
    for name in frame.columns:
        column = frame[name]
        label = str(name)
        if label == time_column:
            continue
        if column.isna().all():
            if text_columns is not None and label in text_columns:
                raise DataError(
                    f"text column '{label}' has no values at all. Expected free text in it. Fix: fill it, "
                    "or remove it from text_columns."
                )
            notices.append(f"column '{label}' has no values at all and was left out")
            continue
        if text_columns is not None and label in text_columns:
            kept[label] = pd.Series(text_values(column), index=column.index, dtype=object)
            texts.append(label)
            continue
        role, values = _column_role(column, label, detect_text=text_columns is None)
        if role == "text":
            if forecasting:
                notices.append(
                    f"column '{label}' holds free text; forecasting windows read numbers, so it was left out"
                )
                continue
            words = int(_word_counts(values.dropna()).median())
            notices.append(
                f"column '{label}' holds free text (median {words} words, {values.nunique()} distinct "
                "values): it is tokenized and read by a text model"
            )
            kept[label] = values
            texts.append(label)
            continue
        if role == "datetime":
            if forecasting:
                notices.append(
                    f"column '{label}' holds dates; windows use numeric columns only, so it was left out"
                    + ("" if time_column else f" (set time_column: {label} to order rows by it)")
                )
                continue
            notices.append(
                f"column '{label}' holds dates: the model reads its year, month, day, day of week (hour, "
                "where times are given) and days since the earliest date of the training part"
            )
            kept[label] = as_datetimes(values)
            continue
        if role == "identifier":
            present = column.dropna()
            distinct = present.nunique()
            share = (
                "all values unique" if distinct == len(present) else f"{distinct} of {len(present)} distinct"
            )
            notices.append(
                f"column '{label}' looks like an identifier ({share} text) and was left out; "
                f"convert it to numbers or to fewer categories to use it, or list it in text_columns to "
                "read it as free text"
            )
            continue
        if role == "categorical" and forecasting:
            notices.append(
                f"column '{label}' is text; forecasting windows use numeric columns only, so it was left out"
            )
            continue
        kept[label] = values
    if not kept and not forecasting:  # a univariate series needs no column besides its target
        raise DataError(
            f"no usable feature columns are left (columns: {listing(str(name) for name in frame.columns)}). "
            "Expected at least one numeric or categorical column besides the target. "
            "Fix: check drop_columns and the notices above."
        )
    if (
        texts
        and len(texts) == len(kept)
        and all(not any(value.strip() for value in kept[name].dropna()) for name in texts)
    ):
        raise DataError(
            f"every text in {listing(texts)} is empty; there is nothing to read. Expected free text. "
            "Fix: check the column(s), or choose others as features."
        )
    return pd.DataFrame(kept, index=frame.index), texts, notices


def _check_text_columns(frame: pd.DataFrame, text_columns: list[str]) -> None:
    columns = [str(name) for name in frame.columns]
    for name in text_columns:
        if name not in columns:
            raise DataError(
                f"text_columns names '{name}', which the data does not have (or which is the target or a "
                f"dropped column).{did_you_mean(name, columns)} Available columns: {listing(columns)}."
            )
        column = frame[name].dropna()
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            raise DataError(
                f"text column '{name}' holds numbers, not text. Expected free text. Fix: remove it from "
                "text_columns (numeric columns are read as numbers)."
            )


def _column_role(column: pd.Series, label: str, *, detect_text: bool = True) -> tuple[str, pd.Series]:
    """Classify one column as numeric / categorical / identifier / datetime / free text, with its values
    converted."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return "numeric", column.astype("float64")
    if pd.api.types.is_datetime64_any_dtype(column):
        return "datetime", column
    present = column.dropna()
    inferred = pd.api.types.infer_dtype(present, skipna=True)
    if inferred in ("integer", "floating", "mixed-integer-float", "decimal"):
        return "numeric", pd.to_numeric(column).astype("float64")
    if inferred in ("date", "datetime", "datetime64"):
        return "datetime", column
    if inferred in ("string", "boolean", "categorical"):
        text = present.astype(str)
        if inferred == "string" and bool(text.str.match(_ISO_DATE).all()):
            return "datetime", column
        if inferred == "string" and detect_text and _free_text(text):
            return "text", pd.Series(text_values(column), index=column.index, dtype=object)
        if inferred == "string" and text.nunique() >= IDENTIFIER_UNIQUE_SHARE * len(text) and len(text) > 1:
            return "identifier", column
        return "categorical", pd.Series(text_values(column), index=column.index, dtype=object)
    types = sorted({type(value).__name__ for value in present})
    raise DataError(
        f"column '{label}' cannot be encoded: its values are of type(s) {types} (pandas: '{inferred}'). "
        f"Expected numbers, booleans or text in each column. Fix: add '{label}' to drop_columns, or turn it "
        f"into numeric / text columns before loading."
    )


def _free_text(values: pd.Series) -> bool:
    """Several words per value (median) and mostly distinct values: sentences, not categories or names."""
    distinct = values.nunique()
    words = _word_counts(values).median()
    return bool(
        words >= TEXT_MIN_WORDS and distinct >= TEXT_MIN_DISTINCT_SHARE * len(values) and distinct > 1
    )


def _word_counts(values: pd.Series) -> pd.Series:
    """Whitespace-separated words per value."""
    return values.map(lambda value: len(str(value).split()))


def infer_task(target: np.ndarray, *, name: str) -> tuple[Task, str]:
    """Classification for labels (text, booleans, few integer values), else regression; with a notice why."""
    if target.ndim == 2 and target.shape[1] > 1:
        return "regression", f"task inferred as regression: target has {target.shape[1]} columns"
    values = target.reshape(-1)
    distinct = pd.unique(values)
    limit = max(MIN_CLASS_LIMIT, math.isqrt(len(values)))
    override = "set task explicitly to override"
    if values.dtype.kind in "OUSb":
        return "classification", (
            f"task inferred as classification: target '{name}' holds {len(distinct)} distinct labels; "
            f"{override}"
        )
    integral = values.dtype.kind in "iu" or (
        values.dtype.kind == "f" and bool(np.all(np.mod(values, 1) == 0))
    )
    if integral and len(distinct) <= limit:
        return "classification", (
            f"task inferred as classification: target '{name}' has {len(distinct)} distinct integer values; "
            f"{override}"
        )
    return "regression", (
        f"task inferred as regression: target '{name}' has {len(distinct)} distinct numeric values; "
        f"{override}"
    )


def clean_target(target: pd.Series, task: Task, *, name: str) -> np.ndarray:
    """Validate a target column (no missing values left) for ``task``; return it as a numpy array."""
    if task == "classification":
        values = target.to_numpy()
        if values.dtype.kind == "f" and bool(np.all(np.mod(values, 1) == 0)):
            values = values.astype(np.int64)  # 0.0 / 1.0 labels read from a CSV with blanks elsewhere
        elif values.dtype.kind not in "iub":
            values = target.map(str).to_numpy(dtype=object)
        classes = pd.unique(values)
        if len(classes) < 2:
            raise DataError(
                f"target '{name}' has a single class ({classes[0]!r}); classification needs at least two. "
                "Fix: choose another target column, or check the file's rows."
            )
        if values.dtype == object and _free_text(pd.Series(values).astype(str)):
            raise DataError(
                f"target '{name}' holds free text ({len(classes)} distinct values of several words), not "
                "labels; a text cannot be predicted as a class. Expected a column of labels (a few distinct "
                "values) or numbers. Fix: choose another target; to read this column as an input, make it a "
                "feature."
            )
        return values
    try:
        numbers = pd.to_numeric(target).to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as error:
        example = next((v for v in target if not _is_number(v)), "?")
        raise DataError(
            f"target '{name}' holds non-numeric values such as {example!r}, but task '{task}' needs numbers. "
            "Fix: set task: classification, or clean the column."
        ) from error
    if np.unique(numbers).size < 2:
        raise DataError(
            f"target '{name}' has a single value ({numbers[0]}); there is nothing to learn. "
            "Fix: choose another target column."
        )
    return numbers


def _is_number(value: object) -> bool:
    return not pd.isna(pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0])
