"""Where studies and runs live: Optuna storages, their URLs, and the run directory's layout.

- :func:`open_backend`: the study a search asks and tells, in memory, in a database written directly, or in
  memory with write-behind to SQLite (:class:`WriteBehind`);
- URLs: :func:`connect_storage` (a clear error for a database that cannot be opened), :func:`hide_password`,
  :func:`study_snapshot` (a finished study copied to memory, no connection held);
- :class:`RunLayout`: the files of a run directory, and the study a run is stored in;
- :func:`retry_interrupted` (trials a killed run left RUNNING are queued again) and :class:`StudyCounts`.

Imports no torch: a search process and the report read studies without it.
"""

from tunelab.storage._backend import StudyBackend, WriteBehind, open_backend
from tunelab.storage._layout import RunLayout
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
    "FINISHED",
    "HIDDEN_PASSWORD",
    "INTERRUPTED",
    "RunLayout",
    "StudyBackend",
    "StudyCounts",
    "WriteBehind",
    "connect_storage",
    "connected_storage",
    "hide_password",
    "in_memory_copy",
    "open_backend",
    "opened_study",
    "password_hidden",
    "retry_interrupted",
    "shown_url",
    "study_snapshot",
]
