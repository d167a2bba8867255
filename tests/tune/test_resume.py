"""Issue #3, must show 3: a study killed with SIGKILL resumes with nothing completed lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

SPEC = {
    "name": "resume-me",
    "data": {"source": "digits", "max_rows": 600},
    "model": {"type": "mlp", "hidden": [32]},
    "train": {"epochs": 6, "batch_size": 32},
    "search": {
        "space": {"train.lr": {"float": [1e-3, 3e-2], "log": True}, "model.dropout": {"float": [0.0, 0.3]}},
        "scheduler": {"name": "none"},
        "n_trials": 14,
        "top_k": 1,
        "n_seeds": 1,
    },
}


def finished(storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name="resume-me", storage=storage)
    except (KeyError, Exception):  # the study may not exist yet
        return []
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def test_sigkill_then_resume(tmp_path: Path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "run"
    storage = f"sqlite:///{out / 'study.db'}"
    command = [sys.executable, "-m", "tunelab.cli", "tune", str(spec_path), "--out", str(out), "--quiet"]
    log = tmp_path / "first-run.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=sink, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while len(finished(storage)) < 4:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the study did not complete 4 trials in time"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {t.number: (t.params, t.value, dict(t.intermediate_values)) for t in finished(storage)}
    assert len(before) >= 4
    assert not (out / "summary.json").exists()

    resumed = subprocess.run(
        [sys.executable, "-m", "tunelab.cli", "tune", "--resume", "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    study = optuna.load_study(study_name="resume-me", storage=storage)
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), "a trial number is duplicated"
    assert not [t for t in trials if t.state == TrialState.RUNNING], "a trial stayed RUNNING"
    after = {t.number: (t.params, t.value, dict(t.intermediate_values)) for t in trials}
    for number, record in before.items():
        assert after[number] == record, f"trial {number} changed across the resume"
    # The study went on to its budget: 14 finished trials besides any interrupted one marked failed.
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) >= 14 - states.count(
        TrialState.FAIL
    )
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert all(t.user_attrs.get("fail_reason", "").startswith("interrupted") for t in interrupted)
    retried = [t for t in trials if "retry_of" in t.user_attrs]
    assert sorted(t.user_attrs["retry_of"] for t in retried) == sorted(t.number for t in interrupted)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"]["total"] == len(trials)
