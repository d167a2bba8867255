"""`tune_experiment`: the whole protocol (see the `tunelab.tune` package docstring) over one run directory."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.data import load_dataset
from tunelab.errors import SpecError, TrainingError
from tunelab.search import (
    SearchSpec,
    StudySummary,
    metric_direction,
)
from tunelab.search._storage import connect_storage, hide_password, password_hidden, study_snapshot
from tunelab.spec import ExperimentSpec
from tunelab.train import denormals_flushed
from tunelab.tune._search import make_plan, run_search
from tunelab.tune._select import build_summary, json_safe, reevaluate, refit_winner
from tunelab.tune._trials import Evaluator, Events
from tunelab.tune._workers import retry_interrupted, search_in_workers


@dataclass
class TuneResult:
    run_dir: Path
    summary: dict[str, Any]
    study: StudySummary
    extra: dict[str, Any] = field(default_factory=dict)


@denormals_flushed()  # from the start, so that the torch threads loading the data start flushing
def tune_experiment(
    spec: ExperimentSpec,
    *,
    out_dir: str | Path,
    resume: bool = False,
    storage: str | None = None,
    workers: int = 1,
    progress: Any = None,
    log: Any = None,
) -> TuneResult:
    """Run the whole protocol (module docstring) and return its summary; see ``tunelab tune --help``.

    ``workers`` > 1 runs that many search processes on the one storage (TPE with the constant liar), each with
    an equal share of the CPU threads; selection and the refit then run here.
    """
    started = time.monotonic()
    search = spec.search or SearchSpec()
    if not search.space:
        raise SpecError(
            "the spec has no search.space, so there is nothing to tune. Add for example\n"
            "search:\n  space:\n    train.lr: {float: [1e-4, 1e-2], log: true}\n"
            "or use `tunelab train` to train this one configuration."
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise SpecError(f"--workers must be a whole number from 1 to 64; got {workers!r}.")
    _check_storage_url(storage)
    run_dir = _open_run_dir(Path(out_dir), spec, resume=resume, storage=storage)
    storage_url = storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"
    say = Events(progress, log)
    dataset = load_dataset(spec.data)
    plan = make_plan(spec, search, run_dir, storage_url, workers, task=dataset.task, started=started)
    evaluator = Evaluator(spec, plan.data_spec, dataset=dataset)
    plan.metric = search.metric or ("val_accuracy" if evaluator.task == "classification" else "val_rmse")
    plan.direction = metric_direction(plan.metric) if search.direction == "auto" else search.direction
    say(
        f"searching {len(search.search_space())} parameters with {search.sampler} and "
        f"{search.scheduler.name}; metric {plan.metric} ({plan.direction}); "
        + (f"{len(plan.folds)}-fold cross-validation" if search.cv else "holdout validation")
        + (f"; {workers} workers" if workers > 1 else "")
    )
    if resume and workers > 1:
        retry_interrupted(storage_url, spec.name)
    if workers > 1:
        study_summary = search_in_workers(plan, evaluator, say)
    else:
        study_summary = run_search(plan, evaluator, say)
    shutil.rmtree(run_dir / "trials", ignore_errors=True)
    if study_summary.best_params is None:
        raise TrainingError(
            f"no trial completed ({study_summary.n_failed} failed, {study_summary.n_pruned} pruned); "
            "see the fail reasons with `optuna` on the run's study.db. Widen the budget, or narrow the "
            "search space to values that train (smaller learning rates, for example)."
        )
    # Selection and the summary only read the study: a copy in memory, with no connection held meanwhile.
    study = study_snapshot(storage_url, spec.name)
    budget_s = search.budget_seconds
    deadline = None if budget_s is None else started + budget_s
    space = search.search_space()
    candidates = reevaluate(
        study, space, spec, evaluator, plan.folds, plan.metric, plan.direction, search, deadline, say
    )
    refit = refit_winner(spec, candidates[0], evaluator, search, run_dir, say)
    summary = build_summary(
        spec,
        search,
        plan.metric,
        plan.direction,
        study,
        study_summary,
        candidates,
        refit,
        plan.folds,
        started,
        storage_url,
    )
    summary["protocol"]["workers"] = workers
    summary["protocol"]["fusion"] = plan.fusion or {"fused": False, "reason": f"{workers} worker processes"}
    (run_dir / "summary.json").write_text(json.dumps(json_safe(summary), indent=2), encoding="utf-8")
    from tunelab.report import build_report

    say(f"report: {build_report(run_dir, storage=storage)}")
    return TuneResult(run_dir, summary, study_summary, extra={"trainer": refit["trainer"]})


def _check_storage_url(url: str | None) -> None:
    if url is None:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SpecError(
            f"--storage '{url}' is not a database URL. Examples: sqlite:///study.db, "
            "postgresql+psycopg://user:password@host/db."
        ) from None
    if parsed.drivername.startswith("postgresql"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is None:
            from tunelab.errors import MissingExtraError

            raise MissingExtraError("PostgreSQL storage", "postgres")
    # Open it now, before any file is written or data loaded, so a wrong URL (server down, wrong port or
    # password, no such database) is a clear error on every path (worker processes included), not a
    # traceback after a half-made run directory.
    connect_storage(url).engine.dispose()


def _open_run_dir(run_dir: Path, spec: ExperimentSpec, *, resume: bool, storage: str | None) -> Path:
    has_study = (run_dir / "spec.yaml").exists() and (storage is not None or (run_dir / "study.db").exists())
    recorded = _recorded_storage(run_dir)
    if resume:
        if not has_study and recorded is not None and (run_dir / "spec.yaml").exists():
            again = (
                "URL`, URL being that same URL with its password (tunelab does not keep passwords)."
                if password_hidden(recorded)
                else f"{recorded}`."
            )
            raise SpecError(
                f"the study in '{run_dir}' is stored in {recorded} (recorded in {STORAGE_FILE} there), "
                "not in a study.db beside it, so --resume needs that storage again: resume with "
                f"`tunelab tune --resume --out {run_dir} --storage {again}"
            )
        if not has_study:
            raise SpecError(
                f"there is no study to resume in '{run_dir}' (expected spec.yaml and study.db there). "
                "Check --out, or start a new study without --resume."
            )
        return run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise SpecError(f"--out '{run_dir}' is a file; expected a directory for the study.")
    if has_study:
        raise SpecError(
            f"'{run_dir}' already holds a study; nothing was changed. Continue it with "
            f"`tunelab tune --resume --out {run_dir}`, or choose another --out."
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SpecError(f"cannot create run directory '{run_dir}': {err}. Choose a writable --out.") from None
    (run_dir / "spec.yaml").write_text(spec.to_yaml(), encoding="utf-8")
    if storage is not None:
        (run_dir / STORAGE_FILE).write_text(hide_password(storage) + "\n", encoding="utf-8")
    return run_dir


STORAGE_FILE = "storage.txt"  # the --storage URL of a run, password hidden, for `--resume` to name it


def _recorded_storage(run_dir: Path) -> str | None:
    """The --storage URL the run in ``run_dir`` was created with (password hidden), or None."""
    try:
        return (run_dir / STORAGE_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
