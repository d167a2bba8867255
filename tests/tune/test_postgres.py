"""Issue #3: `tunelab tune --storage postgresql+psycopg://...` against a real PostgreSQL server.

One throwaway server serves the whole session (see ``tests/_postgres.py``); every test gets its own empty
database on it, so the tests cannot see each other's studies.
"""

from __future__ import annotations

import gc
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from tests._postgres import PostgresServer, running_postgres
from typer.testing import CliRunner

from tunelab.cli import app

runner = CliRunner()

# Optuna builds a SQLAlchemy engine for every storage URL it is handed (tunelab's protocol loads the study by
# URL several times) and never disposes of it, so each leaves a pooled psycopg connection open until the
# garbage collector frees it, when psycopg warns (ResourceWarning; silent outside the tests). The warning is
# expected here, and `_collect_leaked_connections` frees them before each test ends: none fails a later test.
pytestmark = pytest.mark.filterwarnings("ignore:.*was deleted while still open:ResourceWarning")

SPACE = {"train.lr": {"float": [1e-3, 1e-1], "log": True}, "model.dropout": {"float": [0.0, 0.3]}}


def spec_file(tmp_path: Path, name: str, n_trials: int, **search: object) -> Path:
    """A tiny iris study: every trial trains 3 epochs of a small MLP, and none is stopped early."""
    spec = {
        "name": name,
        "seed": 0,
        "data": {"source": "iris"},
        "model": {"type": "mlp", "hidden": [8]},
        "train": {"epochs": 3, "batch_size": 32},
        "search": {
            "space": SPACE,
            "scheduler": {"name": "none"},
            "n_trials": n_trials,
            "top_k": 1,
            "n_seeds": 1,
            **search,
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def tune(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["tune", *args, "--quiet"])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def trials_of(name: str, url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(autouse=True)
def _collect_leaked_connections() -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A SQLAlchemy URL to a fresh, empty database on the session's server."""
    return postgres_server.create_database()


def test_tune_stores_the_study_in_postgres(tmp_path, postgres_url):
    """Fused populations of 2 (the population loop writes its trials straight to the database)."""
    out = tmp_path / "run"
    spec = spec_file(tmp_path, "pg-tune", 4, fused="on", population_size=2)
    code, output = tune(str(spec), "--storage", postgres_url, "--out", str(out))
    assert code == 0, output
    trials = trials_of("pg-tune", postgres_url)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    for trial in trials:
        assert set(trial.params) == set(SPACE)
        assert 1e-3 <= trial.params["train.lr"] <= 1e-1
        assert 0.0 < trial.value <= 1.0  # validation accuracy
        assert sorted(trial.intermediate_values) == [1, 2, 3]  # one report per epoch
    # The study is in the database, not in a study.db beside the run; the summary agrees with it.
    assert not (out / "study.db").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["storage"] == postgres_url
    assert summary["trials"]["total"] == 4
    assert summary["trials"]["complete"] == 4
    assert summary["protocol"]["fusion"]["fused"] is True
    assert (out / "best" / "metadata.json").is_file()


def test_two_workers_share_a_postgres_study(tmp_path, postgres_url):
    spec = spec_file(tmp_path, "pg-workers", 6, fused="off")
    code, output = tune(
        str(spec), "--storage", postgres_url, "--workers", "2", "--out", str(tmp_path / "run")
    )
    assert code == 0, output
    trials = trials_of("pg-workers", postgres_url)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))), "trial numbers are duplicated or missing"
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    assert all(set(t.params) == set(SPACE) and t.value is not None for t in trials)
    # Each worker stops once the shared count reaches the budget: at most one extra trial per other worker.
    assert 6 <= len(trials) <= 7
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["protocol"]["workers"] == 2
    assert summary["trials"]["total"] == len(trials)


def test_resume_continues_a_postgres_study(tmp_path, postgres_url):
    """Sequential trials (one trial at a time); `--resume --trials 5` adds two to the three stored."""
    out = tmp_path / "run"
    spec = spec_file(tmp_path, "pg-resume", 3, fused="off")
    code, output = tune(str(spec), "--storage", postgres_url, "--out", str(out))
    assert code == 0, output
    before = {
        t.number: (t.params, t.value, t.intermediate_values) for t in trials_of("pg-resume", postgres_url)
    }
    assert len(before) == 3

    code, output = tune("--resume", "--out", str(out), "--storage", postgres_url, "--trials", "5")
    assert code == 0, output
    trials = trials_of("pg-resume", postgres_url)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    for trial in trials[:3]:
        assert (trial.params, trial.value, trial.intermediate_values) == before[trial.number]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"]["total"] == 5


def test_unreachable_postgres_is_a_clear_error(tmp_path):
    pytest.importorskip("psycopg", reason="the 'postgres' extra is missing: pip install -e '.[dev]'")
    with socket.socket() as probe:  # a port nothing listens on: bound here, never listened on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        url = f"postgresql+psycopg://someone:hunter2@127.0.0.1:{port}/studies"
        code, output = tune(
            str(spec_file(tmp_path, "pg-down", 2)), "--storage", url, "--out", str(tmp_path / "r")
        )
    assert code == 2, output
    message = " ".join(output.split())
    assert "cannot open the study storage" in message
    assert f"127.0.0.1:{port}/studies" in message
    assert "Connection refused" in message
    assert "running and reachable" in message
    assert "hunter2" not in message  # the password is not printed


def test_missing_postgres_database_is_a_clear_error(tmp_path, postgres_server):
    url = postgres_server.url("no_such_database")
    code, output = tune(
        str(spec_file(tmp_path, "pg-nodb", 2)), "--storage", url, "--out", str(tmp_path / "r")
    )
    assert code == 2, output
    message = " ".join(output.split())
    assert f"cannot open the study storage {url}" in message
    assert 'database "no_such_database" does not exist' in message
    assert "createdb" in message
