"""The ``search:`` section of an experiment spec: what to vary (``space``, in the language of
:mod:`tunelab.search.space`), how to search (``sampler``, ``scheduler``, ``metric``), the budget
(``budget: 10m``, ``n_trials``...), and how to choose (``cv``, ``top_k``, ``n_seeds``, ``select``, ``refit``,
``ensemble``). For example
``{space: {train.lr: {float: [1e-4, 3e-2], log: true}}, scheduler: {name: asha}, budget: 10m, cv: 5}``.
Parameters whose name starts with ``_`` are helpers (a depth for ``per_layer``), not merged into the spec.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tunelab.errors import SpecError
from tunelab.search._packing import structural_paths
from tunelab.search._samplers import SAMPLER_NAMES
from tunelab.search.schedulers import (
    AshaScheduler,
    BaseScheduler,
    Direction,
    HyperbandScheduler,
    MedianStoppingScheduler,
    NoScheduler,
    PbtScheduler,
)
from tunelab.search.space import SearchSpace

__all__ = ["SchedulerSpec", "SearchSpec", "metric_direction", "parse_duration", "pbt_mutable", "pbt_problem"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr)?\s*$")
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0}
_MAXIMIZED = ("accuracy", "f1", "roc_auc", "r2")
_MINIMIZED = ("loss", "rmse", "mae")


def parse_duration(value: str | float | int, *, what: str = "budget") -> float:
    """``"90s"``, ``"10m"``, ``"1.5h"`` or a number of seconds → seconds (> 0)."""
    if isinstance(value, bool):
        raise SpecError(f"{what} must be a duration such as 60s, 10m or 1h; got {value!r}.")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).lower())
        if match is None:
            raise SpecError(
                f"{what} {value!r} is not a duration. Write a number with a unit: 60s, 10m, 1.5h "
                "(or a plain number of seconds)."
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not seconds > 0:
        raise SpecError(f"{what} must be longer than zero seconds; got {value!r}.")
    return seconds


def metric_direction(metric: str) -> Literal["minimize", "maximize"]:
    """Whether a validation metric (``val_accuracy``, ``val_loss``...) is to be maximized or minimized."""
    name = metric.removeprefix("val_")
    if name in _MAXIMIZED:
        return "maximize"
    if name in _MINIMIZED:
        return "minimize"
    raise SpecError(
        f"search.metric '{metric}' is not a metric tunelab knows the direction of. Use one of "
        f"{', '.join('val_' + m for m in _MAXIMIZED + _MINIMIZED)}, or set search.direction."
    )


class SchedulerSpec(BaseModel):
    """Early stopping of unpromising trials, with epochs as the resource; or population-based training.

    ``pbt``: the trials of a fused population train side by side; every ``perturbation_interval`` epochs a
    member in the bottom ``quantile_fraction`` copies the weights of one in the top and trains on with that
    member's hyperparameters perturbed (times 0.8 or 1.2, or redrawn with ``resample_probability``).
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["none", "median", "asha", "hyperband", "pbt"] = "asha"
    min_epochs: int = Field(default=1, ge=1, description="the first rung (ASHA / Hyperband) or grace period")
    reduction_factor: int = Field(default=3, ge=2, description="η: keep the top 1/η at each rung")
    n_startup_trials: int = Field(default=5, ge=0, description="median rule: trials before it may stop any")
    perturbation_interval: int = Field(default=4, ge=1, description="PBT: epochs between exploit steps")
    quantile_fraction: float = Field(
        default=0.25, gt=0.0, le=0.5, description="PBT: the bottom share copies the top share"
    )
    resample_probability: float = Field(
        default=0.25, ge=0.0, le=1.0, description="PBT: chance a copied value is redrawn, not scaled"
    )

    @model_validator(mode="after")
    def _fields_of_the_chosen_scheduler(self) -> SchedulerSpec:
        pbt_only = {"perturbation_interval", "quantile_fraction", "resample_probability"}
        others = {"min_epochs", "reduction_factor", "n_startup_trials"}
        # Set to other than the default (a dumped spec holds every field, so presence alone says nothing).
        given = {
            name for name, info in type(self).model_fields.items() if getattr(self, name) != info.default
        }
        if self.name != "pbt" and given & pbt_only:
            raise ValueError(
                f"{', '.join(sorted(given & pbt_only))} only apply to scheduler 'pbt', but the scheduler is "
                f"'{self.name}'; remove them or set name: pbt"
            )
        problem = (
            pbt_problem(perturbation_interval=self.perturbation_interval) if self.name == "pbt" else None
        )
        if problem is not None:
            raise ValueError(problem)
        if self.name == "pbt" and given & others:
            raise ValueError(
                f"{', '.join(sorted(given & others))} do not apply to scheduler 'pbt' (it stops no trial; it "
                "copies and perturbs them); PBT's settings are perturbation_interval, quantile_fraction and "
                "resample_probability"
            )
        return self


def pbt_problem(
    *,
    perturbation_interval: int,
    n_folds: int = 1,
    fused: str = "auto",
    sampler: str = "tpe",
    population_size: int | None = None,
    workers: int = 1,
    epochs: int | None = None,
) -> str | None:
    """Why scheduler pbt cannot run with these settings (the first reason, a sentence without its final
    stop), or None. PBT's rules, in one place: each caller passes what it knows (``epochs``: the trials'
    epochs when the space does not vary them)."""
    how = "scheduler pbt copies weights between trials trained side by side as one fused population"
    if perturbation_interval < 2:
        return (
            f"perturbation_interval {perturbation_interval} is too short: a population's members report one "
            "after another and PBT ranks each against the others' latest values, so it needs an epoch from "
            "every member between exploit steps; use 2 or more (the default is 4)"
        )
    if fused == "off":
        return (
            f"{how}, so it cannot run with search.fused 'off'; set search.fused to 'auto' (PBT then fuses "
            "whatever the measurement says) or choose another scheduler (asha, hyperband, median, none)"
        )
    if n_folds > 1:
        return (
            f"{how}; with search.cv ({n_folds} folds) every fold trains from scratch, so copied weights "
            "could not carry over between folds. Run PBT on a single split: drop search.cv (holdout "
            "validation), or choose another scheduler"
        )
    if sampler == "grid":
        return (
            f"{how}; the grid sampler fixes every parameter itself, so trials cannot be packed into "
            "populations. Use another sampler (tpe, random, qmc...) or another scheduler"
        )
    if population_size is not None and population_size < 2:
        return (
            f"{how}; a population of {population_size} has no other member to copy. Set "
            "search.population_size to at least 2 (4 or more works best) or leave it out"
        )
    if workers > 1:
        return (
            f"{how}, trained in one search process, so it cannot use --workers {workers}. Use --workers 1, "
            "or another scheduler (asha, hyperband, median, none) with several workers"
        )
    if epochs is not None and perturbation_interval >= epochs:
        fix = (
            f"set search.scheduler.perturbation_interval between 2 and {epochs - 1}, or raise train.epochs"
            if epochs >= 3
            else "raise train.epochs to at least 3 (the interval is at least 2)"
        )
        return (
            f"scheduler pbt exploits every {perturbation_interval} epochs "
            f"(search.scheduler.perturbation_interval), but trials train {epochs} epochs (train.epochs), so "
            f"no exploit would ever be carried out (none happens at the last epoch): {fix}"
        )
    return None


def pbt_mutable(space: SearchSpace, per_member_paths: Collection[str]) -> list[str]:
    """The parameters PBT may perturb in ``space``: those it would by default (float and choice parameters,
    not per-layer, that nothing depends on) that are not structural (``per_member_paths``: what members of a
    population may hold each their own values of). Structural parameters (layer widths, batch size,
    optimizer...) are equal within a population and shape its tensors, so they cannot change while weights
    are copied between members."""
    structural = structural_paths(space, per_member_paths)
    mutable = [path for path in PbtScheduler(space).mutable if path not in structural]
    if not mutable:
        raise SpecError(
            "scheduler pbt has nothing to perturb: it changes float and choice parameters that each member "
            "trains with (train.lr, train.weight_decay, model.dropout...), and search.space has none (its "
            f"parameters: {', '.join(sorted(space))}). Add one, or choose another scheduler."
        )
    return mutable


class SearchSpec(BaseModel):
    """How ``tunelab tune`` searches. At least one budget applies (``n_trials`` defaults to 20 when none is
    given). The space is checked when the spec is loaded."""

    model_config = ConfigDict(extra="forbid")

    space: dict[str, Any] = Field(default_factory=dict)
    metric: str | None = None
    direction: Literal["auto", "minimize", "maximize"] = "auto"
    sampler: str = "tpe"
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    n_trials: int | None = Field(default=None, ge=1)
    budget: str | float | None = None
    max_total_epochs: int | None = Field(default=None, ge=1)
    target: float | None = None
    cv: int | None = Field(default=None, ge=2, le=20, description="k-fold cross-validation inside the search")
    top_k: int = Field(default=3, ge=1, description="candidates re-evaluated across folds and seeds")
    n_seeds: int = Field(default=2, ge=1, description="training seeds per candidate in the re-evaluation")
    refit: bool | Literal["all"] = Field(
        default="all",
        description="true: retrain the winner on train + validation, then test it once; 'all' (the "
        "default): that, then train the delivered model once more on every row (train + validation + "
        "test; same configuration, seed and epochs) when it fits the budget and the data set has no test "
        "part of its own, the test score describing that recipe trained without the test rows; false: "
        "deliver the winner as the search trained it",
    )
    select: Literal["simplest", "best"] = Field(
        default="simplest",
        description="the winner: the candidate with the fewest parameters within one standard error of the "
        "best mean (simplest), or the best mean (best)",
    )
    ensemble: bool = Field(
        default=True,
        description="deliver an ensemble of the re-evaluation runs when it beats the winner on validation",
    )
    fused: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="train trials of one structure as a fused population; auto decides by measurement",
    )
    population_size: int | None = Field(
        default=None, ge=1, le=256, description="members per fused population (None: chosen by measurement)"
    )
    first_trials: list[dict[str, Any]] = Field(
        default_factory=list,
        description="parameter sets tried first, by the space's parameter names; queued as the study starts",
    )

    @field_validator("space")
    @classmethod
    def _check_space(cls, value: dict[str, Any]) -> dict[str, Any]:
        SearchSpace.from_dict(value)  # raises SpecError with the details
        return value

    @model_validator(mode="after")
    def _check_first_trials(self) -> SearchSpec:
        space = self.search_space()
        for index, params in enumerate(self.first_trials):
            try:
                space.check_params(params)
            except SpecError as err:
                raise ValueError(f"search.first_trials[{index}]: {err}") from None
        return self

    @field_validator("sampler")
    @classmethod
    def _check_sampler(cls, value: str) -> str:
        if value not in SAMPLER_NAMES:
            raise ValueError(f"unknown sampler '{value}'; choose one of {', '.join(SAMPLER_NAMES)}")
        return value

    @field_validator("budget")
    @classmethod
    def _check_budget(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _check_pbt(self) -> SearchSpec:
        """PBT copies weights between trials trained side by side, which rules some settings out."""
        if self.scheduler.name != "pbt":
            return self
        problem = pbt_problem(
            perturbation_interval=self.scheduler.perturbation_interval,
            n_folds=self.cv or 1,
            fused=self.fused,
            sampler=self.sampler,
            population_size=self.population_size,
        )
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def budget_seconds(self) -> float | None:
        return None if self.budget is None else parse_duration(self.budget)

    def search_space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.space)

    def make_scheduler(
        self, max_epochs: int, direction: Direction, *, per_member_paths: Collection[str] = (), seed: int = 0
    ) -> BaseScheduler:
        """The scheduler :attr:`scheduler` names, for trials of up to ``max_epochs`` epochs (folds
        included). PBT perturbs only parameters members of a population hold each their own values of
        (``per_member_paths``); its draws (sources, perturbations) are seeded with ``seed``."""
        cfg = self.scheduler
        if cfg.name == "pbt":
            space = self.search_space()
            return PbtScheduler(
                space,
                perturbation_interval=cfg.perturbation_interval,
                quantile_fraction=cfg.quantile_fraction,
                resample_probability=cfg.resample_probability,
                mutable=pbt_mutable(space, per_member_paths),
                seed=seed,
                direction=direction,
            )
        if cfg.name == "none" or max_epochs <= cfg.min_epochs:
            return NoScheduler(direction=direction)
        if cfg.name == "median":
            return MedianStoppingScheduler(
                n_startup_trials=max(1, cfg.n_startup_trials),
                grace_epochs=cfg.min_epochs,
                direction=direction,
            )
        kind = AshaScheduler if cfg.name == "asha" else HyperbandScheduler
        return kind(
            min_resource=cfg.min_epochs,
            max_resource=max_epochs,
            reduction_factor=cfg.reduction_factor,
            direction=direction,
        )
