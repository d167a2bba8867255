"""`tunelab train` and `tunelab demo` from the command line: what a user runs and what they get."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from typer.testing import CliRunner

from tunelab.cli import app

runner = CliRunner()

DIGITS_SPEC = {
    "name": "digits-quick",
    "data": {"source": "digits"},
    "model": {"type": "mlp", "hidden": [64]},
    "train": {"optimizer": "adam", "lr": 0.003, "epochs": 4, "batch_size": 64},
}


def test_train_writes_a_complete_run_directory(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(DIGITS_SPEC))
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(spec_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in (
        "spec.yaml",
        "history.csv",
        "history.json",
        "checkpoint.pt",
        "model.pt",
        "curves.png",
        "metrics.json",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "classification"
    assert summary["training"]["epochs_run"] == 4
    assert 0.5 < summary["test_metrics"]["accuracy"] <= 1.0
    assert summary["data"]["n_classes"] == 10
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 4  # header + one row per epoch
    # The written spec is the validated one, defaults filled in, and loads again.
    reloaded = yaml.safe_load((out / "spec.yaml").read_text())
    assert reloaded["train"]["epochs"] == 4
    assert "batch_size" in reloaded["train"]


def test_command_line_overrides_and_json_lines(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(DIGITS_SPEC))
    result = runner.invoke(
        app, ["train", str(spec_path), "--out", str(tmp_path / "run"), "--epochs", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["epoch", "epoch", "summary"]
    assert events[0]["epoch"] == 1
    assert "val_loss" in events[0]
    assert events[-1]["training"]["epochs_run"] == 2


def test_help_on_every_command():
    for command in ([], ["train"], ["demo"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0
        assert "Usage" in result.output


def test_console_script_reports_errors_without_traceback(tmp_path):
    """The installed entry point, in a real process: exit code 2 and a one-paragraph message."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {optimizer: adamm}\ndata: {source: digits}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tunelab.cli", "train", str(bad), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "train.optimizer" in proc.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


def test_demo_runs_a_short_study(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--budget", "12s", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"]["complete"] >= 1
    assert summary["test_metrics"]["accuracy"] >= 0.9
    assert (out / "study.db").is_file()
    assert (out / "best" / "metadata.json").is_file()
    assert "test (evaluated once)" in result.output
