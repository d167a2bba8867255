"""The run's plan: its time budget (one absolute deadline) and what every search process needs."""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.clock import Clock
from tunelab.data import n_splits
from tunelab.errors import SpecError
from tunelab.execute import SearchPlan
from tunelab.layout import RunLayout
from tunelab.search import Direction, SearchSpec, pbt_problem
from tunelab.spec import ExperimentSpec

__all__ = ["SEARCH_SHARE", "TimeBudget", "make_plan"]

SEARCH_SHARE = 0.8  # of a time budget; the rest is for re-evaluation and the refit


@dataclass(frozen=True)
class TimeBudget:
    """A run's time budget: ``seconds`` from ``start`` on ``clock`` (``start``: when ``tune_experiment``
    began, so loading data, probing fusion and starting workers count). The search ends at its share
    (:attr:`search_deadline`); re-evaluation and the refit start only what fits before :attr:`deadline`."""

    clock: Clock
    start: float
    seconds: float | None = None

    @property
    def deadline(self) -> float | None:
        return None if self.seconds is None else self.start + self.seconds

    @property
    def search_deadline(self) -> float | None:
        return None if self.seconds is None else self.start + self.seconds * SEARCH_SHARE

    def elapsed(self) -> float:
        return self.clock.monotonic() - self.start


def make_plan(
    spec: ExperimentSpec,
    layout: RunLayout,
    storage_url: str,
    *,
    task: str,
    metric: str,
    direction: Direction,
    workers: int,
    budget: TimeBudget,
) -> SearchPlan:
    """What every search process needs: the folds (``search.cv`` makes them k-fold, stratified for
    classification, chronological for series), the budgets (20 trials when none is given) and the storage."""
    search = spec.search or SearchSpec()
    folds: list[int | None] = [None]
    data_spec = spec.data
    if search.cv:
        method = "stratified_kfold" if task == "classification" else "kfold"
        if data_spec.split.method == "timeseries" or task == "forecasting":
            method = "timeseries"
        data_spec = data_spec.model_copy(
            update={"split": data_spec.split.model_copy(update={"method": method, "n_folds": search.cv})}
        )
        folds = list(range(n_splits(data_spec)))
    if search.scheduler.name == "pbt":
        problem = pbt_problem(
            perturbation_interval=search.scheduler.perturbation_interval,
            workers=workers,
            epochs=None if "train.epochs" in search.space else spec.train.epochs,
        )
        if problem is not None:
            raise SpecError(problem + ".")
    n_trials = search.n_trials
    if n_trials is None and budget.seconds is None and search.max_total_epochs is None:
        n_trials = 20
    return SearchPlan(
        spec,
        data_spec,
        folds,
        layout.root,
        storage_url,
        metric,
        direction,
        workers=workers,
        n_trials=n_trials,
        search_deadline=budget.search_deadline,
    )
