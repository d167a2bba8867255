"""``DatabaseArtifactStore``: Optuna's artifact store in a table of the study's own database (issue #17:
checkpoints that need no shared directory), on SQLite and on a real PostgreSQL server; retried through
outages up to its grace period, then a clear error."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.artifacts import download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from sqlalchemy import exc
from tests._postgres import running_postgres

from tunelab.storage import ARTIFACT_TABLE, DatabaseArtifactStore, StorageUnavailableError


def _round_trip(store: DatabaseArtifactStore, url: str, tmp_path: Path, payload: bytes) -> None:
    """Optuna's own artifact API through the store: a trial uploads a file, another store reads it back."""
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name="artifacts")
    trial = study.ask()
    source = tmp_path / "checkpoint.pt"
    source.write_bytes(payload)
    artifact_id = upload_artifact(study_or_trial=trial, file_path=str(source), artifact_store=store)
    study.tell(trial, 1.0)
    other = DatabaseArtifactStore(url)  # another process's view of the same database
    target = tmp_path / "back.pt"
    download_artifact(artifact_store=other, artifact_id=artifact_id, file_path=str(target))
    assert target.read_bytes() == payload
    assert other.total_bytes() == len(payload)
    other.remove(artifact_id)
    with pytest.raises(ArtifactNotFound, match=artifact_id):
        store.open_reader(artifact_id)
    other.close()
    storage.engine.dispose()


def test_optuna_artifacts_round_trip_in_a_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    store = DatabaseArtifactStore(url)
    _round_trip(store, url, tmp_path, bytes(range(256)) * 1000)
    assert sa.inspect(store.engine).has_table(ARTIFACT_TABLE)
    store.close()


def test_a_write_replaces_and_missing_artifacts_are_not_found(tmp_path):
    store = DatabaseArtifactStore(f"sqlite:///{tmp_path / 'a.db'}")
    store.write("ckpt", io.BytesIO(b"epoch 1"))
    store.write("ckpt", io.BytesIO(b"epoch 2, longer"))
    assert store.open_reader("ckpt").read() == b"epoch 2, longer"
    assert store.total_bytes() == len(b"epoch 2, longer")
    with pytest.raises(ArtifactNotFound):
        store.open_reader("nope")
    with pytest.raises(ArtifactNotFound):
        store.remove("nope")
    store.write("empty", io.BytesIO(b""))
    assert store.open_reader("empty").read() == b""


def test_postgres_round_trip_of_a_large_artifact(tmp_path, postgres_url):
    store = DatabaseArtifactStore(postgres_url)
    payload = bytes(range(256)) * 20_000  # 5 MB: a checkpoint's size
    _round_trip(store, postgres_url, tmp_path, payload)
    store.close()


def test_a_store_holds_one_postgres_connection(postgres_url):
    """Two stores on one database (the second finds the table made), each used for writes and reads: the
    server sees one connection per store."""
    stores = [DatabaseArtifactStore(postgres_url) for _ in range(2)]
    for k, store in enumerate(stores):
        for i in range(3):
            store.write(f"{k}-{i}", io.BytesIO(b"x" * 1000))
            assert store.open_reader(f"{k}-{i}").read() == b"x" * 1000
    assert stores[0].total_bytes() == 6000
    database = sa.engine.make_url(postgres_url).database
    watcher = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with watcher.connect() as connection:
        count = connection.execute(
            sa.text("select count(*) from pg_stat_activity where datname = :db and pid <> pg_backend_pid()"),
            {"db": database},
        ).scalar_one()
    watcher.dispose()
    assert count == 2
    for store in stores:
        store.close()


def test_a_postgres_restart_is_waited_out():
    """The server stops (clients cut off) and comes back 2 s later: a write issued meanwhile waits for it,
    and nothing stored is lost. A server of its own: the session's stays up for the other tests."""
    with running_postgres() as server:
        url = server.create_database()
        store = DatabaseArtifactStore(url, retry_seconds=60.0)
        store.write("before", io.BytesIO(b"kept"))
        server.stop(mode="fast")
        back = threading.Timer(2.0, server.resume)
        back.start()
        try:
            store.write("during", io.BytesIO(b"written after the restart"))
        finally:
            back.join()
        assert store.open_reader("during").read() == b"written after the restart"
        assert store.open_reader("before").read() == b"kept"
        store.close()


class _Flaky:
    """Wraps ``engine.connect`` / ``engine.begin``: the first ``failures`` calls raise as a refused
    connection does."""

    def __init__(self, store: DatabaseArtifactStore, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        engine = store.engine
        self.connect, self.begin = engine.connect, engine.begin

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise exc.OperationalError("connect", {}, ConnectionRefusedError("connection refused"))

    def patched_connect(self):
        self._maybe_fail()
        return self.connect()

    def patched_begin(self):
        self._maybe_fail()
        return self.begin()


def _flaky_store(tmp_path: Path, failures: int, retry_seconds: float):
    waits: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:  # a clock that moves only when the store waits
        waits.append(seconds)
        now[0] += seconds

    store = DatabaseArtifactStore(
        f"sqlite:///{tmp_path / 'f.db'}", retry_seconds=retry_seconds, sleep=sleep, clock=lambda: now[0]
    )
    flaky = _Flaky(store, failures)
    store.engine.connect = flaky.patched_connect  # type: ignore[method-assign]
    store.engine.begin = flaky.patched_begin  # type: ignore[method-assign]
    return store, waits


def test_an_outage_shorter_than_the_grace_period_is_waited_out(tmp_path):
    store, waits = _flaky_store(tmp_path, failures=5, retry_seconds=20.0)
    store.write("ckpt", io.BytesIO(b"kept"))
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6]  # doubling waits, then the write went through
    assert store.open_reader("ckpt").read() == b"kept"


def test_an_outage_past_the_grace_period_is_a_clear_error(tmp_path):
    store, waits = _flaky_store(tmp_path, failures=100, retry_seconds=5.0)
    with pytest.raises(
        StorageUnavailableError, match=r"could not be reached for 3\.1 s \(the grace period is 5 s\)"
    ):
        store.write("ckpt", io.BytesIO(b"lost?"))
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6]  # the next wait (2 s) would pass the 5 s grace period


def test_other_database_errors_are_not_retried(tmp_path):
    store = DatabaseArtifactStore(f"sqlite:///{tmp_path / 'g.db'}")
    with store.engine.begin() as connection:
        connection.execute(sa.text(f"drop table {ARTIFACT_TABLE}"))
    with pytest.raises(exc.OperationalError, match="no such table"):
        store.open_reader("ckpt")
