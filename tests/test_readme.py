"""The README's Python examples run as written (the tuning one on a shorter budget)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)


def _block(marker: str) -> str:
    found = [block for block in BLOCKS if marker in block]
    assert len(found) == 1, f"README has {len(found)} python blocks with {marker!r}"
    return found[0]


def test_the_study_loop_example_runs_a_users_own_training_loop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it writes my_study.db
    namespace = {"my_train_one_epoch": lambda lr: abs(lr - 0.01)}  # the user's loop: best at lr 0.01
    exec(_block("def objective(trial)"), namespace)
    summary = namespace["summary"]
    assert summary.n_complete + summary.n_pruned == 40
    assert summary.n_pruned > 0  # ASHA stopped some
    assert abs(summary.best_params["train"]["lr"] - 0.01) < 0.01
    assert (tmp_path / "my_study.db").is_file()


def test_the_tuning_example_returns_typed_records(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _block("tunelab.tune_experiment(")
    start = code.index("# Tuning")
    assert '"budget": "60s"' in code
    namespace: dict = {}
    exec("import tunelab\n" + code[start:].replace('"budget": "60s"', '"budget": "12s"'), namespace)
    result = namespace["result"]
    assert result.trials.n_complete >= 1
    assert result.candidates[0].trial == result.to_dict()["best_trial"]
    assert (tmp_path / "runs" / "wine-tune" / "summary.json").is_file()
    with pytest.warns(DeprecationWarning, match="result.trainer"):
        assert result.extra["trainer"] is result.trainer
