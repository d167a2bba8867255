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
marked FAIL with the reason ``interrupted`` and enqueued again with the same parameters
(:func:`~tunelab.storage.retry_interrupted`). Write-behind assumes
one process per study (it owns the trial numbering); for several workers sharing a database, pass
``WriteBehind(url, enabled=False)`` or an Optuna storage object, which writes every change directly.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import optuna
from optuna.distributions import distribution_to_json
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tunelab.clock import Clock, system_clock
from tunelab.errors import SpecError
from tunelab.storage._trials import retry_interrupted
from tunelab.storage._urls import connect_storage, hide_password, in_memory_copy

__all__ = ["StudyBackend", "WriteBehind", "open_backend"]

Direction = Literal["minimize", "maximize"]


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
                    self.study = in_memory_copy(self.study)
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
        clock: Clock = system_clock,
    ) -> None:
        self._config = config
        self._clock = clock
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
        # Write-behind owns the study (one process), so a trial still RUNNING was interrupted: retried.
        retried = retry_interrupted(rdb_study)
        memory = optuna.create_study(
            storage=InMemoryStorage(), study_name=study_name, directions=list(directions), sampler=sampler
        )
        existing = self._rdb.get_all_trials(self._rdb_study_id)
        memory.add_trials(existing)  # the retries too: WAITING, with their fixed parameters
        # add_trials keeps the order, so memory trial i is database trial number i.
        self._ids = {memory.trials[i]._trial_id: t._trial_id for i, t in enumerate(existing)}
        super().__init__(memory, retried=retried)
        self._dirty: set[int] = set()
        self._n_finished_pending = 0
        self._last_flush = self._clock.monotonic()

    def touch(self, number: int, *, finished: bool = False) -> None:
        self._dirty.add(
            self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        )
        self._n_finished_pending += finished
        if (
            self._n_finished_pending >= self._config.flush_every
            or self._clock.monotonic() - self._last_flush >= self._config.flush_interval_s
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
        self._last_flush = self._clock.monotonic()

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
    clock: Clock = system_clock,
) -> StudyBackend:
    """Open (or create) the study ``study_name`` in ``storage``; see the module docstring for the choices.
    ``clock`` times write-behind's ``flush_interval_s``."""
    if isinstance(storage, str):
        storage = WriteBehind(storage, enabled=storage.startswith("sqlite:///"))
    if isinstance(storage, WriteBehind):
        if storage.flush_every < 1 or storage.flush_interval_s < 0:
            raise SpecError(
                f"needs flush_every >= 1 and flush_interval_s >= 0; got {storage.flush_every} and "
                f"{storage.flush_interval_s}."
            )
        if storage.enabled:
            return _WriteBehindBackend(
                storage, study_name=study_name, directions=directions, sampler=sampler, clock=clock
            )
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
