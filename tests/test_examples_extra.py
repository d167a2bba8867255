"""The tuning examples run end to end on a tiny budget (2 trials of 2 epochs), and their data files are real,
mixed, and exactly what examples/data/make_tables.py makes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

from tunelab.export import load
from tunelab.spec import load_spec, parse_spec
from tunelab.tune import tune_experiment

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DATA = EXAMPLES / "data"


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny(path: Path, **space):
    """The example spec with a tiny budget (``space`` replaces some of its search space); its data path made
    absolute (the specs are run from the repository root)."""
    raw = load_spec(path).model_dump(mode="json")
    raw["search"]["space"].update(space)
    raw["data"]["source"] = str(EXAMPLES.parent / raw["data"]["source"])
    raw["train"]["epochs"] = 2
    raw["search"].update(
        {"n_trials": 2, "budget": None, "cv": None, "top_k": 1, "n_seeds": 1, "fused": "off"}
    )
    raw["search"]["scheduler"]["min_epochs"] = 1
    return parse_spec(raw, source=str(path))


def test_generator_reproduces_the_committed_data(tmp_path):
    make_tables = _import(DATA / "make_tables.py", "make_tables")
    for path in make_tables.write_all(tmp_path):
        assert path.read_bytes() == (DATA / path.name).read_bytes(), f"{path.name} differs: run the script"
        assert path.stat().st_size < 200_000


def test_table_data_is_mixed_with_missing_values():
    frame = pd.read_csv(DATA / "diabetes.csv")
    assert len(frame) == 442
    assert set(frame.select_dtypes(exclude="number").columns) == {"sex", "bmi_class"}
    assert set(frame["bmi_class"].dropna()) == {"underweight", "normal", "overweight", "obese"}
    missing = frame.isna().mean()
    assert 0.03 < missing["bmi"] < 0.15
    assert 0.01 < missing["sex"] < 0.08
    assert missing["progression"] == 0  # the target is complete
    # bmi_class is derived from bmi: missing together, and consistent with the WHO cut-offs elsewhere.
    assert (frame["bmi"].isna() == frame["bmi_class"].isna()).all()
    assert (frame.loc[frame["bmi_class"] == "obese", "bmi"] >= 30).all()


def test_table_csv_example_tunes_a_regression(tmp_path):
    result = tune_experiment(tiny(EXAMPLES / "table_csv.yaml"), out_dir=tmp_path / "run")
    summary = result.summary
    assert summary["task"] == "regression"
    assert summary["trials"]["total"] == 2
    assert {"rmse", "mae", "r2"} <= set(summary["test_metrics"])
    # The exported model imputes and encodes new rows itself, missing values and categories included.
    rows = pd.read_csv(DATA / "diabetes.csv").drop(columns=["progression"]).head(20)
    assert rows.isna().any().any()
    predictions = load(tmp_path / "run" / "best").predict(rows)
    assert predictions.shape[0] == 20
    assert pd.notna(predictions).all()


def test_lstm_series_example_forecasts(tmp_path):
    spec = tiny(EXAMPLES / "lstm_series.yaml", **{"model.hidden_size": {"choice": [8, 16]}})
    result = tune_experiment(spec, out_dir=tmp_path / "run")
    assert result.summary["task"] == "forecasting"
    predictions = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    horizon = spec.data.horizon
    assert [f"y_pred_{k}" for k in range(horizon)] == [
        c for c in predictions.columns if c.startswith("y_pred")
    ]
    # Chronological split: the test part is the last 20% of the windows, so its truth is the recording's end.
    series = pd.read_csv(DATA / "eeg.csv")["ch1"].to_numpy()
    assert predictions["y_true_0"].to_numpy()[-1] == pytest.approx(series[-horizon], rel=1e-4)


def test_custom_module_example_tunes_the_users_module(tmp_path, monkeypatch, capsys):
    # As `python examples/custom_module.py` does, put examples/ on sys.path so the factory imports.
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, "custom_module", raising=False)
    example = _import(EXAMPLES / "custom_module.py", "custom_module_script")
    monkeypatch.setattr(example, "experiment", _tiny_experiment(example.experiment))
    result = example.main(["--trials", "2", "--epochs", "2", "--out", str(tmp_path / "run"), "--quiet"])
    assert "test accuracy" in capsys.readouterr().out
    params = result.summary["best_params"]
    assert set(params["model"]["kwargs"]) == {"channels", "n_blocks", "dropout"}
    # Rebuilt from the weights through the factory's import string, as a later process would.
    model = load(tmp_path / "run" / "best", backend="weights").module
    assert type(model).__name__ == "ResidualCNN"
    assert len(model.blocks) == params["model"]["kwargs"]["n_blocks"]


def _tiny_experiment(make):
    """The example's experiment on 600 rows, with small networks only (CPU convolutions are slow)."""

    def experiment(**kwargs):
        raw = make(**kwargs, budget=None).model_dump(mode="json")
        raw["data"]["max_rows"] = 600
        raw["search"]["space"].update(
            {"model.kwargs.channels": {"choice": [4, 8]}, "model.kwargs.n_blocks": 1}
        )
        raw["search"].update({"top_k": 1, "n_seeds": 1})
        return parse_spec(raw)

    return experiment
