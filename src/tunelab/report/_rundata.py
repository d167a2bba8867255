"""What a run directory holds, read once for the report: summary, final training curve, test predictions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tunelab.errors import DataError
from tunelab.layout import RunLayout

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["RunData", "load_run", "load_study"]


@dataclass(frozen=True)
class RunData:
    """One finished run: ``kind`` is ``"tune"`` (``tunelab tune``) or ``"train"`` (``tunelab train``)."""

    run_dir: Path
    kind: Literal["tune", "train"]
    summary: dict[str, Any]
    epochs: list[dict[str, Any]]  # the final model's per-epoch logs
    best_epoch: int | None
    predictions: pd.DataFrame | None  # test_predictions.csv, or None when the run wrote none
    class_names: list[str] | None
    spec: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # {"val": {...}, "test": {...}}

    @property
    def task(self) -> str:
        return str(self.summary.get("task", ""))


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory written by ``tunelab tune`` or ``tunelab train``.

    Raises :class:`DataError` when the directory holds no finished run (no ``summary.json``).
    """
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    summary_path = layout.summary
    if not summary_path.is_file():
        what = "does not exist" if not run_dir.exists() else "holds no summary.json"
        raise DataError(
            f"cannot build a report: '{run_dir}' {what}. Expected the directory of a finished "
            "`tunelab tune` or `tunelab train` run (its --out); a run that is still going, or crashed, "
            "writes summary.json only at the end."
        )
    summary = _read_json(summary_path)
    kind: Literal["tune", "train"] = "tune" if "protocol" in summary else "train"
    history_file = layout.final_history if kind == "tune" else layout.history_json
    history = _read_json(history_file) if history_file.is_file() else {}
    metrics = _read_json(layout.metrics) if layout.metrics.is_file() else {}
    if not metrics and "test_metrics" in summary:
        metrics = {"test": summary["test_metrics"]}
    return RunData(
        run_dir=run_dir,
        kind=kind,
        summary=summary,
        epochs=list(history.get("epochs", [])),
        best_epoch=history.get("best_epoch"),
        predictions=_read_predictions(layout.test_predictions),
        class_names=_class_names(run_dir, summary),
        spec=_read_spec(layout.spec),
        metrics=metrics,
    )


def load_study(run: RunData, *, storage: str | None = None) -> optuna.Study | None:
    """The run's Optuna study, as a copy in memory (the database connection is closed before it returns).

    From ``storage`` when given (the full URL, password included), else ``study.db`` next to the summary (the
    run may have moved), else the storage URL recorded in the summary (PostgreSQL, ...). ``None`` for a train
    run or a missing study. The summary records a URL with its password hidden, so such a study needs
    ``storage``: without it this raises :class:`DataError` saying so.
    """
    from tunelab.errors import TunelabError
    from tunelab.storage import hide_password, run_study_url, study_snapshot

    if run.kind != "tune":
        return None
    name = run.summary.get("name")
    url = run_study_url(RunLayout(run.run_dir), storage, command="tunelab report")
    if not url or not name:
        return None
    try:
        return study_snapshot(url, str(name))
    except KeyError:  # no study of that name in the storage
        if storage is None:
            return None  # the report does without the search's plots
        raise DataError(
            f"--storage {hide_password(url)} holds no study named '{name}' (the study of '{run.run_dir}'). "
            "Pass the URL the run was tuned with (`tunelab tune --storage`)."
        ) from None
    except TunelabError:  # already says what failed and how to fix it (a database that cannot be opened)
        raise
    except Exception as err:  # a database that cannot be read: say which, and what to do
        raise DataError(
            f"cannot open the study '{name}' at {hide_password(url)}: {err}. Check that the storage is "
            "reachable (the database server is running, the file is readable) and build the report again."
        ) from err


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(
            f"cannot read '{path}': {err}. The run directory looks damaged; re-run the experiment."
        ) from None
    return value if isinstance(value, dict) else {}


def _read_spec(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        return {}
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}  # the spec only adds detail (fold boundaries); the report does without it
    return value if isinstance(value, dict) else {}


def _read_predictions(path: Path) -> pd.DataFrame | None:
    import pandas as pd

    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    return frame if len(frame) else None


def _class_names(run_dir: Path, summary: dict[str, Any]) -> list[str] | None:
    names = (summary.get("data") or {}).get("class_names")
    metadata = RunLayout(run_dir).export / "metadata.json"
    if names is None and metadata.is_file():
        names = _read_json(metadata).get("class_names")
    return [str(n) for n in names] if names else None
