"""Several search processes on one storage (`--workers N`), and the repair of a killed study."""

from __future__ import annotations

from typing import Any

import optuna
import torch

from tunelab.errors import TrainingError
from tunelab.search import (
    StudySummary,
)
from tunelab.search._storage import connected_storage, opened_study, study_snapshot
from tunelab.train import flush_denormals
from tunelab.tune._search import Plan, run_search
from tunelab.tune._trials import Evaluator, Events


def search_in_workers(plan: Plan, evaluator: Evaluator, say: Any) -> StudySummary:
    """Run ``plan.workers`` search processes: this one and ``workers - 1`` spawned ones."""
    import multiprocessing
    import os

    threads = max(1, (os.cpu_count() or 1) // plan.workers)
    # Create the study before the workers start, so none of them races to create it.
    with connected_storage(plan.storage_url) as storage:
        optuna.create_study(
            storage=storage,
            study_name=plan.spec.name,
            direction=plan.direction,  # type: ignore[arg-type]
            load_if_exists=True,
        )
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker_main, args=(plan, index, threads), daemon=False)
        for index in range(1, plan.workers)
    ]
    for process in processes:
        process.start()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        summary = run_search(plan, evaluator, say, worker=0)
    finally:
        torch.set_num_threads(previous)
        for process in processes:
            process.join()
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    if failed:
        local = plan.storage_url == f"sqlite:///{(plan.run_dir / 'study.db').resolve()}"
        raise TrainingError(
            f"{len(failed)} of {plan.workers - 1} worker processes failed (exit codes {failed}); the "
            "trials they finished are stored. Continue with `tunelab tune --resume --out "
            f"{plan.run_dir}" + ("`." if local else " --storage URL` (the same storage URL).")
        )
    # The study as all workers left it.
    return _counts(study_snapshot(plan.storage_url, plan.spec.name), summary)


def _worker_main(plan: Plan, index: int, threads: int) -> None:
    flush_denormals()  # a fresh process: before any torch work (see tunelab.train.flush_denormals)
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    evaluator = Evaluator(plan.spec, plan.data_spec)

    def line(message: str) -> None:
        print(f"[worker {index}] {message}", flush=True)

    run_search(plan, evaluator, Events(log=line), worker=index)


def _counts(study: optuna.Study, local: StudySummary) -> StudySummary:
    from dataclasses import replace

    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return replace(
        local,
        n_complete=sum(t.state == TrialState.COMPLETE for t in trials),
        n_pruned=sum(t.state == TrialState.PRUNED for t in trials),
        n_failed=sum(t.state == TrialState.FAIL for t in trials),
        n_epochs=sum(max(t.intermediate_values, default=0) for t in trials),
    )


def retry_interrupted(storage_url: str, name: str) -> None:
    """Trials left RUNNING by a killed run: mark them failed and queue their parameters again."""
    from optuna.trial import TrialState

    with opened_study(storage_url, name) as study:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "interrupted")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
