"""Issue #3: `tunelab tune --storage postgresql+psycopg://...` against a real PostgreSQL server.

One throwaway server serves the whole session (see ``tests/_postgres.py``); every test gets its own empty
database on it, so the tests cannot see each other's studies.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.errors import DataError

runner = CliRunner()

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
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()  # closes its connection: a connection left open fails the test


def connections_to(url: str) -> int:
    """How many sessions the server has open on ``url``'s database, besides the one asking.

    A client that closes its connection ends its server process a moment later (asynchronously), so this
    waits up to 10 s for the count to reach 0; a connection still open stays counted.
    """
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    with psycopg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, dbname="postgres", autocommit=True
    ) as connection:
        deadline = time.monotonic() + 10
        while True:
            row = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (parsed.database,),
            ).fetchone()
            count = int(row[0]) if row else 0
            if count == 0 or time.monotonic() > deadline:
                return count
            time.sleep(0.05)


def with_password(url: str, password: str) -> str:
    """``url`` with a password (the test server trusts local logins, so it accepts any)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(password=password).render_as_string(hide_password=False)


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
    # Every connection the run opened (search, selection, summary, report) is closed when it returns.
    assert connections_to(postgres_url) == 0


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
    assert connections_to(postgres_url) == 0


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


def refused_url(port: int, password: str = "hunter2") -> str:
    return f"postgresql+psycopg://someone:{password}@127.0.0.1:{port}/studies"


def test_a_bad_storage_url_with_workers_fails_before_writing_anything(tmp_path, postgres_url):
    """`--workers 2` used to open the storage only in the search, after spec.yaml was written to --out: a
    traceback, and a corrected retry refused with 'already holds a study'."""
    out = tmp_path / "run"
    spec = spec_file(tmp_path, "pg-bad-url", 2, fused="off")
    with socket.socket() as probe:  # a port nothing listens on: bound here, never listened on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        code, output = tune(str(spec), "--storage", refused_url(port), "--workers", "2", "--out", str(out))
    assert code == 2, output
    message = " ".join(output.split())
    assert (
        f"cannot open the study storage postgresql+psycopg://someone:***@127.0.0.1:{port}/studies" in message
    )
    assert "Connection refused" in message
    assert "hunter2" not in message
    assert not out.exists(), sorted(p.name for p in out.iterdir())

    code, output = tune(str(spec), "--storage", postgres_url, "--out", str(out))  # the corrected retry
    assert code == 0, output
    assert len(trials_of("pg-bad-url", postgres_url)) == 2


def test_the_password_is_kept_out_of_the_run_directory(tmp_path, postgres_url):
    """The summary and storage.txt record the URL with its password hidden; `report` and `--resume` ask for
    the full URL again, saying so, instead of failing to log in with the hidden one."""
    url = with_password(postgres_url, "s3cret-pw")
    hidden = url.replace(":s3cret-pw@", ":***@")
    assert hidden != url
    out = tmp_path / "run"
    events = tmp_path / "tb"
    code, output = tune(
        str(spec_file(tmp_path, "pg-secret", 3, fused="off")),
        *("--storage", url, "--out", str(out), "--tensorboard", str(events)),
    )
    assert code == 0, output
    # --tensorboard read the study with the full URL too: one directory per trial and the refit's.
    assert sorted(p.name for p in events.iterdir()) == ["final", "trial_0000", "trial_0001", "trial_0002"]
    assert json.loads((out / "summary.json").read_text())["storage"] == hidden
    assert (out / "storage.txt").read_text().strip() == hidden
    leaks = [p.name for p in out.rglob("*") if p.is_file() and b"s3cret-pw" in p.read_bytes()]
    assert leaks == []
    # tune built its report with the full URL: the search's plots are there.
    assert 'id="plot-history"' in (out / "report.html").read_text()

    (out / "report.html").unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert hidden in message
    assert "password hidden" in message
    assert f"tunelab report {out} --storage URL" in message
    assert not (out / "report.html").exists()

    result = runner.invoke(app, ["report", str(out), "--storage", url])
    assert result.exit_code == 0, result.output
    assert 'id="plot-history"' in (out / "report.html").read_text()

    # The dashboard, likewise: without --storage it says to give the full URL; with it, it serves the study.
    from tunelab.report import make_dashboard_server

    with pytest.raises(DataError, match=r"--storage URL"):
        make_dashboard_server(out, port=0)
    server = make_dashboard_server(out, port=0, storage=url)
    server.server_close()

    code, output = tune("--resume", "--out", str(out), "--trials", "4")
    assert code == 2, output
    message = " ".join(output.split())
    assert f"stored in {hidden}" in message
    assert f"tunelab tune --resume --out {out} --storage URL" in message
    assert "with its password" in message
    assert len(trials_of("pg-secret", url)) == 3  # nothing ran
    assert connections_to(url) == 0


def test_resume_names_a_recorded_storage_without_a_password(tmp_path):
    """storage.txt records any --storage URL; one without a password is named in full, ready to paste. (An
    SQLite file outside the run directory: the same path as a database server, without needing one.)"""
    url = f"sqlite:///{tmp_path / 'elsewhere' / 'studies.db'}"
    (tmp_path / "elsewhere").mkdir()
    out = tmp_path / "run"
    code, output = tune(
        str(spec_file(tmp_path, "file-study", 2, fused="off")), "--storage", url, "--out", str(out)
    )
    assert code == 0, output
    assert (out / "storage.txt").read_text().strip() == url
    assert not (out / "study.db").exists()

    code, output = tune("--resume", "--out", str(out), "--trials", "3")
    assert code == 2, output
    assert f"`tunelab tune --resume --out {out} --storage {url}`" in " ".join(output.split())

    code, output = tune("--resume", "--out", str(out), "--storage", url, "--trials", "3")
    assert code == 0, output
    assert json.loads((out / "summary.json").read_text())["trials"]["total"] == 3
