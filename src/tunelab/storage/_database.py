"""``StudyDatabase``: tunelab's own connection to a study's database, shared by its checkpoints and leases.

Optuna's storage holds one connection per process while a worker runs; tunelab's tables beside Optuna's
(``tunelab_artifacts``, ``tunelab_leases``) go through one more, a pool of one (checked before use), so a
worker process holds at most two whatever threads it runs (a heartbeat thread waits for the connection).

Storage hiccups: a call that fails to reach the database (a refused or dropped connection, a server shutting
down, SQLite's "database is locked") is retried with doubling waits (0.1 s up to 2 s) until
``retry_seconds`` have passed, then raises :class:`StorageUnavailableError` naming the outage; other database
errors (a missing table, a bad query) are raised at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy import exc

from tunelab.errors import TunelabError

__all__ = ["StorageUnavailableError", "StudyDatabase", "database_now", "server_database"]

_FIRST_WAIT, _LONGEST_WAIT = 0.1, 2.0
_T = TypeVar("_T")


class StorageUnavailableError(TunelabError, ConnectionError):
    """The database stayed out of reach for longer than the grace period."""


class StudyDatabase:
    """One engine on the database at ``url`` (any SQLAlchemy URL), and :meth:`retrying`.

    ``retry_seconds``: how long a call keeps retrying an unreachable database (the heartbeat grace period in
    a distributed study). ``sleep`` and ``clock`` are the waits' (tests replace them).
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
        self.sqlite = sa.engine.make_url(url).get_backend_name() == "sqlite"
        # SQLite: SQLAlchemy's own pool per thread (a file, no server connection to count).
        pool = {} if self.sqlite else {"pool_size": 1, "max_overflow": 0, "pool_timeout": 3600}
        self.engine = sa.create_engine(url, pool_pre_ping=True, **pool)

    def now(self) -> sa.ColumnElement[float]:
        """The database server's clock (:func:`database_now`)."""
        return database_now(self.engine)

    def create(self, metadata: sa.MetaData, table: str) -> None:
        """Create ``metadata``'s tables when missing (several processes may race to do it)."""

        def create() -> None:
            try:
                metadata.create_all(self.engine, checkfirst=True)
            except (exc.IntegrityError, exc.ProgrammingError, exc.OperationalError):
                # Another process created it between the check and the creation (PostgreSQL reports an
                # integrity or programming error, SQLite an operational one).
                if not sa.inspect(self.engine).has_table(table):
                    raise

        self.retrying(create, what=f"the {table} table")

    def retrying(self, call: Callable[[], _T], *, what: str = "the study's database") -> _T:
        """``call()``, retried while the database cannot be reached, for at most ``retry_seconds``."""
        started, wait = self._clock(), _FIRST_WAIT
        while True:
            try:
                return call()
            except Exception as raised:  # Optuna wraps a failed commit (StorageInternalError): look inside
                error = _database_error(raised)
                if error is None or not transient(error):
                    raise
                waited = self._clock() - started
                if waited + wait > self.retry_seconds:
                    url = self.engine.url.render_as_string(hide_password=True)
                    raise StorageUnavailableError(
                        f"{what} ({url}) could not be reached for {waited:.1f} s (the grace period is "
                        f"{self.retry_seconds:g} s): {error.orig or error}. Check that the database server "
                        "runs and accepts connections, then resume the study."
                    ) from error
                self._sleep(wait)
                wait = min(2 * wait, _LONGEST_WAIT)

    def close(self) -> None:
        """Close the connection."""
        self.engine.dispose()


def database_now(engine: sa.Engine) -> sa.ColumnElement[float]:
    """The clock of ``engine``'s database server in seconds since the epoch, as an SQL expression: every
    machine of a study compares heartbeats on this one clock, never its own."""
    if engine.dialect.name == "sqlite":
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)
    return sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Float)


def server_database(url: str) -> bool:
    """Whether ``url`` is a database server's (PostgreSQL, MySQL...), which processes on other machines can
    share; a SQLite file cannot be."""
    return not url.startswith("sqlite")


def _database_error(error: BaseException) -> exc.DBAPIError | None:
    """The connection-level database error ``error`` is or was raised from (Optuna re-raises a failed
    commit as its own ``StorageInternalError``), or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, exc.OperationalError | exc.InterfaceError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def transient(error: exc.DBAPIError) -> bool:
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
