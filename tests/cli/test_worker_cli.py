"""`tunelab worker` (issue #17): joins a study that `tunelab tune --storage URL` started, from another
process, and shares its trials through leases; bad input exits 2 with a message and leaves the study as
it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import sqlalchemy as sa
import yaml
from optuna.trial import TrialState
from tests._ray import write_table
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.storage import LeaseBook, StudyDatabase
from tunelab.storage._artifacts import stored_artifacts
from tunelab.storage._leases import LEASE_TABLE

runner = CliRunner()
N_TRIALS = 16


def _spec(tmp_path, n_trials: int = N_TRIALS, epochs: int = 3) -> str:
    # Trials of about a second each, so that the driver and the worker both get some once both are running.
    table = write_table(tmp_path / "table.csv", rows=6000, features=32)
    spec = {
        "name": "joined",
        "seed": 0,
        "data": {"source": str(table), "target": "label"},
        "model": {"type": "mlp", "hidden": [128]},
        "train": {"epochs": epochs, "batch_size": 32},
        "search": {
            "space": {"train.lr": {"float": [1e-3, 1e-1], "log": True}},
            "n_trials": n_trials,
            "scheduler": {"name": "none"},
            "fused": "off",
            "top_k": 1,
            "n_seeds": 1,
            "ensemble": False,
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return str(path)


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tunelab.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _leases_of(postgres_url: str, worker: str | None = None) -> list:
    """The study's leases (of ``worker``), or none while the driver has not created their table yet."""
    database = StudyDatabase(postgres_url)
    try:
        if not sa.inspect(database.engine).has_table(LEASE_TABLE):
            return []  # not created here: a pause of the driver mid-creation would block the creation
        book = LeaseBook(database, study="joined", worker="reader", node="test")
        return book.leases(states=("held", "telling", "finished"), worker=worker)
    finally:
        database.close()


def test_a_worker_joins_a_study_and_shares_its_trials(tmp_path, postgres_url):
    spec = _spec(tmp_path)
    # A long grace period: the driver is paused below while the worker starts; its lease must not go stale.
    driver = _cli(
        "tune", spec, "--storage", postgres_url, "--out", str(tmp_path / "run"), "--quiet", "--grace", "300"
    )
    storage = optuna.storages.RDBStorage(postgres_url)
    for _ in range(600):  # the driver publishes its plan, creates the lease table, then leases trials
        if _leases_of(postgres_url):
            break
        assert driver.poll() is None, driver.communicate()[1][-2000:]
        time.sleep(0.1)
    # However fast this machine, the driver must not finish the study before the worker has started: it
    # is paused until the worker holds a lease of its own, then both search side by side. (Paused in its
    # search loop, not while creating tables, whose locks would hold the worker up until it resumes.)
    driver.send_signal(signal.SIGSTOP)
    worker = _cli(
        "worker",
        "--storage",
        postgres_url,
        "--study",
        "joined",
        "--name",
        "second",
        "--out",
        str(tmp_path / "w"),
    )
    try:
        for _ in range(300):
            if _leases_of(postgres_url, "second") or worker.poll() is not None:
                break
            time.sleep(0.2)
    finally:
        driver.send_signal(signal.SIGCONT)
    worker_out, worker_err = worker.communicate(timeout=240)
    _, driver_err = driver.communicate(timeout=240)
    assert driver.returncode == 0, driver_err[-2000:]
    assert worker.returncode == 0, worker_err[-2000:]
    assert "this worker is done" in worker_out
    trials = optuna.load_study(study_name="joined", storage=storage).get_trials()
    storage.engine.dispose()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == N_TRIALS
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    database = StudyDatabase(postgres_url)
    leases = LeaseBook(database, study="joined", worker="reader", node="test").leases(states=("finished",))
    database.close()
    by_worker = {lease.worker for lease in leases}
    assert "second" in by_worker  # the joined worker ran trials
    assert len(by_worker) == 2  # and so did the driver's own search process
    # Both processes asking for the last trial at once drop the extra ask as never started (not counted).
    started = [t for t in trials if "never_started" not in t.user_attrs]
    assert all(t.state == TrialState.FAIL for t in trials if t not in started)
    assert sorted(lease.number for lease in leases) == sorted(t.number for t in started)


def test_a_killed_process_s_sequential_trial_resumes_on_another_from_the_database(tmp_path, postgres_url):
    """No shared directory: the driver is killed (-9) mid-trial, a worker on its own run directory reclaims
    the trial once its lease is past the grace period and continues it from the checkpoint the driver's
    process copied into the study's database, after the last epoch that checkpoint holds."""
    spec = _spec(tmp_path, n_trials=3, epochs=8)
    driver = _cli(
        "tune", spec, "--storage", postgres_url, "--out", str(tmp_path / "run"), "--quiet", "--grace", "3"
    )
    storage = optuna.storages.RDBStorage(postgres_url)
    killed = None
    try:
        for _ in range(600):
            if "joined" in optuna.get_all_study_names(storage):
                running = [
                    t
                    for t in optuna.load_study(study_name="joined", storage=storage).get_trials()
                    if t.state == TrialState.RUNNING and len(t.intermediate_values) >= 3
                ]
                if running:
                    killed = running[0].number
                    break
            assert driver.poll() is None, driver.communicate()[1][-2000:]
            time.sleep(0.1)
    finally:
        driver.kill()
        driver.communicate()
    assert killed is not None
    worker = _cli("worker", "--storage", postgres_url, "--study", "joined", "--out", str(tmp_path / "w"))
    _, worker_err = worker.communicate(timeout=240)
    assert worker.returncode == 0, worker_err[-2000:]
    trials = optuna.load_study(study_name="joined", storage=storage).get_trials()
    storage.engine.dispose()
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == killed]
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["resume_from"] == f"joined:trial-{killed}"
    resumed_at = retry.user_attrs["resumed_at_epoch"]
    assert resumed_at >= 2  # the epochs the driver's process checkpointed are not trained again
    assert min(retry.intermediate_values) == resumed_at + 1
    assert max(retry.intermediate_values) == 8
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 3
    database = StudyDatabase(postgres_url)
    assert stored_artifacts(database.engine) == (0, 0)  # every trial ended: no checkpoint is left
    database.close()


def test_a_worker_for_a_missing_study_or_plan_exits_2(tmp_path, postgres_url):
    result = runner.invoke(app, ["worker", "--storage", postgres_url, "--study", "nope"])
    assert result.exit_code == 2
    assert "no study named 'nope'" in result.output
    storage = optuna.storages.RDBStorage(postgres_url)
    optuna.create_study(study_name="plain", storage=storage)
    storage.engine.dispose()
    result = runner.invoke(app, ["worker", "--storage", postgres_url, "--study", "plain"])
    assert result.exit_code == 2
    assert "was not started by `tunelab tune`" in result.output
    assert "Traceback" not in result.output


def test_bad_backend_options_exit_2(tmp_path):
    spec = _spec(tmp_path)
    for args, message in (
        (["--backend", "spark"], "--backend must be local or ray"),
        (["--address", "auto"], "--address and --max-concurrent are for --backend ray"),
        (["--backend", "ray", "--workers", "2"], "--workers is for --backend local"),
    ):
        result = runner.invoke(app, ["tune", spec, "--out", str(tmp_path / "run"), *args])
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert not (tmp_path / "run").exists()
