"""A loaded, unsplit dataset: raw features and targets as they came from the source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

__all__ = ["DataKind", "Dataset", "Task", "take_rows"]

DataKind = Literal["table", "image", "sequence", "text"]
Task = Literal["classification", "regression", "forecasting"]


@dataclass(frozen=True)
class Dataset:
    """Raw data before splitting and preprocessing.

    ``features`` is a DataFrame for tables and series (usable columns only: identifiers, dropped and empty
    columns already left out), or an array for images ``[N, C, H, W]`` and sequences ``[N, L, F]``.
    ``target`` is ``[N]`` (or ``[N, T]`` for multi-target regression) in the source's own values.
    ``test_features`` / ``test_target`` hold the source's predefined test part (IDX ``t10k-*`` files,
    Fashion-MNIST, npz ``X_test``), else ``None``. ``text`` data is a table whose ``text_columns`` hold free
    text (its other columns are table features). For ``forecasting`` the rows are in time order and
    ``features`` holds the numeric columns of the series (the target column among them).
    """

    name: str
    kind: DataKind
    task: Task
    features: pd.DataFrame | np.ndarray
    target: np.ndarray
    target_name: str = "target"
    test_features: pd.DataFrame | np.ndarray | None = None
    test_target: np.ndarray | None = None
    # Display names of integer class labels (label_names[i] names label i), when the source has them.
    label_names: list[str] | None = None
    notices: list[str] = field(default_factory=list)
    # A series' time stamps per row (datetime64), when it has a time or date column: its seasonal period.
    times: np.ndarray | None = None
    # The free-text columns of a ``text`` table, in order.
    text_columns: tuple[str, ...] = ()

    @property
    def n_rows(self) -> int:
        """Rows in the main part (the predefined test part not counted)."""
        return len(self.target)

    @property
    def has_test_part(self) -> bool:
        return self.test_target is not None


def take_rows(features: pd.DataFrame | np.ndarray, positions: np.ndarray) -> pd.DataFrame | np.ndarray:
    """Rows ``positions`` of a table (re-indexed from 0) or of an array."""
    if isinstance(features, pd.DataFrame):
        return features.iloc[positions].reset_index(drop=True)
    return features[positions]
