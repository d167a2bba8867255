"""Optuna's artifact store in a table of the study's own database: checkpoints that need no shared directory.

Several machines that share a PostgreSQL study (issue #17) need a place for checkpoints that every one of
them reaches and that survives any one of them; the database they already share is such a place.
:class:`DatabaseArtifactStore` implements Optuna's ``ArtifactStore`` protocol (``open_reader``, ``write``,
``remove``: ``optuna.artifacts.upload_artifact`` / ``download_artifact`` work with it) on one table,
``tunelab_artifacts`` (id, bytes, size, time written), beside Optuna's own tables.

- **Connections** and **storage hiccups**: through a :class:`~tunelab.storage.StudyDatabase` (one connection,
  shared with the study's leases; calls retried while the database is out of reach, up to a grace period, then
  :class:`StorageUnavailableError`).
- **Writes** replace an artifact of the same id in one transaction: a reader sees the old bytes or the new,
  never a part.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import BinaryIO

import sqlalchemy as sa
from optuna.artifacts.exceptions import ArtifactNotFound

from tunelab.storage._database import StorageUnavailableError, StudyDatabase

__all__ = ["ARTIFACT_TABLE", "DatabaseArtifactStore", "StorageUnavailableError", "stored_artifacts"]

ARTIFACT_TABLE = "tunelab_artifacts"


class DatabaseArtifactStore:
    """Artifacts (bytes under an id) in the ``tunelab_artifacts`` table of the database at ``url`` (any
    SQLAlchemy URL; the study's storage URL by default in tunelab). The table is created when missing.

    >>> store = DatabaseArtifactStore("sqlite://")
    >>> store.write("a1", io.BytesIO(b"weights"))
    >>> store.open_reader("a1").read(), store.total_bytes()
    (b'weights', 7)
    """

    def __init__(
        self,
        url: str | StudyDatabase,
        *,
        retry_seconds: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(url, StudyDatabase):
            self.database, self._owned = url, False
        else:
            self.database = StudyDatabase(url, retry_seconds=retry_seconds, sleep=sleep, clock=clock)
            self._owned = True
        self.engine = self.database.engine
        self._retrying = self.database.retrying
        metadata = sa.MetaData()
        self.table = sa.Table(
            ARTIFACT_TABLE,
            metadata,
            sa.Column("artifact_id", sa.String(255), primary_key=True),
            sa.Column("content", sa.LargeBinary, nullable=False),
            sa.Column("size_bytes", sa.BigInteger, nullable=False),
            sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        )
        self.database.create(metadata, ARTIFACT_TABLE)

    @property
    def retry_seconds(self) -> float:
        return self.database.retry_seconds

    def open_reader(self, artifact_id: str) -> BinaryIO:
        """The artifact's bytes as a binary file object; ``ArtifactNotFound`` when there is none."""

        def read() -> bytes | None:
            with self.engine.connect() as connection:
                query = sa.select(self.table.c.content).where(self.table.c.artifact_id == artifact_id)
                found = connection.execute(query).scalar_one_or_none()
                return None if found is None else bytes(found)

        content = self._retrying(read)
        if content is None:
            raise ArtifactNotFound(f"no artifact {artifact_id!r} in the {ARTIFACT_TABLE} table")
        return io.BytesIO(content)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        """Store ``content_body``'s bytes under ``artifact_id``, replacing any earlier ones at once."""
        content = content_body.read()

        def replace() -> None:
            with self.engine.begin() as connection:
                connection.execute(sa.delete(self.table).where(self.table.c.artifact_id == artifact_id))
                connection.execute(
                    sa.insert(self.table).values(
                        artifact_id=artifact_id,
                        content=content,
                        size_bytes=len(content),
                        written_at=datetime.now(timezone.utc),
                    )
                )

        self._retrying(replace)

    def remove(self, artifact_id: str) -> None:
        """Delete the artifact; ``ArtifactNotFound`` when there is none."""

        def delete() -> int:
            with self.engine.begin() as connection:
                result = connection.execute(
                    sa.delete(self.table).where(self.table.c.artifact_id == artifact_id)
                )
                return int(result.rowcount)

        if self._retrying(delete) == 0:
            raise ArtifactNotFound(f"no artifact {artifact_id!r} in the {ARTIFACT_TABLE} table")

    def total_bytes(self) -> int:
        """The stored artifacts' bytes, all together."""
        return self._retrying(lambda: _count_and_bytes(self.engine, self.table.c.size_bytes))[1]

    def close(self) -> None:
        """Close the store's connection (one it opened; a shared :class:`StudyDatabase` is its owner's)."""
        if self._owned:
            self.database.close()


def stored_artifacts(engine: sa.Engine) -> tuple[int, int] | None:
    """How many artifacts the database of ``engine`` holds and their bytes (``tunelab status``), reading only:
    None when it has no artifact table."""
    if not sa.inspect(engine).has_table(ARTIFACT_TABLE):
        return None
    return _count_and_bytes(engine, sa.table(ARTIFACT_TABLE, sa.column("size_bytes")).c.size_bytes)


def _count_and_bytes(engine: sa.Engine, size_bytes: sa.ColumnElement[int]) -> tuple[int, int]:
    with engine.connect() as connection:
        count, total = connection.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(size_bytes), 0))
        ).one()
    return int(count), int(total)
