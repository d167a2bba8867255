"""``RetryingStorage``: Optuna's storage with every call retried through a database outage.

A worker of a distributed study must survive its database going away for a while (a restart, a network
cut): each call of Optuna's storage that fails to reach the database (a refused, dropped or terminated
connection) is retried with doubling waits by :meth:`StudyDatabase.retrying`, as tunelab's own lease and
artifact calls are, for up to its ``retry_seconds``; other errors pass through at once. A call that committed
but whose answer was lost may be retried once more: the ones that matter are safe (a report or attribute is
written again; a state already set raises ``UpdateFinishedTrialError``, which the study loop treats as the
trial ended elsewhere; a trial created twice is a RUNNING trial no lease holds, which
:func:`~tunelab.storage.fail_orphans` ends).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optuna.storages import BaseStorage, RDBStorage

from tunelab.storage._database import StudyDatabase

__all__ = ["RetryingStorage", "cached", "open_shared_storage", "retrying"]


def cached(storage: RDBStorage) -> BaseStorage:
    """``storage`` behind Optuna's cache of finished trials, as ``optuna.create_study`` would put it (so a
    study of thousands of trials reads only its new ones)."""
    try:
        from optuna.storages._cached_storage import _CachedStorage
    except ImportError:  # another Optuna: uncached, slower but the same
        return storage
    return _CachedStorage(storage)


class RetryingStorage(BaseStorage):
    """``inner`` (an Optuna storage on ``database``'s server), each call retried through outages."""

    def __init__(self, inner: BaseStorage, database: StudyDatabase) -> None:
        self._inner, self._database = inner, database

    def __getattr__(self, name: str) -> Any:  # what BaseStorage does not declare (RDB's engine...)
        return getattr(self._inner, name)


def _retried(name: str) -> Callable[..., Any]:
    def call(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self._inner, name)
        return self._database.retrying(lambda: method(*args, **kwargs), what="the study's database")

    call.__name__ = name
    return call


for _name in [n for n in dir(BaseStorage) if not n.startswith("_")]:
    setattr(RetryingStorage, _name, _retried(_name))
RetryingStorage.__abstractmethods__ = frozenset()


def open_shared_storage(url: str, database: StudyDatabase) -> tuple[RDBStorage, RetryingStorage]:
    """Optuna's storage at ``url`` for one process of a distributed study: opened through outages (waiting
    up to ``database``'s retry time), its schema check's second connection closed (that check holds two at
    once and leaves both in the pool; from then on Optuna asks for one at a time, so with ``database``'s own
    the process holds two), cached, and every call retried. Returns the RDB storage (to dispose of) and the
    wrapped one. Open it before ``database`` connects, so the two never overlap with the check's pair."""
    from tunelab.storage._urls import connect_storage

    rdb = database.retrying(lambda: connect_storage(url))
    rdb.engine.dispose()
    return rdb, retrying(cached(rdb), database)


def retrying(inner: BaseStorage, database: StudyDatabase) -> RetryingStorage:
    """``inner`` with every call retried through outages of ``database``'s server."""
    return RetryingStorage(inner, database)  # type: ignore[abstract]  # every method is set above
