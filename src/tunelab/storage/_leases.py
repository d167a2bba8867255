"""Leases: which worker runs which trial, kept alive by heartbeats, and taken back when a worker dies.

Several workers (``tunelab worker`` processes, Ray actors, ``--workers N``) on one study database each hold a
lease per trial they run, in the ``tunelab_leases`` table beside Optuna's: the trial, an attempt id (new for
every start of a trial), the worker, its node, the last heartbeat on the database server's clock, and a state:

- ``held`` while the worker trains the trial; a :class:`Heartbeat` thread renews every lease of its process
  in one transaction every few seconds (:meth:`LeaseBook.beat`);
- ``telling`` once the worker has taken its result to the study (a compare-and-set from ``held`` on its own
  attempt), ``finished`` after Optuna stored it (written with the next heartbeat);
- ``reclaimed`` when another process took the trial back (:func:`reclaim`): its worker was reported dead (a
  Ray actor whose call failed) or its heartbeat is older than the grace period.

Exactly once: a worker tells a result only after it won ``held -> telling``; a reclaimer fails and re-queues a
trial only after it won ``held/telling -> reclaimed`` on the attempt it saw. Both are one UPDATE on one row
with the attempt in its WHERE clause, so at most one of them wins; the loser drops its result (or its
reclaim) quietly. A retried trial is enqueued with the user attributes ``retry_of`` (the interrupted trial),
``retries`` and ``resume_from`` (the checkpoint its executor recorded as ``checkpoint``), so it continues
from the interrupted trial's last checkpoint on whichever worker asks for it next; after ``max_failures``
retries a trial fails for good.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import optuna
import sqlalchemy as sa
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from tunelab.storage._database import StorageUnavailableError, StudyDatabase, database_now

__all__ = [
    "LEASE_TABLE",
    "ORPHAN",
    "Heartbeat",
    "Lease",
    "LeaseBook",
    "Leasing",
    "fail_orphans",
    "reclaim",
    "stored_leases",
]

LEASE_TABLE = "tunelab_leases"
_LIVE = ("held", "telling")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    """One row of the lease table: a trial's current (or last) attempt."""

    trial_id: int
    number: int
    attempt: str
    worker: str
    node: str
    heartbeat: float  # the database's clock, seconds since the epoch
    state: str
    age_s: float = 0.0  # seconds since the heartbeat, when read with one


def _table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        LEASE_TABLE,
        metadata,
        sa.Column("trial_id", sa.Integer, primary_key=True),  # Optuna's trial_id: unique in the database
        sa.Column("study", sa.String(512), nullable=False, index=True),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("attempt", sa.String(64), nullable=False),
        sa.Column("worker", sa.String(255), nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("heartbeat", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
    )


class LeaseBook:
    """The leases of one worker process (``worker``, on ``node``) in ``study``, through ``database``.

    :meth:`acquire` when a trial starts, :meth:`beat` (from a :class:`Heartbeat` thread), :meth:`tell` before
    the result goes to the study and :meth:`finished` after. Thread-safe: the heartbeat thread and the
    training thread share it.

    ``grace_s``: a lease whose heartbeat is older than this is no longer this worker's to renew or tell,
    even before anyone took it back (its worker could not reach the database for that long, so others may
    already treat it as dead): it is then taken back exactly once, by whichever process looks first.
    """

    def __init__(
        self, database: StudyDatabase, *, study: str, worker: str, node: str, grace_s: float | None = None
    ) -> None:
        self.database, self.study, self.worker, self.node = database, study, worker, node
        self.grace_s = grace_s
        metadata = sa.MetaData()
        self.table = _table(metadata)
        database.create(metadata, LEASE_TABLE)
        self._held: dict[int, str] = {}  # trial_id -> attempt
        self._told: dict[int, str] = {}  # told trials whose lease the next beat marks finished
        self._lost: set[int] = set()
        self._lock = threading.Lock()

    # -- this worker's leases --
    def acquire(self, trials: Sequence[tuple[int, int]]) -> None:
        """Lease the trials ``(trial_id, number)`` this worker is about to run, in one transaction."""
        if not trials:
            return
        attempts = {trial_id: uuid.uuid4().hex for trial_id, _ in trials}
        rows = [
            {
                "trial_id": trial_id,
                "study": self.study,
                "number": number,
                "attempt": attempts[trial_id],
                "worker": self.worker,
                "node": self.node,
                "state": "held",
            }
            for trial_id, number in trials
        ]

        def insert() -> None:
            with self.database.engine.begin() as connection:
                now = connection.execute(sa.select(self.database.now())).scalar_one()
                connection.execute(sa.insert(self.table), [{**row, "heartbeat": now} for row in rows])

        self.database.retrying(insert, what="the lease table")
        with self._lock:
            self._held.update(attempts)

    def beat(self) -> set[int]:
        """Renew every lease this worker holds, in one transaction; the trial ids whose lease another process
        took meanwhile (they are dropped from the book, and :meth:`lost` says so)."""
        with self._lock:
            held, told = dict(self._held), dict(self._told)
        if not held and not told:
            return set()
        t = self.table

        def renew() -> set[int]:
            with self.database.engine.begin() as connection:
                for trial_id, attempt in told.items():  # the results told since the last beat
                    connection.execute(
                        sa.update(t)
                        .where(t.c.trial_id == trial_id, t.c.attempt == attempt, t.c.state == "telling")
                        .values(state="finished")
                    )
                if not held:
                    return set()
                connection.execute(
                    sa.update(t)
                    .where(
                        t.c.trial_id.in_(held),
                        t.c.worker == self.worker,
                        t.c.state.in_(_LIVE),
                        *self._fresh(),
                    )
                    .values(heartbeat=self.database.now())
                )
                rows = connection.execute(
                    sa.select(t.c.trial_id, t.c.attempt, t.c.state).where(t.c.trial_id.in_(held))
                ).all()
            ours = {r.trial_id for r in rows if r.attempt == held[r.trial_id] and r.state in _LIVE}
            return set(held) - ours

        lost = self.database.retrying(renew, what="the lease table")
        with self._lock:
            for trial_id in told:
                self._told.pop(trial_id, None)
            for trial_id in lost:
                self._held.pop(trial_id, None)
            self._lost |= lost
        return lost

    def lost(self, trial_id: int) -> bool:
        """Whether another process took this worker's lease on ``trial_id`` (seen by a beat or a tell)."""
        with self._lock:
            return trial_id in self._lost

    def tell(self, trial_id: int) -> bool:
        """Take the right to tell ``trial_id``'s result (``held -> telling`` on this worker's attempt): False
        when the lease was taken back, and then the result must be dropped. A trial this book never leased
        is told as always (True)."""
        with self._lock:
            attempt = self._held.get(trial_id)
            if attempt is None:
                return trial_id not in self._lost
        won = self._move(trial_id, attempt, ("held",), "telling", fresh=True)
        if not won:
            with self._lock:
                self._held.pop(trial_id, None)
                self._lost.add(trial_id)
        return won

    def finished(self, trial_id: int) -> None:
        """The study stored ``trial_id``'s result: its lease ends (``telling -> finished``), written with the
        next :meth:`beat` (one transaction for every lease, not one more per trial)."""
        with self._lock:
            attempt = self._held.pop(trial_id, None)
            if attempt is not None:
                self._told[trial_id] = attempt

    # -- every worker's --
    def leases(self, *, states: Iterable[str] = _LIVE, worker: str | None = None) -> list[Lease]:
        """The study's leases in ``states`` (of one ``worker``), with their heartbeats' age."""
        t = self.table
        query = sa.select(t, (self.database.now() - t.c.heartbeat).label("age_s")).where(
            t.c.study == self.study, t.c.state.in_(tuple(states))
        )
        if worker is not None:
            query = query.where(t.c.worker == worker)

        def read() -> list[Lease]:
            with self.database.engine.connect() as connection:
                return [
                    Lease(r.trial_id, r.number, r.attempt, r.worker, r.node, r.heartbeat, r.state, r.age_s)
                    for r in connection.execute(query.order_by(t.c.number)).all()
                ]

        return self.database.retrying(read, what="the lease table")

    def known(self, trial_ids: Sequence[int]) -> set[int]:
        """Which of ``trial_ids`` the lease table holds (in any state)."""
        if not trial_ids:
            return set()
        t = self.table

        def read() -> set[int]:
            with self.database.engine.connect() as connection:
                query = sa.select(t.c.trial_id).where(t.c.trial_id.in_(list(trial_ids)))
                return {int(r.trial_id) for r in connection.execute(query).all()}

        return self.database.retrying(read, what="the lease table")

    def stale(self, grace_s: float) -> list[Lease]:
        """Live leases whose heartbeat is older than ``grace_s`` seconds (their worker stopped beating)."""
        return [lease for lease in self.leases() if lease.age_s > grace_s]

    def take(self, lease: Lease) -> bool:
        """Take ``lease`` back (``-> reclaimed``) if it is still the attempt and state it was read in."""
        return self._move(lease.trial_id, lease.attempt, (lease.state,), "reclaimed")

    def _fresh(self) -> list[sa.ColumnElement[bool]]:
        """The condition that a lease's heartbeat is within the grace period (none without one)."""
        if self.grace_s is None:
            return []
        return [self.table.c.heartbeat > self.database.now() - self.grace_s]

    def _move(
        self, trial_id: int, attempt: str, before: Sequence[str], after: str, *, fresh: bool = False
    ) -> bool:
        t = self.table
        conditions = [t.c.trial_id == trial_id, t.c.attempt == attempt, t.c.state.in_(tuple(before))]
        if fresh:
            conditions += self._fresh()

        def update() -> bool:
            with self.database.engine.begin() as connection:
                result = connection.execute(
                    sa.update(t).where(*conditions).values(state=after, heartbeat=self.database.now())
                )
                return int(result.rowcount) == 1

        return self.database.retrying(update, what="the lease table")


def reclaim(
    study: optuna.Study, book: LeaseBook, leases: Iterable[Lease], *, why: str, max_failures: int
) -> list[int]:
    """Take ``leases`` back and end their trials as interrupted: each is failed with the reason and, unless
    it was retried ``max_failures`` times already, enqueued again (``retry_of``, ``retries``,
    ``resume_from``). Returns the numbers of the trials this call took back (another process may take some
    first; a trial whose worker told its result first stays as it was)."""
    storage, taken = study._storage, []
    for lease in leases:
        if not book.take(lease):
            continue
        trial = storage.get_trial(lease.trial_id)
        if trial.state != TrialState.RUNNING:
            continue  # its worker told it just before (the lease was "telling")
        retries = int(trial.user_attrs.get("retries", 0))
        again = retries < max_failures
        reason = f"interrupted: {why} (worker {lease.worker} on {lease.node}); " + (
            f"retried as a new trial (retry {retries + 1} of {max_failures})"
            if again
            else f"not retried: it failed {retries + 1} times (max_failures {max_failures})"
        )
        try:
            if lease.state == "held":  # its worker cannot tell any more: the attribute goes first
                storage.set_trial_user_attr(lease.trial_id, "fail_reason", reason)
            storage.set_trial_state_values(lease.trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue
        taken.append(trial.number)
        if again:
            study.enqueue_trial(
                trial.params,
                user_attrs={
                    "retry_of": trial.number,
                    "retries": retries + 1,
                    "resume_from": trial.user_attrs.get("checkpoint"),
                },
            )
    return taken


ORPHAN = "never started: created while the database was out of reach, and held by no worker"


def fail_orphans(
    study: optuna.Study,
    book: LeaseBook,
    *,
    older_than_s: float,
    trials: Sequence[FrozenTrial] | None = None,
) -> list[int]:
    """RUNNING trials that no lease ever held, started more than ``older_than_s`` seconds ago: created by an
    ask whose answer an outage lost (a retried call), so no worker runs them. Each is failed with the user
    attribute ``never_started`` (it is not counted as a configuration, :class:`StudyCounts`); returns their
    numbers. ``trials``: the study's trials as just read (read here when None)."""
    now = dt.datetime.now()
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    old = [
        trial
        for trial in trials
        if trial.state == TrialState.RUNNING
        and trial.datetime_start is not None
        and (now - trial.datetime_start).total_seconds() > older_than_s
    ]
    if not old:
        return []
    known = book.known([trial._trial_id for trial in old])
    storage, orphans = study._storage, []
    for trial in old:
        if trial._trial_id in known:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "never_started", ORPHAN)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue
        orphans.append(trial.number)
    return orphans


class Heartbeat:
    """A daemon thread that renews ``book``'s leases every ``interval_s`` seconds until :meth:`stop`.

    An unreachable database (past the book's retries) is logged and tried again next interval: a worker never
    dies of an outage; its leases may be taken back meanwhile, which its next beat or tell finds out.
    """

    def __init__(self, book: LeaseBook, interval_s: float) -> None:
        self.book, self.interval_s = book, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tunelab-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating, after one last beat (it records the leases finished since the last one)."""
        self._stop.set()
        self._thread.join()
        try:
            self.book.beat()
        except (StorageUnavailableError, sa.exc.SQLAlchemyError) as error:
            _log.warning("heartbeat: %s", error)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.book.beat()
            except (StorageUnavailableError, sa.exc.SQLAlchemyError) as error:
                _log.warning("heartbeat: %s", error)


@dataclass(frozen=True)
class Leasing:
    """How a study loop leases its trials: ``book`` (this worker's), the heartbeat ``grace_s`` after which
    a silent worker's trials are taken back, ``max_failures`` retries per trial, and ``poll_s``: how often a
    worker with nothing to start (every remaining trial runs elsewhere) looks again."""

    book: LeaseBook
    grace_s: float = 20.0
    max_failures: int = 3
    poll_s: float = 0.5

    @property
    def heartbeat_s(self) -> float:
        """A beat every quarter of the grace period (0.2 to 5 s): three may be lost before a reclaim."""
        return min(5.0, max(0.2, self.grace_s / 4))


def stored_leases(engine: sa.Engine, study: str) -> list[Lease] | None:
    """Every lease of ``study`` in the database of ``engine``, reading only (``tunelab status``): None when
    it has no lease table. Ages are read on the database's clock."""
    if not sa.inspect(engine).has_table(LEASE_TABLE):
        return None
    t = _table(sa.MetaData())
    query = (
        sa.select(t, (database_now(engine) - t.c.heartbeat).label("age_s"))
        .where(t.c.study == study)
        .order_by(t.c.number)
    )
    with engine.connect() as connection:
        return [
            Lease(r.trial_id, r.number, r.attempt, r.worker, r.node, r.heartbeat, r.state, r.age_s)
            for r in connection.execute(query).all()
        ]
