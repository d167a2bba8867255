"""Where studies and runs live: Optuna storages, their URLs, and the run directory's layout.

- :func:`open_backend`: the study a search asks and tells, in memory, in a database written directly, or in
  memory with write-behind to SQLite (:class:`WriteBehind`);
- URLs: :func:`connect_storage` (a clear error for a database that cannot be opened), :func:`hide_password`,
  :func:`study_snapshot` (a finished study copied to memory, no connection held);
- :func:`run_study_url`: where a run directory's study is stored (the directory's files:
  :class:`tunelab.layout.RunLayout`);
- :func:`retry_interrupted` (trials a killed run left RUNNING are queued again) and :class:`StudyCounts`;
- :class:`StudyDatabase`: tunelab's one connection to a study's database (calls retried through outages up to
  a grace period, then :class:`StorageUnavailableError`), shared by
  :class:`DatabaseArtifactStore` (Optuna's artifact store in a table of it: checkpoints that need no shared
  directory) and :class:`LeaseBook` (a lease per running trial, heartbeats, :func:`reclaim` of a dead
  worker's trials, exactly once).

Imports no torch: a search process and the report read studies without it.
"""

from tunelab.storage._artifacts import ARTIFACT_TABLE, DatabaseArtifactStore
from tunelab.storage._backend import StudyBackend, WriteBehind, open_backend
from tunelab.storage._database import StorageUnavailableError, StudyDatabase, server_database
from tunelab.storage._leases import (
    LEASE_TABLE,
    ORPHAN,
    Heartbeat,
    Lease,
    LeaseBook,
    Leasing,
    fail_orphans,
    reclaim,
)
from tunelab.storage._retrying import RetryingStorage, cached, open_shared_storage, retrying
from tunelab.storage._runs import record_storage, run_study_url
from tunelab.storage._status import RunningTrial, StudyStatus, study_status
from tunelab.storage._trials import FINISHED, INTERRUPTED, StudyCounts, retry_interrupted
from tunelab.storage._urls import (
    HIDDEN_PASSWORD,
    connect_storage,
    connected_storage,
    hide_password,
    in_memory_copy,
    opened_study,
    password_hidden,
    shown_url,
    study_snapshot,
)

__all__ = [
    "ARTIFACT_TABLE",
    "FINISHED",
    "HIDDEN_PASSWORD",
    "INTERRUPTED",
    "LEASE_TABLE",
    "ORPHAN",
    "DatabaseArtifactStore",
    "Heartbeat",
    "Lease",
    "LeaseBook",
    "Leasing",
    "RetryingStorage",
    "RunningTrial",
    "StorageUnavailableError",
    "StudyBackend",
    "StudyCounts",
    "StudyDatabase",
    "StudyStatus",
    "WriteBehind",
    "cached",
    "connect_storage",
    "connected_storage",
    "fail_orphans",
    "hide_password",
    "in_memory_copy",
    "open_backend",
    "open_shared_storage",
    "opened_study",
    "password_hidden",
    "reclaim",
    "record_storage",
    "retry_interrupted",
    "retrying",
    "run_study_url",
    "server_database",
    "shown_url",
    "study_snapshot",
    "study_status",
]
