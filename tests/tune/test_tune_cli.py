"""`tunelab tune` and `tunelab predict` from the command line, as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from typer.testing import CliRunner

from tunelab.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def test_zero_config_tune_then_predict(tmp_path, table_split):
    train_csv, new_csv, _, held = table_split
    out = tmp_path / "run"
    result = invoke(
        "tune",
        "--data",
        str(train_csv),
        "--target",
        "diagnosis",
        "--trials",
        "4",
        "--out",
        str(out),
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "classification"
    assert summary["metric"] == "val_accuracy"
    assert summary["trials"]["total"] == 4
    assert summary["trials"]["complete"] >= 1
    assert set(summary["protocol"]) >= {"validation", "reevaluation", "refit", "test"}
    assert summary["candidates"][0]["n"] >= 1
    for candidate in summary["candidates"]:  # every interval within accuracy's range (null: one run)
        low, high = candidate["ci95"]
        assert low is None or 0.0 <= low <= high <= 1.0, candidate
    assert "accuracy" in summary["test_metrics"]
    # The study is an ordinary Optuna study.
    study = optuna.load_study(study_name=summary["name"], storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 4

    preds_path = tmp_path / "preds.csv"
    result = invoke("predict", str(out), str(new_csv), "--out", str(preds_path))
    assert result.exit_code == 0, result.output
    preds = pd.read_csv(preds_path)
    assert len(preds) == len(held)
    assert set(preds["prediction"]) <= {"benign", "malignant"}
    assert {"proba_benign", "proba_malignant"} <= set(preds.columns)
    np.testing.assert_allclose(preds["proba_benign"] + preds["proba_malignant"], 1.0, atol=1e-5)
    # The date column (missing in some rows) is read as numbers, by the search and the exported model alike.
    from tunelab import load

    names = load(out).preprocessor.feature_names
    assert {"examined.year", "examined.month", "examined.day_of_week", "examined.days"} <= set(names)
    accuracy = float((preds["prediction"].to_numpy() == held["diagnosis"].to_numpy()).mean())
    assert accuracy > 0.85


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_tuned_table_scores_at_least_hist_gradient_boosting(tmp_path, digits_table_split):
    """Issue #3, must show 2: a 60 s zero-config study on a table with numeric and categorical columns and
    missing values (digits as a table), then predict on 360 held-back rows, against HistGradientBoosting
    fitted on the same rows."""
    train_csv, new_csv, train, held = digits_table_split
    out = tmp_path / "run"
    result = invoke(
        "tune", "--data", str(train_csv), "--target", "digit", "--budget", "60s", "--out", str(out), "--quiet"
    )
    assert result.exit_code == 0, result.output
    preds_path = tmp_path / "preds.csv"
    assert invoke("predict", str(out), str(new_csv), "--out", str(preds_path)).exit_code == 0
    ours = float((pd.read_csv(preds_path)["prediction"].to_numpy() == held["digit"].to_numpy()).mean())

    features = train.drop(columns=["digit", "sample_id"])
    to_cat = {"ink_band": "category"}
    hgb = HistGradientBoostingClassifier(categorical_features=["ink_band"], random_state=0)
    hgb.fit(features.astype(to_cat), train["digit"])
    theirs = float((hgb.predict(held[features.columns].astype(to_cat)) == held["digit"].to_numpy()).mean())
    print(f"tunelab accuracy {ours:.4f} vs HistGradientBoosting {theirs:.4f} on {len(held)} held-back rows")
    assert ours >= theirs
