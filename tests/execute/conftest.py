"""Population studies on small real data, through the one study loop."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from tunelab.execute import Evaluator, PopulationExecutor, trial_spec
from tunelab.search import NoScheduler, SearchSpace, make_sampler, run_study
from tunelab.spec import ExperimentSpec


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models train fastest on one thread (and the shared CPU is not oversubscribed)."""
    torch.set_num_threads(1)  # the shared conftest restores the count afterwards


def population_study(
    directory: Path,
    spec: ExperimentSpec,
    evaluator: Evaluator,
    space: dict[str, Any],
    *,
    name: str = "pop",
    enqueue: Iterable[dict[str, Any]] = (),
    metric: str = "val_loss",
    scheduler: Any = None,
    population_size: int = 4,
    folds: tuple[int | None, ...] | list[int | None] = (None,),
    flop_rate: float | None = None,
    **study: Any,
) -> optuna.Study:
    """A study of fused populations of ``spec`` on ``evaluator``'s data, stored in SQLite in ``directory``;
    the finished study, loaded back from its file. ``study``: run_study's budgets (and clock, events)."""
    url = f"sqlite:///{directory / (name + '.db')}"
    search_space = SearchSpace.from_dict(space)
    sampler = make_sampler("tpe", seed=3, space=search_space)
    queued = list(enqueue)
    if queued:
        seeded = optuna.create_study(storage=url, study_name=name, sampler=sampler)
        for params in queued:
            seeded.enqueue_trial(params)
    executor = PopulationExecutor(
        partial(trial_spec, spec),
        evaluator,
        population_size=population_size,
        metric=metric,
        folds=folds,
        flop_rate=flop_rate,
    )
    run_study(
        executor,
        search_space,
        sampler=sampler,
        scheduler=scheduler or NoScheduler(),
        storage=url,
        study_name=name,
        **study,
    )
    return optuna.load_study(study_name=name, storage=url)


@pytest.fixture(scope="session")
def run_populations() -> Callable[..., optuna.Study]:
    """:func:`population_study`, for tests and module-scoped fixtures."""
    return population_study
