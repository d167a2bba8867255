"""The run directory: the one place that names its files.

A ``tunelab tune`` run directory holds ``spec.yaml`` (written first), the study (``study.db``, or a database
named in ``storage.txt``), ``trials/<number>/fold<k>/`` checkpoints while trials run, and at the end
``summary.json``, ``final_history.json``, ``test_predictions.csv``, ``best/`` (the exported model) and
``report.html``. A ``tunelab train`` run directory holds ``spec.yaml``, ``history.csv`` / ``history.json``,
checkpoints, ``model.pt``, ``curves.png``, ``metrics.json``, ``test_predictions.csv``, ``summary.json`` and
``report.html``.

Plain paths, no dependencies: every room that reads or writes a run directory names its files through
:class:`RunLayout` (``tunelab.export`` too, which must not import the study's storage). Finding the study a
run is stored in is :func:`tunelab.storage.run_study_url`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunLayout", "json_safe"]


@dataclass(frozen=True)
class RunLayout:
    """The files of the run directory ``root``."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def study_db(self) -> Path:
        return self.root / "study.db"

    @property
    def storage_record(self) -> Path:
        """The ``--storage`` URL the study was created with, password hidden (absent for ``study.db``)."""
        return self.root / "storage.txt"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def trials(self) -> Path:
        """Checkpoints of running trials: ``trials/<number>/fold<k>/``, removed as each trial ends."""
        return self.root / "trials"

    def trial_dir(self, number: int, fold_index: int | None = None) -> Path:
        trial = self.trials / str(number)
        return trial if fold_index is None else trial / f"fold{fold_index}"

    @property
    def export(self) -> Path:
        return self.root / "best"

    @property
    def final_history(self) -> Path:
        return self.root / "final_history.json"

    @property
    def history_json(self) -> Path:
        return self.root / "history.json"

    @property
    def history_csv(self) -> Path:
        return self.root / "history.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def checkpoint(self) -> Path:
        """The trainer's last checkpoint (of a train run, or of a trial's fold: ``trial_dir(n, k)``)."""
        return self.root / "checkpoint.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.root / "best.pt"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def test_predictions(self) -> Path:
        return self.root / "test_predictions.csv"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    # -- where the study is stored --
    @property
    def local_storage_url(self) -> str:
        """The URL of ``study.db`` here, the default storage of a run."""
        return f"sqlite:///{self.study_db.resolve()}"

    def is_run(self) -> bool:
        """Whether the directory holds a run tunelab wrote (tune or train), finished or not."""
        return any(path.exists() for path in (self.spec, self.summary, self.history_csv))

    def has_study(self, storage: str | None = None) -> bool:
        """Whether a study was started here: ``spec.yaml`` and its storage (``storage``, or ``study.db``)."""
        return self.spec.exists() and (storage is not None or self.study_db.exists())

    def recorded_storage(self) -> str | None:
        """The ``--storage`` URL the study was created with (password hidden), from ``storage.txt``."""
        try:
            return self.storage_record.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def summary_storage(self) -> str | None:
        """The storage a finished run's ``summary.json`` names (runs from before ``storage.txt`` too)."""
        try:
            recorded = json.loads(self.summary.read_text(encoding="utf-8")).get("storage")
        except (OSError, ValueError, AttributeError):
            return None
        return recorded if isinstance(recorded, str) and recorded else None


def json_safe(value: Any) -> Any:
    """A value as a run directory's JSON files hold it (summary.json, compression.json): strict JSON,
    non-finite floats null, tuples lists, other objects their string form."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)
