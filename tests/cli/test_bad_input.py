"""Every bad input a user can give `tunelab train` ends with exit code 2, a clear message, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from tunelab.cli import app

runner = CliRunner()


def run_cli(*args: str):
    result = runner.invoke(app, list(args))
    output = result.output
    assert "Traceback" not in output, output
    return result.exit_code, " ".join(output.split())  # rich wraps long lines: compare on one line


def write_spec(tmp_path: Path, spec: object, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec) if not isinstance(spec, str) else spec)
    return path


def table_spec(csv: Path, **train) -> dict:
    return {
        "data": {"source": str(csv), "target": "y"},
        "model": {"type": "mlp", "hidden": [8]},
        "train": {"epochs": 1, **train},
    }


@pytest.fixture
def good_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.choice(["red", "green", "blue"], size=n),
            "y": rng.choice(["yes", "no"], size=n),
        }
    )
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    return path


def test_missing_spec_file(tmp_path):
    code, out = run_cli("train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "does not exist" in out
    assert "nope.yaml" in out


def test_empty_spec_file(tmp_path):
    code, out = run_cli("train", str(write_spec(tmp_path, "")), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "is empty" in out
    assert "data:" in out


def test_unreadable_spec_file(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    code, out = run_cli("train", str(path), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "cannot read spec file" in out


def test_malformed_yaml(tmp_path):
    path = write_spec(tmp_path, "data:\n  source: digits\n model: [unclosed\n")
    code, out = run_cli("train", str(path), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "not valid YAML" in out
    assert "line" in out


def test_spec_not_a_mapping(tmp_path):
    code, out = run_cli("train", str(write_spec(tmp_path, ["data", "model"])), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "must be a mapping" in out
    assert "a list" in out


def test_unknown_top_level_key_suggests_fix(tmp_path):
    spec = {"data": {"source": "digits"}, "trian": {"epochs": 1}}
    code, out = run_cli("train", str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "trian" in out
    assert "Did you mean 'train'" in out


@pytest.mark.parametrize(
    ("section", "values", "fragments"),
    [
        ("train", {"optimizer": "adamm"}, ["train.optimizer", "adam", "sgd"]),
        ("train", {"lr": -0.1}, ["train.lr", "greater than 0"]),
        ("train", {"epochs": 0}, ["train.epochs", "greater than or equal to 1"]),
        ("model", {"type": "mlp", "activation": "relux"}, ["model.activation", "relu", "tanh"]),
        ("model", {"type": "mlp", "dropout": 1.0}, ["model.dropout", "less than 1"]),
        ("model", {"type": "transformer"}, ["model", "mlp", "cnn", "rnn"]),
    ],
)
def test_impossible_or_unknown_values(tmp_path, section, values, fragments):
    spec = {"data": {"source": "digits"}, "model": {"type": "mlp"}, "train": {"epochs": 1}}
    spec[section] = {**spec[section], **values} if section == "train" else values
    code, out = run_cli("train", str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "run"))
    assert code == 2, out
    for fragment in fragments:
        assert fragment in out, (fragment, out)


def test_missing_data_file(tmp_path):
    spec = table_spec(tmp_path / "missing.csv")
    code, out = run_cli("train", str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "missing.csv" in out
    assert "not exist" in out or "not found" in out


def test_empty_data_file(tmp_path):
    csv = tmp_path / "empty.csv"
    csv.write_text("")
    code, out = run_cli("train", str(write_spec(tmp_path, table_spec(csv))), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "empty" in out


def test_unreadable_data_file(tmp_path):
    bad = tmp_path / "table.parquet"
    bad.write_bytes(b"this is not parquet at all")
    code, out = run_cli("train", str(write_spec(tmp_path, table_spec(bad))), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "table.parquet" in out


def test_missing_target_column_lists_columns(tmp_path, good_csv):
    spec = table_spec(good_csv)
    spec["data"]["target"] = "label"
    code, out = run_cli("train", str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "label" in out
    for column in ("a", "b", "y"):
        assert f"'{column}'" in out or f"{column}," in out or f"{column}" in out


def test_target_with_one_class(tmp_path):
    csv = tmp_path / "one.csv"
    pd.DataFrame({"a": np.arange(50.0), "y": ["same"] * 50}).to_csv(csv, index=False)
    code, out = run_cli("train", str(write_spec(tmp_path, table_spec(csv))), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "one class" in out or "single class" in out or "only one" in out


def test_target_all_missing(tmp_path):
    csv = tmp_path / "nan.csv"
    pd.DataFrame({"a": np.arange(50.0), "y": [np.nan] * 50}).to_csv(csv, index=False)
    code, out = run_cli("train", str(write_spec(tmp_path, table_spec(csv))), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "no values" in out or "missing" in out


def test_column_that_cannot_be_encoded(tmp_path):
    path = tmp_path / "tags.parquet"
    n = 60
    pd.DataFrame(
        {
            "a": np.arange(n, dtype=float),
            "tags": [["x", "y"][: i % 3] for i in range(n)],  # lists: no number, category or date
            "y": ["u", "v"] * (n // 2),
        }
    ).to_parquet(path)
    code, out = run_cli("train", str(write_spec(tmp_path, table_spec(path))), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "column 'tags' cannot be encoded" in out
    assert not (tmp_path / "run" / "summary.json").exists()


def test_a_date_column_is_read_as_numbers_not_refused(tmp_path):
    csv = tmp_path / "dates.csv"
    n = 60
    pd.DataFrame(
        {
            "a": np.arange(n, dtype=float),
            "when": pd.date_range("2024-01-01", periods=n, freq="D").astype(str),
            "y": ["u", "v"] * (n // 2),
        }
    ).to_csv(csv, index=False)
    code, out = run_cli("train", str(write_spec(tmp_path, table_spec(csv))), "--out", str(tmp_path / "run"))
    assert code == 0, out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert any("'when' holds dates" in notice for notice in summary["data"]["notices"])


def test_existing_run_is_not_overwritten(tmp_path, good_csv):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text('{"kept": true}')
    code, out = run_cli("train", str(write_spec(tmp_path, table_spec(good_csv))), "--out", str(run_dir))
    assert code == 2
    assert "--overwrite" in out
    assert (run_dir / "summary.json").read_text() == '{"kept": true}'


def test_diverging_model_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    csv = tmp_path / "regression.csv"
    x = rng.normal(size=(200, 3))
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": x @ [3.0, -2.0, 1.0] + 0.1}).to_csv(
        csv, index=False
    )
    spec = table_spec(csv, lr=1e12, optimizer="sgd", epochs=30)
    code, out = run_cli("train", str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "diverg" in out.lower() or "not finite" in out.lower()
    assert "lr" in out or "learning rate" in out
