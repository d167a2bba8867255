"""Where a study lives: in memory, in a database written directly, or in memory with write-behind to SQLite.

Write-behind (the default for ``sqlite:///`` URLs): the study runs on Optuna's in-memory storage, so the
sampler and every ``suggest``/``report`` cost microseconds instead of a database round trip each (Optuna's RDB
storage opens a session and commits for every parameter, report and attribute: tens of milliseconds per trial
on SQLite). Touched trials (new, reported, finished) are copied to the database when ``flush_every`` trials
have finished or ``flush_interval_s`` seconds have passed since the last flush, whichever comes first, and
always when the study ends (normally or by an exception, Ctrl-C included). The database is an ordinary Optuna
study: Optuna's API and optuna-dashboard open it.

The trade-off, honestly: a hard kill (kill -9, power loss) loses what happened since the last flush, at most
``flush_every`` trials or ``flush_interval_s`` seconds of work. A trial that runs longer than
``flush_interval_s`` is written while it runs (at its next report), so on resume it is found as RUNNING: it is
marked FAIL with the reason ``interrupted`` and enqueued again with the same parameters. Write-behind assumes
one process per study (it owns the trial numbering); for several workers sharing a database, pass
``WriteBehind(url, enabled=False)`` or an Optuna storage object, which writes every change directly.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import distribution_to_json
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tunelab.errors import SpecError
from tunelab.search.schedulers import Direction

__all__ = [
    "StudyBackend",
    "WriteBehind",
    "connect_storage",
    "connected_storage",
    "hide_password",
    "open_backend",
    "opened_study",
    "password_hidden",
    "study_snapshot",
]

HIDDEN_PASSWORD = "***"  # what SQLAlchemy's render_as_string(hide_password=True) writes instead
INTERRUPTED = "interrupted: the trial was running when the previous run of this study stopped"


@dataclass(frozen=True)
class WriteBehind:
    """A database URL with write-behind settings (see the module docstring)."""

    url: str
    flush_every: int = 64
    flush_interval_s: float = 2.0
    enabled: bool = True


class StudyBackend:
    """The Optuna study the loop asks and tells, plus the bookkeeping that keeps a database copy current.

    ``owned`` is a database storage this backend opened from a URL, so :meth:`close` closes its connections
    (Optuna never does: an engine left to the garbage collector keeps a database connection open until then).
    A storage object the caller passed in is the caller's to close.
    """

    def __init__(
        self,
        study: optuna.Study,
        *,
        retried: Sequence[int] = (),
        shared: bool = False,
        owned: RDBStorage | None = None,
    ) -> None:
        self.study = study
        self.retried = list(retried)  # numbers of interrupted trials enqueued again
        self.shared = shared  # other processes may write to the same storage
        self._owned = owned

    def touch(self, number: int, *, finished: bool = False) -> None:
        """Trial ``number`` changed (created, reported, or ``finished``)."""

    def flush(self) -> None:
        """Write every change so far to durable storage."""

    def close(self) -> None:
        """Write every change, then close the connections of an owned database.

        ``study`` stays readable afterwards (the loop summarizes it): when it lived in that database, it is
        replaced by a copy in memory of the study as it is now, so reading it opens no new connection.
        """
        try:
            self.flush()
            if self._owned is not None:
                with contextlib.suppress(
                    Exception
                ):  # the database failed: keep the live study, and its error
                    self.study = _in_memory_copy(self.study)
        finally:
            if self._owned is not None:
                self._owned.engine.dispose()
                self._owned = None


class _WriteBehindBackend(StudyBackend):
    def __init__(
        self,
        config: WriteBehind,
        *,
        study_name: str,
        directions: Sequence[Direction],
        sampler: optuna.samplers.BaseSampler,
    ) -> None:
        self._config = config
        self._rdb = connect_storage(config.url)
        try:
            self._open(study_name, directions, sampler)
        except BaseException:
            self._rdb.engine.dispose()
            raise

    def _open(
        self, study_name: str, directions: Sequence[Direction], sampler: optuna.samplers.BaseSampler
    ) -> None:
        config = self._config
        rdb_study = optuna.create_study(
            storage=self._rdb,
            study_name=study_name,
            directions=list(directions),
            sampler=optuna.samplers.RandomSampler(seed=0),  # never asked; avoids building a default TPE
            load_if_exists=True,
        )
        _check_directions(rdb_study, directions, study_name, hide_password(config.url))
        self._rdb_study_id = rdb_study._study_id
        stale = [t for t in self._rdb.get_all_trials(self._rdb_study_id) if t.state == TrialState.RUNNING]
        for trial in stale:
            self._rdb.set_trial_user_attr(trial._trial_id, "fail_reason", INTERRUPTED)
            self._rdb.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        memory = optuna.create_study(
            storage=InMemoryStorage(), study_name=study_name, directions=list(directions), sampler=sampler
        )
        existing = self._rdb.get_all_trials(self._rdb_study_id)
        memory.add_trials(existing)
        # add_trials keeps the order, so memory trial i is database trial number i.
        self._ids = {memory.trials[i]._trial_id: t._trial_id for i, t in enumerate(existing)}
        for trial in stale:
            memory.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        super().__init__(memory, retried=[t.number for t in stale])
        self._dirty: set[int] = {t._trial_id for t in memory.trials if t.state == TrialState.WAITING}
        self._n_finished_pending = 0
        self._last_flush = time.monotonic()

    def touch(self, number: int, *, finished: bool = False) -> None:
        self._dirty.add(
            self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        )
        self._n_finished_pending += finished
        if (
            self._n_finished_pending >= self._config.flush_every
            or time.monotonic() - self._last_flush >= self._config.flush_interval_s
        ):
            self.flush()

    def close(self) -> None:
        """Write the last changes, then close the database's connections; the study stays in memory."""
        try:
            self.flush()
        finally:
            self._rdb.engine.dispose()

    def flush(self) -> None:
        storage = self.study._storage
        new: list[FrozenTrial] = []
        for memory_id in sorted(self._dirty):
            trial = storage.get_trial(memory_id)
            rdb_id = self._ids.get(memory_id)
            if rdb_id is None:
                new.append(trial)
            else:
                self._update(rdb_id, trial)
        if new:
            rdb_ids = _insert_trials(self._rdb, self._rdb_study_id, new)
            self._ids.update((t._trial_id, rdb_id) for t, rdb_id in zip(new, rdb_ids, strict=True))
        self._dirty.clear()
        self._n_finished_pending = 0
        self._last_flush = time.monotonic()

    def _update(self, rdb_id: int, trial: FrozenTrial) -> None:
        """Bring a trial already in the database (written while it ran) up to date."""
        old = self._rdb.get_trial(rdb_id)
        if old.state.is_finished():
            return
        if old.state == TrialState.WAITING and trial.state != TrialState.WAITING:
            self._rdb.set_trial_state_values(rdb_id, TrialState.RUNNING)
        for name, value in trial.params.items():
            if name not in old.params:
                dist = trial.distributions[name]
                self._rdb.set_trial_param(rdb_id, name, dist.to_internal_repr(value), dist)
        for step, value in trial.intermediate_values.items():
            if step not in old.intermediate_values:
                self._rdb.set_trial_intermediate_value(rdb_id, step, value)
        for key, value in trial.user_attrs.items():
            if old.user_attrs.get(key, _MISSING) != value:
                self._rdb.set_trial_user_attr(rdb_id, key, value)
        for key, value in trial.system_attrs.items():
            if old.system_attrs.get(key, _MISSING) != value:
                self._rdb.set_trial_system_attr(rdb_id, key, value)
        if trial.state.is_finished():
            self._rdb.set_trial_state_values(rdb_id, trial.state, trial.values)


_MISSING: Any = object()


def _insert_trials(rdb: RDBStorage, study_id: int, trials: Sequence[FrozenTrial]) -> list[int]:
    """Insert finished or running trials in one transaction; their database ids, in order.

    Optuna's public ``create_new_trial(template_trial=...)`` opens a transaction and runs about ten
    statements per trial (~25 ms on SQLite); this writes the same rows through Optuna's own ORM models in one
    commit. The models are a private module, so tests read every field back through ``optuna.load_study``
    to catch schema changes.
    """
    from optuna.storages._rdb import models

    rows = []
    for trial in trials:
        row = models.TrialModel(
            number=trial.number,  # write-behind owns the numbering: the database keeps the memory numbers
            study_id=study_id,
            state=trial.state,
            datetime_start=trial.datetime_start,
            datetime_complete=trial.datetime_complete,
        )
        row.params = [
            models.TrialParamModel(
                param_name=name,
                param_value=trial.distributions[name].to_internal_repr(value),
                distribution_json=distribution_to_json(trial.distributions[name]),
            )
            for name, value in trial.params.items()
        ]
        row.values = [
            models.TrialValueModel(objective=i, value=stored, value_type=kind)
            for i, value in enumerate(trial.values or ())
            for stored, kind in [models.TrialValueModel.value_to_stored_repr(value)]
        ]
        row.intermediate_values = [
            models.TrialIntermediateValueModel(
                step=step, intermediate_value=stored, intermediate_value_type=kind
            )
            for step, value in trial.intermediate_values.items()
            for stored, kind in [models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)]
        ]
        row.user_attributes = [
            models.TrialUserAttributeModel(key=key, value_json=json.dumps(value))
            for key, value in trial.user_attrs.items()
        ]
        row.system_attributes = [
            models.TrialSystemAttributeModel(key=key, value_json=json.dumps(value))
            for key, value in trial.system_attrs.items()
        ]
        rows.append(row)
    session = rdb.scoped_session()
    try:
        session.add_all(rows)
        session.flush()  # assigns the ids; reading them after commit would reload every row
        ids: list[int] = [int(row.trial_id) for row in rows]
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return ids


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
            f"cannot open the study storage {_shown(url)}: {_sentence(str(err))} Check the URL's scheme "
            "(dialect+driver, e.g. sqlite:///study.db or postgresql+psycopg://user:password@host/db) and "
            "that its driver is installed (pip install 'tunelab[postgres]' for PostgreSQL)."
        ) from None
    except DBAPIError as err:
        shown = _shown(url)
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


def _shown(url: str) -> str:
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
        return _in_memory_copy(study)


def _in_memory_copy(study: optuna.Study) -> optuna.Study:
    """``study`` (directions, attributes, trials with their numbers) copied to Optuna's in-memory storage."""
    memory = InMemoryStorage()
    optuna.copy_study(from_study_name=study.study_name, from_storage=study._storage, to_storage=memory)
    return optuna.load_study(study_name=study.study_name, storage=memory)


def _check_directions(study: optuna.Study, directions: Sequence[Direction], name: str, where: str) -> None:
    wanted = [StudyDirection.MAXIMIZE if d == "maximize" else StudyDirection.MINIMIZE for d in directions]
    if list(study.directions) != wanted:
        have = [d.name.lower() for d in study.directions]
        raise SpecError(
            f"the study '{name}' in {where} was created with directions {have}, but this run asks for "
            f"{list(directions)}; use another study name, or the directions it was made with."
        )


def open_backend(
    storage: str | WriteBehind | BaseStorage | None,
    *,
    study_name: str,
    directions: Sequence[Direction],
    sampler: optuna.samplers.BaseSampler,
) -> StudyBackend:
    """Open (or create) the study ``study_name`` in ``storage``; see the module docstring for the choices."""
    if isinstance(storage, str):
        storage = WriteBehind(storage, enabled=storage.startswith("sqlite:///"))
    if isinstance(storage, WriteBehind):
        if storage.flush_every < 1 or storage.flush_interval_s < 0:
            raise SpecError(
                f"needs flush_every >= 1 and flush_interval_s >= 0; got {storage.flush_every} and "
                f"{storage.flush_interval_s}."
            )
        if storage.enabled:
            return _WriteBehindBackend(storage, study_name=study_name, directions=directions, sampler=sampler)
        owned = connect_storage(storage.url)
        try:
            study = optuna.create_study(
                storage=owned,
                study_name=study_name,
                directions=list(directions),
                sampler=sampler,
                load_if_exists=True,
            )
            _check_directions(study, directions, study_name, hide_password(storage.url))
        except BaseException:
            owned.engine.dispose()
            raise
        return StudyBackend(study, shared=True, owned=owned)
    if storage is not None and not isinstance(storage, BaseStorage):
        raise SpecError(
            f"storage must be None (in memory), a URL such as 'sqlite:///study.db', a WriteBehind, or an "
            f"Optuna storage; got {type(storage).__name__}."
        )
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        directions=list(directions),
        sampler=sampler,
        load_if_exists=storage is not None,
    )
    _check_directions(study, directions, study_name, "the storage")
    return StudyBackend(study, shared=storage is not None)
