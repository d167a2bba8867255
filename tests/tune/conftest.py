"""Tables built from scikit-learn's real datasets, with the mess users' CSVs have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_digits


def messy_breast_cancer(seed: int = 0) -> pd.DataFrame:
    """Breast cancer (569 rows): 30 numeric columns, two categorical text columns derived from real features,
    an ISO date column (``examined``), about 8% missing values, an identifier column, and a text target."""
    rng = np.random.default_rng(seed)
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns="target").iloc[:, :12].copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame["size_band"] = pd.cut(
        data.frame["worst area"], bins=[0, 500, 900, 1400, 5000], labels=["small", "medium", "large", "huge"]
    ).astype(str)
    frame["texture_band"] = np.where(data.frame["worst texture"] > 25, "rough", "smooth")
    days = rng.integers(0, 3 * 365, len(frame))
    frame["examined"] = (pd.Timestamp("2019-01-01") + pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d")
    for column in ["mean_radius", "mean_texture", "mean_smoothness", "size_band", "examined"]:
        frame.loc[rng.random(len(frame)) < 0.08, column] = np.nan
    frame.insert(0, "patient_id", [f"P{100000 + i}" for i in rng.permutation(len(frame))])
    frame["diagnosis"] = np.where(data.target == 1, "benign", "malignant")
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def messy_digits(seed: int = 0) -> pd.DataFrame:
    """Digits (1,797 rows) as a table: 64 pixel columns, a categorical text column derived from the ink
    (``ink_band``), about 5% missing values in a dozen pixel columns and the band, an identifier column, and a
    text target (``digit``: 'zero'..'nine')."""
    rng = np.random.default_rng(seed)
    data = load_digits(as_frame=True)
    frame = data.frame.drop(columns="target").copy()
    ink = frame.sum(axis=1)
    frame["ink_band"] = pd.qcut(ink, 4, labels=["faint", "light", "dark", "heavy"]).astype(str)
    for column in [*frame.columns[18:30], "ink_band"]:
        frame.loc[rng.random(len(frame)) < 0.05, column] = np.nan
    frame.insert(0, "sample_id", [f"S{100000 + i}" for i in rng.permutation(len(frame))])
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    frame["digit"] = [names[t] for t in data.target]
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def held_back_split(
    frame: pd.DataFrame, n_held: int, target: str, train_csv: Path, new_csv: Path
) -> tuple[Path, Path, pd.DataFrame, pd.DataFrame]:
    """The first ``n_held`` rows held back: (train CSV, held-back CSV without the target, train frame,
    held-back frame with the target)."""
    held, train = frame.iloc[:n_held], frame.iloc[n_held:]
    train.to_csv(train_csv, index=False)
    held.drop(columns=target).to_csv(new_csv, index=False)
    return train_csv, new_csv, train, held


@pytest.fixture
def digits_table_split(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame, pd.DataFrame]:
    """Digits as a messy table, 360 rows held back (see :func:`held_back_split`)."""
    return held_back_split(
        messy_digits(), 360, "digit", tmp_path / "digits_table.csv", tmp_path / "digits_new_rows.csv"
    )


@pytest.fixture
def table_split(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame, pd.DataFrame]:
    """Breast cancer as a messy table, 114 rows held back (see :func:`held_back_split`)."""
    return held_back_split(
        messy_breast_cancer(), 114, "diagnosis", tmp_path / "table.csv", tmp_path / "new_rows.csv"
    )
