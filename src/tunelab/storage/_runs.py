"""Where a run directory's study is stored: recorded when the run starts, found again for resume, report
and dashboard."""

from __future__ import annotations

from tunelab.errors import DataError
from tunelab.layout import RunLayout
from tunelab.storage._urls import hide_password, password_hidden

__all__ = ["record_storage", "run_study_url"]


def record_storage(layout: RunLayout, url: str) -> None:
    """Keep the ``--storage`` URL a study was created with in the run directory, password hidden."""
    layout.storage_record.write_text(hide_password(url) + "\n", encoding="utf-8")


def run_study_url(
    layout: RunLayout, storage: str | None = None, *, command: str = "tunelab report"
) -> str | None:
    """The URL of the run's study: ``storage`` when given; else ``study.db`` there (while the study runs,
    too); else the URL the run recorded (``storage.txt``, or a finished run's ``summary.json``); None when
    there is none.

    A recorded URL whose password was hidden cannot log in: a :class:`~tunelab.errors.DataError` says to
    give it again with ``{command} RUN_DIR --storage URL``.
    """
    if storage is not None:
        return storage
    if layout.study_db.is_file():
        return layout.local_storage_url
    recorded = layout.recorded_storage() or layout.summary_storage()
    if recorded is not None and password_hidden(recorded):
        raise DataError(
            f"the study of '{layout.root}' is stored in {recorded}, recorded with its password hidden "
            "(tunelab keeps no passwords), so it cannot be opened from the run directory alone. Give the "
            f"full URL, password included: `{command} {layout.root} --storage URL`."
        )
    return recorded
