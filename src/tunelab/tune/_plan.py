"""The run's plan: its time budget (one absolute deadline) and what every search process needs."""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.clock import Clock
from tunelab.data import n_splits
from tunelab.errors import SpecError
from tunelab.execute import SearchPlan
from tunelab.layout import RunLayout
from tunelab.search import Direction, SearchSpec
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
        _check_pbt(spec, search, workers)
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


def _check_pbt(spec: ExperimentSpec, search: SearchSpec, workers: int) -> None:
    """What PBT needs beyond the search section (which checks itself): one process, and epochs enough for
    an exploit step before the last epoch."""
    if workers > 1:
        raise SpecError(
            f"scheduler pbt trains each population's trials side by side in one search process, so it cannot "
            f"use --workers {workers}. Use --workers 1, or another scheduler (asha, hyperband, median, none) "
            "with several workers."
        )
    interval, epochs = search.scheduler.perturbation_interval, spec.train.epochs
    if "train.epochs" not in search.space and interval >= epochs:
        fix = (
            f"Set search.scheduler.perturbation_interval between 2 and {epochs - 1}, or raise train.epochs."
            if epochs >= 3
            else "Raise train.epochs to at least 3 (the interval is at least 2)."
        )
        raise SpecError(
            f"scheduler pbt exploits every {interval} epochs (search.scheduler.perturbation_interval), but "
            f"trials train {epochs} epochs (train.epochs), so no exploit would ever be carried out "
            f"(none happens at the last epoch). {fix}"
        )
