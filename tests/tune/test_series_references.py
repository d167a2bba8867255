"""Must-show (#15): on a real series, the zero-config forecaster's held-out one-step-ahead RMSE is no worse
than a lagged ridge regression's and the seasonal-naive forecast's, fitted on the same rows.

The series is statsmodels' bundled Mauna Loa CO2 record as monthly means (526 rows, a trend and a yearly
season), written as a CSV with a date column and tuned as a user would: ``tunelab tune --data co2.csv
--target co2 --task forecasting --budget 60s``. The references are those ``summary.json`` reports, checked
here against an independent computation on the same training rows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import TimeSeriesSplit
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.data import DataSpec, prepare_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def co2_csv(tmp_path_factory):
    datasets = pytest.importorskip("statsmodels.api").datasets
    monthly = datasets.co2.load_pandas().data.resample("MS").mean().interpolate()
    frame = monthly.reset_index().rename(columns={"index": "date"})
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
    path = tmp_path_factory.mktemp("co2") / "co2.csv"
    frame.to_csv(path, index=False)
    assert len(frame) == 526
    return path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zero_config_forecaster_beats_lagged_ridge_and_seasonal_naive(tmp_path, co2_csv, seed):
    out = tmp_path / "run"
    args = ["tune", "--data", str(co2_csv), "--target", "co2", "--task", "forecasting"]
    result = CliRunner().invoke(app, [*args, "--budget", "60s", "--seed", str(seed), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    test = summary["references"]["test"]
    winner = test["winner"]["rmse"]
    assert summary["references"]["season"] == 12
    # The lagged ridge, fitted independently on the rows the winner was refit on (train + validation).
    bundle = prepare_data(DataSpec(source=str(co2_csv), target="co2", task="forecasting"), seed=seed)
    fit_x = np.concatenate([bundle.X_train.double().numpy(), bundle.X_val.double().numpy()]).reshape(-1, 24)
    fit_y = np.concatenate([bundle.y_train.double().numpy(), bundle.y_val.double().numpy()])
    ridge = RidgeCV(alphas=np.logspace(-4, 4, 17), cv=TimeSeriesSplit(5)).fit(fit_x, fit_y)
    predicted = bundle.preprocessor.inverse_target(
        ridge.predict(bundle.X_test.double().numpy().reshape(-1, 24)).reshape(-1, 1)
    )
    actual = bundle.preprocessor.inverse_target(bundle.y_test.double().numpy())
    assert test["lagged_ridge"]["rmse"] == pytest.approx(
        np.sqrt(np.mean((predicted - actual) ** 2)), rel=1e-3
    )
    print(
        f"seed {seed}: test RMSE winner {winner:.4f}, lagged ridge {test['lagged_ridge']['rmse']:.4f}, "
        f"seasonal naive {test['seasonal_naive']['rmse']:.4f}; best {summary['best_params']['model']}; "
        f"selection: {summary.get('selection', {}).get('reason')}"
    )
    assert winner <= test["lagged_ridge"]["rmse"]
    assert winner <= test["seasonal_naive"]["rmse"]
