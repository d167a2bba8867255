"""Several search processes on one storage (``--workers N``): this one and ``N - 1`` spawned ones."""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import asdict, replace

import optuna
import torch

from tunelab.errors import TrainingError
from tunelab.execute._evaluator import Evaluator
from tunelab.execute._search import SearchPlan, SearchResult, run_search
from tunelab.layout import RunLayout
from tunelab.search import Events, StudyEvents
from tunelab.storage import StudyCounts, connected_storage, study_snapshot
from tunelab.train import flush_denormals

__all__ = ["search_in_workers"]


def search_in_workers(plan: SearchPlan, evaluator: Evaluator, events: StudyEvents) -> SearchResult:
    """Run ``plan.workers`` search processes on the plan's storage, each with an equal share of the CPU
    threads; the result's counts are the whole study's."""
    threads = max(1, (os.cpu_count() or 1) // plan.workers)
    # Create the study before the workers start, so none of them races to create it.
    with connected_storage(plan.storage_url) as storage:
        optuna.create_study(
            storage=storage,
            study_name=plan.spec.name,
            direction=plan.direction,
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
        result = run_search(plan, evaluator, events, worker=0)
    finally:
        torch.set_num_threads(previous)
        for process in processes:
            process.join()
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    if failed:
        local = plan.storage_url == RunLayout(plan.run_dir).local_storage_url
        raise TrainingError(
            f"{len(failed)} of {plan.workers - 1} worker processes failed (exit codes {failed}); the "
            "trials they finished are stored. Continue with `tunelab tune --resume --out "
            f"{plan.run_dir}" + ("`." if local else " --storage URL` (the same storage URL).")
        )
    counts = StudyCounts.of_study(study_snapshot(plan.storage_url, plan.spec.name))
    return replace(result, summary=replace(result.summary, **asdict(counts)))


def _worker_main(plan: SearchPlan, index: int, threads: int) -> None:
    flush_denormals()  # a fresh process: before any torch work (see tunelab.train.flush_denormals)
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    evaluator = Evaluator(plan.spec, plan.data_spec)

    def line(message: str) -> None:
        print(f"[worker {index}] {message}", flush=True)

    run_search(plan, evaluator, Events(log=line), worker=index)
