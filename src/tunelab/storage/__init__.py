"""Where studies and runs live: Optuna storages, their URLs, and the run directory's layout.

- :func:`open_backend`: the study a search asks and tells, in memory, in a database written directly, or in
  memory with write-behind to SQLite (:class:`WriteBehind`);
- URLs: :func:`connect_storage` (a clear error for a database that cannot be opened), :func:`hide_password`,
  :func:`study_snapshot` (a finished study copied to memory, no connection held);
- :func:`run_study_url`: where a run directory's study is stored (the directory's files:
  :class:`tunelab.layout.RunLayout`);
- :func:`retry_interrupted` (trials a killed run left RUNNING are queued again) and :class:`StudyCounts`;
- :class:`DatabaseArtifactStore`: Optuna's artifact store in a table of the study's database (checkpoints
  that need no shared directory; retried through outages up to a grace period, then
  :class:`StorageUnavailableError`).

Imports no torch: a search process and the report read studies without it.
"""

from tunelab.storage._artifacts import ARTIFACT_TABLE, DatabaseArtifactStore, StorageUnavailableError
from tunelab.storage._backend import StudyBackend, WriteBehind, open_backend
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
    "DatabaseArtifactStore",
    "RunningTrial",
    "StorageUnavailableError",
    "StudyBackend",
    "StudyCounts",
    "StudyStatus",
    "WriteBehind",
    "connect_storage",
    "connected_storage",
    "hide_password",
    "in_memory_copy",
    "open_backend",
    "opened_study",
    "password_hidden",
    "record_storage",
    "retry_interrupted",
    "run_study_url",
    "shown_url",
    "study_snapshot",
    "study_status",
]
