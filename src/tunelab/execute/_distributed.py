"""Studies across processes and machines: the plan every worker reads from the study, and one worker's loop.

A distributed study (``--backend ray``, ``tunelab worker``, or a server database such as PostgreSQL) keeps
everything durable in the study's database: Optuna's trials, a lease per running trial
(:class:`~tunelab.storage.LeaseBook`, heartbeats, reclaims), and the populations' checkpoints (a
:class:`~tunelab.storage.DatabaseArtifactStore` table, or ``Distributed.artifacts``: a shared directory).
The driver publishes its :class:`SearchPlan` in the study (:func:`publish_plan`: the spec, the folds, the
budgets, the time budget as a wall-clock deadline); a worker anywhere reads it (:func:`read_plan`) and runs
:func:`work`: the same :func:`~tunelab.execute.run_search` loop as a local process, with leases and
checkpoints in the database. Only who starts the process differs (a shell, Ray, ``--workers``).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import optuna

from tunelab.data import DataSpec
from tunelab.errors import SpecError
from tunelab.execute._evaluator import Evaluator
from tunelab.execute._search import Distributed, SearchPlan, SearchResult, run_search, worker_name
from tunelab.search import StudyEvents
from tunelab.spec import parse_spec
from tunelab.storage import StudyDatabase, connected_storage, hide_password

__all__ = ["PLAN_ATTR", "Distributed", "publish_plan", "read_plan", "work", "worker_name"]

PLAN_ATTR = "tunelab_plan"
_PLAN_VERSION = 1


def publish_plan(plan: SearchPlan) -> None:
    """Create ``plan``'s study (queueing ``search.first_trials`` once) and store the plan in it, for
    workers that join from anywhere (:func:`read_plan`)."""
    distributed = plan.distributed or Distributed()
    deadline = None
    if plan.search_deadline is not None:  # monotonic clocks differ between machines: a wall-clock time
        deadline = time.time() + (plan.search_deadline - time.monotonic())
    record = {
        "version": _PLAN_VERSION,
        "spec": plan.spec.model_dump(mode="json"),
        "data": plan.data_spec.model_dump(mode="json"),
        "folds": plan.folds,
        "metric": plan.metric,
        "direction": plan.direction,
        "workers": plan.workers,
        "n_trials": plan.n_trials,
        "deadline_unix": deadline,
        "grace_s": distributed.grace_s,
        "max_failures": distributed.max_failures,
        "artifacts": distributed.artifacts,
    }
    with connected_storage(plan.storage_url) as storage:
        study = optuna.create_study(
            storage=storage, study_name=plan.spec.name, direction=plan.direction, load_if_exists=True
        )
        if not study.get_trials(deepcopy=False):
            for params in plan.search.first_trials:
                study.enqueue_trial(dict(params))
        study.set_user_attr(PLAN_ATTR, record)


def read_plan(storage_url: str, study_name: str, *, run_dir: Path, wait_s: float = 0.0) -> SearchPlan:
    """The plan the study's driver published; ``run_dir``: this worker's own directory (sequential trials'
    checkpoints); ``wait_s``: how long to wait for a database that cannot be reached (0: fail at once, with
    the reason). A clear error when the study or its plan is missing."""

    def read() -> Any:
        with connected_storage(storage_url) as storage:
            names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
            if study_name not in names:
                raise SpecError(
                    f"no study named '{study_name}' in {hide_password(storage_url)} (it holds: "
                    f"{', '.join(names) or 'none'}). Start it first with `tunelab tune SPEC --storage URL`, "
                    "or check --study."
                )
            return optuna.load_study(study_name=study_name, storage=storage).user_attrs.get(PLAN_ATTR)

    if wait_s > 0:
        database = StudyDatabase(storage_url, retry_seconds=wait_s)
        record = database.retrying(read)
        database.close()
    else:
        record = read()
    if not isinstance(record, dict) or record.get("version") != _PLAN_VERSION:
        raise SpecError(
            f"study '{study_name}' was not started by `tunelab tune` with a shared database (it has no "
            f"tunelab plan of version {_PLAN_VERSION}); workers join studies that `tunelab tune SPEC "
            "--storage URL` (or --backend ray) started."
        )
    deadline = record["deadline_unix"]
    return SearchPlan(
        spec=parse_spec(record["spec"], source=f"the plan of study '{study_name}'"),
        data_spec=DataSpec.model_validate(record["data"]),
        folds=list(record["folds"]),
        run_dir=run_dir,
        storage_url=storage_url,
        metric=record["metric"],
        direction=record["direction"],
        workers=int(record["workers"]),
        n_trials=record["n_trials"],
        search_deadline=None if deadline is None else time.monotonic() + (deadline - time.time()),
        distributed=Distributed(record["grace_s"], record["max_failures"], record["artifacts"]),
    )


def work(
    storage_url: str,
    study_name: str,
    events: StudyEvents,
    *,
    run_dir: Path,
    worker: str,
    node: str | None = None,
    index: int = 1,
    wait_s: float = 0.0,
) -> SearchResult:
    """One worker of a distributed study until its budget is spent: read the plan, load the data, run the
    search loop with leases and checkpoints in the study's database. ``wait_s``: how long to wait for an
    unreachable database at the start (later, the plan's ``outage_s``)."""
    plan = read_plan(storage_url, study_name, run_dir=run_dir, wait_s=wait_s)
    evaluator = Evaluator(plan.spec, plan.data_spec)
    return run_search(plan, evaluator, events, worker=index, identity=(worker, node or socket.gethostname()))
