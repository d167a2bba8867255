"""Study storage URLs: open a database storage with a clear error, hide a URL's password, read a snapshot.

Optuna's database storage is opened from a SQLAlchemy URL (``sqlite:///study.db``,
``postgresql+psycopg://user:password@host/db``). Optuna never closes the engine of a storage it builds from a
URL, so every function here that opens one closes it again before it returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import optuna
from optuna.storages import InMemoryStorage, RDBStorage

from tunelab.errors import SpecError

__all__ = [
    "HIDDEN_PASSWORD",
    "connect_storage",
    "connected_storage",
    "hide_password",
    "in_memory_copy",
    "opened_study",
    "password_hidden",
    "shown_url",
    "study_snapshot",
]

HIDDEN_PASSWORD = "***"  # what SQLAlchemy's render_as_string(hide_password=True) writes instead


def connect_storage(url: str) -> RDBStorage:
    """Optuna's database storage at ``url`` (tables created if new).

    A database that cannot be opened (server down, wrong host or port, refused login, no such database, no
    right to create tables, an SQLite file in a missing folder) is the user's to fix, so it is a
    :class:`SpecError` naming the URL, password hidden, and the driver's reason, instead of SQLAlchemy's
    traceback.
    """
    from sqlalchemy.exc import ArgumentError, DBAPIError

    try:
        return RDBStorage(url)
    except (ArgumentError, ImportError) as err:  # an unknown dialect (postgres://), a driver not installed
        raise SpecError(
            f"cannot open the study storage {shown_url(url)}: {_sentence(str(err))} Check the URL's scheme "
            "(dialect+driver, e.g. sqlite:///study.db or postgresql+psycopg://user:password@host/db) and "
            "that its driver is installed (pip install 'tunelab[postgres]' for PostgreSQL)."
        ) from None
    except DBAPIError as err:
        shown = shown_url(url)
        reason = _sentence(str(err.orig))  # the driver's message
        raise SpecError(
            f"cannot open the study storage {shown}: {reason} For a database server, check that it is "
            "running and reachable at that host and port, and that the URL's user, password and database "
            "exist (create the database first, e.g. `createdb NAME` for PostgreSQL); for SQLite, that the "
            "file's folder exists and is writable."
        ) from None


def hide_password(url: str) -> str:
    """``url`` with its password, if it has one, shown as ``***``: the form to print or write to a file.

    A URL without a password comes back unchanged (character for character: SQLite paths are not re-quoted).
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def shown_url(url: str) -> str:
    """``url`` to print: password hidden, or only its scheme when SQLAlchemy cannot parse it."""
    from sqlalchemy.exc import ArgumentError

    try:
        return hide_password(url)
    except ArgumentError:
        return url.split("://", 1)[0] + "://..." if "://" in url else url


def _sentence(message: str) -> str:
    """``message`` on one line, ending in a full stop."""
    message = " ".join(message.split())
    return message if message.endswith((".", "?", "!")) else message + "."


def password_hidden(url: str) -> bool:
    """Whether ``url`` is one :func:`hide_password` wrote (its password is ``***``), so cannot log in."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password == HIDDEN_PASSWORD
    except ArgumentError:
        return False


@contextlib.contextmanager
def connected_storage(url: str) -> Iterator[RDBStorage]:
    """Optuna's storage at ``url`` (:func:`connect_storage`), its database connections closed on exit.

    Optuna never closes the engine of a storage it builds from a URL, so each ``optuna.load_study(url)``
    would leave a connection open (to a database server, until the garbage collector runs).
    """
    storage = connect_storage(url)
    try:
        yield storage
    finally:
        storage.engine.dispose()


@contextlib.contextmanager
def opened_study(url: str, name: str) -> Iterator[optuna.Study]:
    """The study ``name`` at ``url``, to read and write inside the ``with`` block; closed on exit.

    Raises ``KeyError`` when the storage holds no study of that name (as ``optuna.load_study`` does).
    """
    with connected_storage(url) as storage:
        yield optuna.load_study(study_name=name, storage=storage)


def study_snapshot(url: str, name: str) -> optuna.Study:
    """A copy in memory of the study ``name`` at ``url`` as it is now, its database connection closed: for
    reading a finished study (selection, summary, report) without holding a connection open.

    Raises ``KeyError`` when the storage holds no study of that name.
    """
    with opened_study(url, name) as study:
        return in_memory_copy(study)


def in_memory_copy(study: optuna.Study) -> optuna.Study:
    """``study`` (directions, attributes, trials with their numbers) copied to Optuna's in-memory storage."""
    memory = InMemoryStorage()
    optuna.copy_study(from_study_name=study.study_name, from_storage=study._storage, to_storage=memory)
    return optuna.load_study(study_name=study.study_name, storage=memory)
