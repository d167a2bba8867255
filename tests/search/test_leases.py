"""Leases (issue #17): a lease per running trial in the study's database, renewed by heartbeats; a silent or
dead worker's trials taken back exactly once, failed as interrupted and queued again to resume from their
checkpoint; a worker whose lease was taken drops its late result. On SQLite and on a real PostgreSQL."""

from __future__ import annotations

import threading
import time

import optuna
from optuna.trial import TrialState
from tests._postgres import running_postgres

from tunelab.search import SearchSpace, run_study
from tunelab.storage import (
    ORPHAN,
    LeaseBook,
    Leasing,
    StudyCounts,
    StudyDatabase,
    cached,
    fail_orphans,
    reclaim,
    retrying,
)

SPACE = SearchSpace.from_dict({"train.x": {"float": [-1.0, 1.0]}})
X = {"train.x": optuna.distributions.FloatDistribution(-1.0, 1.0)}  # the space's parameter, as Optuna's


def _study(url: str) -> optuna.Study:
    storage = optuna.storages.RDBStorage(url)  # disposed by the caller (_close): no connection left open
    study = optuna.create_study(storage=storage, study_name="leased", load_if_exists=True)
    _ENGINES[id(study)] = storage
    return study


_ENGINES: dict[int, optuna.storages.RDBStorage] = {}


def _close(study: optuna.Study, *books: LeaseBook) -> None:
    _ENGINES.pop(id(study)).engine.dispose()
    for book in books:
        book.database.close()


def _book(url: str, worker: str, node: str = "node-a") -> LeaseBook:
    return LeaseBook(StudyDatabase(url, retry_seconds=5.0), study="leased", worker=worker, node=node)


def _lifecycle(url: str) -> None:
    study = _study(url)
    trial = study.ask()
    trial.set_user_attr("checkpoint", "population-0")
    worker, reclaimer = _book(url, "w1"), _book(url, "w2", node="node-b")
    worker.acquire([(trial._trial_id, trial.number)])
    assert worker.beat() == set()
    (lease,) = reclaimer.leases()
    assert (lease.number, lease.worker, lease.node, lease.state) == (0, "w1", "node-a", "held")
    assert reclaimer.stale(grace_s=60.0) == []
    time.sleep(0.3)
    (stale,) = reclaimer.stale(grace_s=0.2)
    # Two reclaimers race on the same stale lease: exactly one takes it.
    other = _book(url, "w3")
    assert reclaim(study, reclaimer, [stale], why="test", max_failures=3) == [0]
    assert reclaim(study, other, [stale], why="test", max_failures=3) == []
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["fail_reason"].startswith("interrupted: test (worker w1 on node-a)")
    assert trials[1].user_attrs == {"retry_of": 0, "retries": 1, "resume_from": "population-0"}
    assert StudyCounts.of_study(study).n_finished == 0  # its retry stands for it
    # The first worker comes back: its lease is gone, so its result is dropped.
    assert worker.beat() == {trial._trial_id}
    assert worker.lost(trial._trial_id)
    assert not worker.tell(trial._trial_id)
    _close(study, worker, reclaimer, other)


def test_a_lease_is_taken_back_exactly_once_on_sqlite(tmp_path):
    _lifecycle(f"sqlite:///{tmp_path / 'study.db'}")


def test_a_lease_is_taken_back_exactly_once_on_postgresql(postgres_url):
    _lifecycle(postgres_url)


def test_a_told_result_cannot_be_taken_back_and_a_taken_one_cannot_be_told(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = _study(url)
    done, taken = study.ask(), study.ask()
    worker, reclaimer = _book(url, "w1"), _book(url, "w2")
    worker.acquire([(done._trial_id, done.number), (taken._trial_id, taken.number)])
    leases = {lease.number: lease for lease in reclaimer.leases()}
    assert worker.tell(done._trial_id)  # the worker wins the race for trial 0
    study.tell(done, 1.0)
    worker.finished(done._trial_id)
    worker.beat()  # writes the finished lease
    assert not reclaimer.take(leases[0])  # read before the worker told: the attempt moved on
    assert reclaim(study, reclaimer, [leases[1]], why="its node was lost", max_failures=3) == [1]
    assert not worker.tell(taken._trial_id)  # the reclaimer won trial 1
    assert [lease.state for lease in reclaimer.leases(states=("finished", "reclaimed"))] == [
        "finished",
        "reclaimed",
    ]


def test_a_trial_that_keeps_failing_is_not_retried_past_max_failures(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = _study(url)
    book = _book(url, "w")
    for attempt in range(3):
        trial = study.ask()  # the first, then its retries in turn
        assert trial.user_attrs.get("retries", 0) == attempt
        book.acquire([(trial._trial_id, trial.number)])
        (lease,) = book.leases()
        reclaim(study, book, [lease], why="killed", max_failures=2)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert "not retried: it failed 3 times (max_failures 2)" in trials[-1].user_attrs["fail_reason"]
    assert StudyCounts.of_study(study).n_failed == 1  # three attempts, one configuration


def test_a_worker_takes_back_a_silent_workers_trial_and_runs_exactly_n_trials(tmp_path):
    """A worker that died mid-trial (its lease never renewed): the live worker's loop takes the trial back
    after the grace period, runs its retry, and the study ends with exactly n_trials configurations."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = _study(url)
    dead = study.ask(X)
    dead_book = _book(url, "dead")
    dead_book.acquire([(dead._trial_id, dead.number)])
    live = Leasing(_book(url, "live"), grace_s=0.5, max_failures=3, poll_s=0.05)
    retried: list[int | None] = []

    def objective(handle):
        retried.append(handle.retry_of)
        return handle.params["train"]["x"] ** 2

    summary = run_study(
        objective,
        SPACE,
        n_trials=4,
        storage=optuna.storages.RDBStorage(url),
        study_name="leased",
        leasing=live,
    )
    trials = optuna.load_study(study_name="leased", storage=url).get_trials()
    assert (summary.n_complete, summary.n_failed) == (4, 0)
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 4
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert retried.count(0) == 1  # the dead worker's trial ran again once, with the same parameters
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert retry.params == dead.params
    assert {lease.state for lease in live.book.leases(states=("held", "telling", "finished"))} == {"finished"}


def test_a_worker_waits_while_the_remaining_trials_run_elsewhere(tmp_path):
    """n_trials counts every worker's running trials: with one trial left and it running in another worker,
    this one starts nothing and waits, and ends when that trial is told."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = _study(url)
    for _ in range(2):
        study.tell(study.ask(X), 0.5)
    other = study.ask(X)
    other_book = _book(url, "other")
    other_book.acquire([(other._trial_id, other.number)])
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:  # the other worker finishes its trial meanwhile
            assert other_book.tell(other._trial_id)
            study.tell(other, 0.25)
            other_book.finished(other._trial_id)
        time.sleep(0.01)

    leasing = Leasing(_book(url, "me"), grace_s=30.0, poll_s=0.2)
    summary = run_study(
        lambda h: 1.0,
        SPACE,
        n_trials=3,
        storage=optuna.storages.RDBStorage(url),
        study_name="leased",
        leasing=leasing,
        sleep=sleep,
    )
    assert (summary.n_complete, len(study.get_trials())) == (3, 3)
    assert sleeps[:3] == [0.2, 0.2, 0.2]


def test_the_heartbeat_thread_keeps_a_long_trial_alive(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    leasing = Leasing(_book(url, "slow"), grace_s=0.8, poll_s=0.05)
    watcher = _book(url, "watcher")
    stale_seen = []

    def objective(handle):
        for _ in range(8):  # 1.6 s: twice the grace period
            time.sleep(0.2)
            stale_seen.extend(watcher.stale(grace_s=0.8))
        return 1.0

    summary = run_study(
        objective,
        SPACE,
        n_trials=1,
        storage=optuna.storages.RDBStorage(url),
        study_name="leased",
        leasing=leasing,
    )
    assert summary.n_complete == 1
    assert stale_seen == []
    assert threading.active_count() >= 1


def test_a_leased_study_waits_out_a_database_restart():
    """The server stops while trials run and comes back 3 s later (shorter than the grace period): Optuna's
    storage calls and the leases retry, the study completes, nothing is lost, failed or taken back. A server
    of its own: the session's stays up for the other tests."""
    with running_postgres() as server:
        url = server.create_database()
        database = StudyDatabase(url, retry_seconds=60.0)
        rdb = optuna.storages.RDBStorage(url)
        leasing = Leasing(
            LeaseBook(database, study="leased", worker="w", node="n"), grace_s=20.0, poll_s=0.05
        )
        started = threading.Event()

        def objective(handle):
            if handle.number == 2:
                started.set()
                time.sleep(1.0)  # the cut comes while this trial runs
            return handle.params["train"]["x"] ** 2

        def cut() -> None:
            started.wait(30)
            server.stop(mode="fast")
            time.sleep(3.0)
            server.resume()

        cutter = threading.Thread(target=cut)
        cutter.start()
        summary = run_study(
            objective,
            SPACE,
            n_trials=6,
            storage=retrying(cached(rdb), database),
            study_name="leased",
            leasing=leasing,
        )
        cutter.join()
        trials = optuna.load_study(study_name="leased", storage=rdb).get_trials()
        assert (summary.n_complete, summary.n_failed) == (6, 0)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
        assert {lease.state for lease in leasing.book.leases(states=("held", "reclaimed", "finished"))} == {
            "finished"
        }
        rdb.engine.dispose()
        database.close()


def test_a_trial_no_worker_holds_is_failed_as_never_started(tmp_path):
    """An ask whose answer an outage lost leaves a RUNNING trial no lease holds: after the grace period it is
    failed as never started, and not counted as a configuration."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = _study(url)
    orphan = study.ask(X)
    held = study.ask(X)
    book = _book(url, "w")
    book.acquire([(held._trial_id, held.number)])
    assert fail_orphans(study, book, older_than_s=60.0) == []
    time.sleep(0.2)
    assert fail_orphans(study, book, older_than_s=0.1) == [orphan.number]
    (stored,) = [t for t in study.get_trials() if t.number == orphan.number]
    assert stored.state == TrialState.FAIL
    assert stored.user_attrs["never_started"] == ORPHAN
    assert StudyCounts.of_study(study).n_finished == 0
    _close(study, book)


def test_workers_asking_at_once_run_exactly_n_trials(tmp_path):
    """Three workers on one study, each with room for the last trials at the same moment: together they
    create more trials than the budget leaves, and all drop the same ones (the study's first n_trials new
    configurations run), so the study runs exactly n_trials configurations."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _study(url)
    barrier = threading.Barrier(3)
    summaries, errors = [], []

    def worker(name: str) -> None:
        database = StudyDatabase(url, retry_seconds=60.0)
        rdb = optuna.storages.RDBStorage(url)
        leasing = Leasing(
            LeaseBook(database, study="leased", worker=name, node="n"), grace_s=30.0, poll_s=0.02
        )

        def objective(handle):
            if handle.number < 3:
                barrier.wait(30)  # every worker holds a trial, then all ask for the rest at once
            time.sleep(0.05)
            return 1.0

        try:
            summaries.append(
                run_study(
                    objective,
                    SPACE,
                    n_trials=7,
                    storage=retrying(cached(rdb), database),
                    study_name="leased",
                    leasing=leasing,
                    seed=len(name),
                )
            )
        except BaseException as error:
            errors.append(error)
        finally:
            rdb.engine.dispose()
            database.close()

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "bb", "ccc")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    study = _study(url)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    dropped = [t for t in trials if "never_started" in t.user_attrs]
    assert len(complete) == 7
    assert all(t.number > max(c.number for c in complete) for t in dropped)
    assert StudyCounts.of_study(study).n_finished == 7
    _close(study)


def test_a_lease_silent_past_the_grace_period_is_no_longer_its_workers(tmp_path):
    """A worker that could not reach the database for longer than the grace period may not renew or tell
    its trial any more, even before anyone took it back: the trial is taken back exactly once."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = _study(url)
    trial = study.ask(X)
    worker = LeaseBook(StudyDatabase(url), study="leased", worker="w", node="n", grace_s=0.3)
    worker.acquire([(trial._trial_id, trial.number)])
    time.sleep(0.5)  # the outage: no beat reached the database
    worker.beat()  # back: too late to renew
    (lease,) = worker.stale(grace_s=0.3)
    assert not worker.tell(trial._trial_id)
    assert reclaim(study, worker, [lease], why="silent past the grace period", max_failures=3) == [0]
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.WAITING]
    _close(study, worker)
