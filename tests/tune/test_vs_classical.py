"""Issue #15, must show 2: on small real tables a 60 s zero-config study delivers a model at least as accurate
as logistic regression and HistGradientBoosting fitted on the same rows (bench/vs_classical.py prints the
same comparison)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from tunelab.cli import app


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_a_60s_study_scores_at_least_logistic_regression_and_boosting(tmp_path, name, seed):
    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.drop(columns=["target"])
    frame["label"] = np.asarray(bunch.target_names)[bunch.target.to_numpy()]
    train, held = train_test_split(frame, test_size=0.2, stratify=frame["label"], random_state=seed)
    train.to_csv(tmp_path / "train.csv", index=False)
    held.drop(columns=["label"]).to_csv(tmp_path / "new.csv", index=False)
    runner = CliRunner()
    for args in (
        ["tune", "--data", str(tmp_path / "train.csv"), "--target", "label", "--budget", "60s"],
        ["predict", str(tmp_path / "run"), str(tmp_path / "new.csv"), "--out", str(tmp_path / "preds.csv")],
    ):
        extra = ["--seed", str(seed), "--out", str(tmp_path / "run"), "--quiet"] if args[0] == "tune" else []
        result = runner.invoke(app, args + extra)
        assert result.exit_code == 0, result.output
    predicted = pd.read_csv(tmp_path / "preds.csv")["prediction"].astype(str).to_numpy()
    ours = float((predicted == held["label"].to_numpy()).mean())
    X, y = train.drop(columns=["label"]), train["label"]
    theirs = {
        label: float((model.fit(X, y).predict(held[X.columns]) == held["label"]).mean())
        for label, model in (
            ("logistic regression", make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))),
            ("HistGradientBoosting", HistGradientBoostingClassifier(random_state=0)),
        )
    }
    print(f"{name} seed {seed}: tunelab {ours:.4f}, " + ", ".join(f"{k} {v:.4f}" for k, v in theirs.items()))
    assert all(ours >= score for score in theirs.values()), (ours, theirs)
