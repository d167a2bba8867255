"""What a tuning run found, as typed records; ``summary.json`` is :meth:`TuneResult.to_dict`."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunelab.search import StudySummary
from tunelab.storage import StudyCounts
from tunelab.train import Trainer

__all__ = [
    "Candidate",
    "EnsembleChoice",
    "Refit",
    "SeedRun",
    "Selection",
    "TuneProtocol",
    "TuneResult",
]


@dataclass(frozen=True)
class SeedRun:
    """One fresh training seed of a candidate, completed on every fold: its ``seed``, its models' raw
    ``outputs`` on each fold's validation part (what an ensemble is chosen from), the wall ``seconds`` it
    took, all folds together, and the first fold's ``trainer`` (its model, delivered when no refit fits the
    budget)."""

    seed: int
    outputs: tuple[torch.Tensor, ...]
    seconds: float
    trainer: Trainer | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Candidate:
    """A configuration re-evaluated after the search: its ``scores`` over fresh training seeds and folds,
    their mean, standard deviation and 95% interval over ``n`` finite runs (``n`` 0: not re-evaluated, the
    budget was spent). Under PBT ``params`` are the values the trial ended with; ``initial_params``, the
    number of exploits and where the values came from are kept too."""

    trial: int
    params: dict[str, Any]
    search_value: float | None
    scores: list[float] = field(default_factory=list)
    best_epochs: list[int] = field(default_factory=list)
    n: int = 0
    mean: float = math.nan
    std: float = math.nan
    ci95: tuple[float, float] = (math.nan, math.nan)
    initial_params: dict[str, Any] | None = None
    pbt_exploits: int | None = None
    params_from: str | None = None
    runs: tuple[SeedRun, ...] = field(default=(), repr=False, compare=False)
    # The measured wall time of one of its epochs on a fold's training part (NaN: unknown).
    epoch_seconds: float = math.nan

    @property
    def value(self) -> float | None:
        """The candidate's estimate: the re-evaluation's mean, or the search's own value without one."""
        return self.mean if self.n else self.search_value

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "trial": self.trial,
            "params": self.params,
            "search_value": self.search_value,
            "scores": list(self.scores),
            "best_epochs": list(self.best_epochs),
        }
        if self.initial_params is not None:
            record.update(
                initial_params=self.initial_params,
                pbt_exploits=self.pbt_exploits,
                params_from=self.params_from,
            )
        record.update(n=self.n, mean=self.mean, std=self.std, ci95=list(self.ci95))
        return record


@dataclass(frozen=True)
class Refit:
    """The winner retrained on train + validation for ``epochs`` (``on_train_and_validation``), or as trained
    on the training part; its ``test_metrics``, evaluated once. ``on_every_row``: the delivered model was then
    trained once more on every row, test rows included (``search.refit: all``; ``every_row_note`` says how,
    or why not), so the test metrics describe its recipe trained without them."""

    epochs: int
    test_metrics: dict[str, float]
    on_train_and_validation: bool = True
    # How the delivered model was trained when the budget shaped it (fewer epochs, or no refit); None if not.
    budget_note: str | None = None
    on_every_row: bool = False
    every_row_note: str | None = None


@dataclass(frozen=True)
class EnsembleChoice:
    """Whether an ensemble of the re-evaluation runs is delivered instead of the single winner, and why.

    ``members``: one record per model (trial, the seed of the run whose validation outputs chose it, the seed
    and epochs of the model delivered, its weight). ``validation``: the decision's scores in the metric's
    units (cross-fitted: chosen on half the validation rows, scored on the other), ``gain`` positive when the
    ensemble is better; ``in_sample``: the ensemble's score on all validation rows, which chose its weights
    (optimistic). ``test_metrics``: the ensemble's, when it was built; ``single_test_metrics``: the winner's.
    """

    delivered: bool
    reason: str
    single_test_metrics: dict[str, float]
    members: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "reason": self.reason,
            "members": self.members,
            "validation": self.validation,
            "test_metrics": self.test_metrics,
            "single_winner_test_metrics": self.single_test_metrics,
        }


@dataclass(frozen=True)
class Selection:
    """How the winner was chosen: the ``best`` mean's trial, the ``winner``'s, and per trial its trainable
    ``parameters``, its mean's ``difference`` from the best (positive: worse, in the metric's units) and that
    difference's ``standard_error``."""

    rule: str
    best: int
    winner: int
    reason: str
    parameters: dict[int, int] = field(default_factory=dict)
    difference: dict[int, float] = field(default_factory=dict)
    standard_error: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "best_mean_trial": self.best,
            "winner_trial": self.winner,
            "reason": self.reason,
            "candidates": [
                {
                    "trial": trial,
                    "parameters": self.parameters[trial],
                    "difference_from_best": self.difference.get(trial),
                    "standard_error": self.standard_error.get(trial),
                }
                for trial in self.parameters
            ],
        }


@dataclass(frozen=True)
class TuneProtocol:
    """How the run chose its model, in words (each field a sentence of ``summary.json``'s protocol)."""

    validation: str
    sampler: str
    scheduler: str
    reevaluation: str
    refit: str
    test: str
    workers: int = 1
    fusion: dict[str, Any] = field(default_factory=dict)
    pbt: str | None = None
    ensemble: str | None = None

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "validation": self.validation,
            "sampler": self.sampler,
            "scheduler": self.scheduler,
            "reevaluation": self.reevaluation,
            "refit": self.refit,
            "test": self.test,
        }
        if self.ensemble is not None:
            record["ensemble"] = self.ensemble
        if self.pbt is not None:
            record["pbt"] = self.pbt
        record.update(workers=self.workers, fusion=self.fusion)
        return record


@dataclass(frozen=True)
class TuneResult:
    """What ``tune_experiment`` found and delivered; ``summary.json`` in the run directory is
    :meth:`to_dict`. ``trainer`` holds the delivered model (``trainer.model``), ``study`` the search's
    own summary; ``ensemble`` whether an ensemble was delivered instead of the winner, and why."""

    run_dir: Path
    name: str
    task: str
    metric: str
    direction: str
    candidates: list[Candidate]
    refit: Refit
    study: StudySummary
    elapsed_seconds: float
    protocol: TuneProtocol
    storage: str
    importance: dict[str, float] = field(default_factory=dict)
    trainer: Trainer | None = field(default=None, repr=False, compare=False)
    export: str = "best/"
    # Forecasting: seasonal naive and lagged ridge beside the winner (tunelab.tune._references).
    references: dict[str, Any] | None = None
    ensemble: EnsembleChoice | None = None
    # How the winner was chosen among the candidates (tunelab.tune._simplest); None: the best mean.
    selection: Selection | None = None

    @property
    def trials(self) -> StudyCounts:
        """The study's trials by how they ended (all workers' with ``--workers``), and their epochs."""
        return self.study.counts

    @property
    def stop_reason(self) -> str:
        return self.study.stop_reason

    @property
    def winner(self) -> Candidate:
        return self.candidates[0]

    @property
    def best_params(self) -> dict[str, Any]:
        return self.winner.params

    @property
    def best_value(self) -> float | None:
        return self.winner.value

    @property
    def delivered(self) -> str:
        """What ``best/`` holds: "ensemble" or "single winner"."""
        return "ensemble" if self.ensemble is not None and self.ensemble.delivered else "single winner"

    @property
    def test_metrics(self) -> dict[str, float]:
        """The delivered model's test metrics (the ensemble's when it was delivered)."""
        if self.ensemble is not None and self.ensemble.delivered and self.ensemble.test_metrics is not None:
            return self.ensemble.test_metrics
        return self.refit.test_metrics

    def to_dict(self) -> dict[str, Any]:
        """The content of ``summary.json`` (non-finite numbers are written as null)."""
        winner = self.winner
        summary: dict[str, Any] = {
            "name": self.name,
            "task": self.task,
            "metric": self.metric,
            "direction": self.direction,
            "best_params": winner.params,
            "best_value": self.best_value,
            "best_trial": winner.trial,
            "delivered": self.delivered,
            "test_metrics": self.test_metrics,
            "trials": {
                "complete": self.trials.n_complete,
                "pruned": self.trials.n_pruned,
                "failed": self.trials.n_failed,
                "total": self.trials.n_finished,
            },
            "epochs_trained_in_search": self.trials.n_epochs,
            "stop_reason": self.stop_reason,
            **({"refit_budget": self.refit.budget_note} if self.refit.budget_note else {}),
            # Whether the delivered model saw the validation rows (refit on train + validation): then its
            # score on them is not an estimate, and `tunelab compress` measures drops against best_value.
            "trained_on_validation": self.refit.on_train_and_validation or self.refit.on_every_row,
            # Whether it also saw the test rows (search.refit: all): test_metrics are then its recipe's,
            # measured before that last fit, not the delivered model's own.
            "trained_on_test": self.refit.on_every_row,
            **({"refit_every_row": self.refit.every_row_note} if self.refit.every_row_note else {}),
            "elapsed_seconds": round(self.elapsed_seconds, 2),
            "candidates": [c.to_dict() for c in self.candidates],
            **({"selection": self.selection.to_dict()} if self.selection is not None else {}),
            **({"ensemble": self.ensemble.to_dict()} if self.ensemble is not None else {}),
            "importance": self.importance,
            "protocol": self.protocol.to_dict(),
            "storage": self.storage,
            "export": self.export,
        }
        if self.references is not None:
            summary["references"] = self.references
        if winner.initial_params is not None:
            summary["best_params_are"] = (
                f"the values trial {winner.trial} ended with under PBT, from {winner.params_from}; it "
                "started from best_initial_params"
            )
            summary["best_initial_params"] = winner.initial_params
        return summary

    @property
    def summary(self) -> dict[str, Any]:
        """:meth:`to_dict`: what ``summary.json`` holds, as a dict."""
        return self.to_dict()

    @property
    def extra(self) -> dict[str, Any]:
        """Deprecated: ``result.trainer``. Goes in the next release."""
        warnings.warn(
            'TuneResult.extra is deprecated: use result.trainer instead of result.extra["trainer"]',
            DeprecationWarning,
            stacklevel=2,
        )
        return {"trainer": self.trainer}
