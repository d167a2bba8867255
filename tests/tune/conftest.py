"""Tables built from scikit-learn's real datasets, with the mess users' CSVs have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer


def messy_breast_cancer(seed: int = 0) -> pd.DataFrame:
    """Breast cancer (569 rows): 30 numeric columns, two categorical text columns derived from real features,
    about 8% missing values, an identifier column, and a text target."""
    rng = np.random.default_rng(seed)
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns="target").iloc[:, :12].copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame["size_band"] = pd.cut(
        data.frame["worst area"], bins=[0, 500, 900, 1400, 5000], labels=["small", "medium", "large", "huge"]
    ).astype(str)
    frame["texture_band"] = np.where(data.frame["worst texture"] > 25, "rough", "smooth")
    for column in ["mean_radius", "mean_texture", "mean_smoothness", "size_band"]:
        frame.loc[rng.random(len(frame)) < 0.08, column] = np.nan
    frame.insert(0, "patient_id", [f"P{100000 + i}" for i in rng.permutation(len(frame))])
    frame["diagnosis"] = np.where(data.target == 1, "benign", "malignant")
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.fixture
def table_split(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame, pd.DataFrame]:
    """(train CSV, held-back CSV without the target, train frame, held-back frame with the target)."""
    frame = messy_breast_cancer()
    held = frame.iloc[:114]
    train = frame.iloc[114:]
    train_csv = tmp_path / "table.csv"
    new_csv = tmp_path / "new_rows.csv"
    train.to_csv(train_csv, index=False)
    held.drop(columns="diagnosis").to_csv(new_csv, index=False)
    return train_csv, new_csv, train, held
