"""Optuna's artifact store in a table of the study's own database: checkpoints that need no shared directory.

Several machines that share a PostgreSQL study (issue #17) need a place for checkpoints that every one of
them reaches and that survives any one of them; the database they already share is such a place.
:class:`DatabaseArtifactStore` implements Optuna's ``ArtifactStore`` protocol (``open_reader``, ``write``,
``remove``: ``optuna.artifacts.upload_artifact`` / ``download_artifact`` work with it) on one table,
``tunelab_artifacts`` (id, bytes, size, time written), beside Optuna's own tables.

- **Connections**: one per store (a pool of one, checked before use), so a worker process holds at most two
  with Optuna's own storage.
- **Storage hiccups**: a call that fails to reach the database (a refused or dropped connection, a server
  shutting down, SQLite's "database is locked") is retried with doubling waits (0.1 s up to 2 s) until
  ``retry_seconds`` have passed, then raises :class:`StorageUnavailableError` naming the outage; other
  database errors (a missing table, a bad query) are raised at once.
- **Writes** replace an artifact of the same id in one transaction: a reader sees the old bytes or the new,
  never a part.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import BinaryIO, TypeVar

import sqlalchemy as sa
from optuna.artifacts.exceptions import ArtifactNotFound
from sqlalchemy import exc

from tunelab.errors import TunelabError

__all__ = ["ARTIFACT_TABLE", "DatabaseArtifactStore", "StorageUnavailableError", "stored_artifacts"]

ARTIFACT_TABLE = "tunelab_artifacts"
_FIRST_WAIT, _LONGEST_WAIT = 0.1, 2.0
_T = TypeVar("_T")


class StorageUnavailableError(TunelabError, ConnectionError):
    """The database stayed out of reach for longer than the store's grace period."""


class DatabaseArtifactStore:
    """Artifacts (bytes under an id) in the ``tunelab_artifacts`` table of the database at ``url`` (any
    SQLAlchemy URL; the study's storage URL by default in tunelab). The table is created when missing.

    >>> store = DatabaseArtifactStore("sqlite://")
    >>> store.write("a1", io.BytesIO(b"weights"))
    >>> store.open_reader("a1").read(), store.total_bytes()
    (b'weights', 7)
    """

    def __init__(
        self,
        url: str,
        *,
        retry_seconds: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retry_seconds = retry_seconds
        self._sleep, self._clock = sleep, clock
        sqlite = sa.engine.make_url(url).get_backend_name() == "sqlite"
        pool = {} if sqlite else {"pool_size": 1, "max_overflow": 0}
        self.engine = sa.create_engine(url, pool_pre_ping=True, **pool)
        metadata = sa.MetaData()
        self.table = sa.Table(
            ARTIFACT_TABLE,
            metadata,
            sa.Column("artifact_id", sa.String(255), primary_key=True),
            sa.Column("content", sa.LargeBinary, nullable=False),
            sa.Column("size_bytes", sa.BigInteger, nullable=False),
            sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        )
        self._retrying(lambda: self._create(metadata))

    def open_reader(self, artifact_id: str) -> BinaryIO:
        """The artifact's bytes as a binary file object; ``ArtifactNotFound`` when there is none."""

        def read() -> bytes | None:
            with self.engine.connect() as connection:
                query = sa.select(self.table.c.content).where(self.table.c.artifact_id == artifact_id)
                found = connection.execute(query).scalar_one_or_none()
                return None if found is None else bytes(found)

        content = self._retrying(read)
        if content is None:
            raise ArtifactNotFound(f"no artifact {artifact_id!r} in the {ARTIFACT_TABLE} table")
        return io.BytesIO(content)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        """Store ``content_body``'s bytes under ``artifact_id``, replacing any earlier ones at once."""
        content = content_body.read()

        def replace() -> None:
            with self.engine.begin() as connection:
                connection.execute(sa.delete(self.table).where(self.table.c.artifact_id == artifact_id))
                connection.execute(
                    sa.insert(self.table).values(
                        artifact_id=artifact_id,
                        content=content,
                        size_bytes=len(content),
                        written_at=datetime.now(timezone.utc),
                    )
                )

        self._retrying(replace)

    def remove(self, artifact_id: str) -> None:
        """Delete the artifact; ``ArtifactNotFound`` when there is none."""

        def delete() -> int:
            with self.engine.begin() as connection:
                result = connection.execute(
                    sa.delete(self.table).where(self.table.c.artifact_id == artifact_id)
                )
                return int(result.rowcount)

        if self._retrying(delete) == 0:
            raise ArtifactNotFound(f"no artifact {artifact_id!r} in the {ARTIFACT_TABLE} table")

    def total_bytes(self) -> int:
        """The stored artifacts' bytes, all together."""
        return self._retrying(lambda: _count_and_bytes(self.engine, self.table.c.size_bytes))[1]

    def close(self) -> None:
        """Close the store's connection."""
        self.engine.dispose()

    def _create(self, metadata: sa.MetaData) -> None:
        try:
            metadata.create_all(self.engine, checkfirst=True)
        except (exc.IntegrityError, exc.ProgrammingError):
            # Another process created it between the check and the creation (PostgreSQL reports either).
            if not sa.inspect(self.engine).has_table(ARTIFACT_TABLE):
                raise

    def _retrying(self, call: Callable[[], _T]) -> _T:
        """``call()``, retried while the database cannot be reached, for at most ``retry_seconds``."""
        started, wait = self._clock(), _FIRST_WAIT
        while True:
            try:
                return call()
            except (exc.OperationalError, exc.InterfaceError) as error:
                if not _transient(error):
                    raise
                waited = self._clock() - started
                if waited + wait > self.retry_seconds:
                    url = self.engine.url.render_as_string(hide_password=True)
                    raise StorageUnavailableError(
                        f"the artifact store's database ({url}) could not be reached for {waited:.1f} s "
                        f"(the grace period is {self.retry_seconds:g} s): {error.orig or error}. Check "
                        "that the database server runs and accepts connections, then resume the study."
                    ) from error
                self._sleep(wait)
                wait = min(2 * wait, _LONGEST_WAIT)


def stored_artifacts(engine: sa.Engine) -> tuple[int, int] | None:
    """How many artifacts the database of ``engine`` holds and their bytes (``tunelab status``), reading only:
    None when it has no artifact table."""
    if not sa.inspect(engine).has_table(ARTIFACT_TABLE):
        return None
    return _count_and_bytes(engine, sa.table(ARTIFACT_TABLE, sa.column("size_bytes")).c.size_bytes)


def _count_and_bytes(engine: sa.Engine, size_bytes: sa.ColumnElement[int]) -> tuple[int, int]:
    with engine.connect() as connection:
        count, total = connection.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(size_bytes), 0))
        ).one()
    return int(count), int(total)


def _transient(error: exc.DBAPIError) -> bool:
    """Whether ``error`` says the database could not be reached (worth waiting for), not that the request
    was wrong: a connection SQLAlchemy invalidated; PostgreSQL's connection exceptions (SQLSTATE class 08),
    operator interventions (57P: shutdown, cannot connect now) and too many connections (53300), or a
    driver error without a SQLSTATE (the client could not connect); SQLite's locked or busy database; an OS
    error such as a refused connection."""
    if error.connection_invalidated:
        return True
    original = error.orig
    if isinstance(original, OSError):
        return True
    state = getattr(original, "sqlstate", False)  # psycopg's errors have one (None when it could not connect)
    if state is not False:
        return state is None or str(state).startswith(("08", "57P")) or state == "53300"
    message = str(original).lower()
    return "locked" in message or "busy" in message
