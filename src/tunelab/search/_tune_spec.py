"""The ``search:`` section of an experiment spec: what to vary, how to search, and the budget.

Example::

    search:
      space:
        train.lr: {float: [1e-4, 3e-2], log: true}
        train.optimizer: {choice: [adam, sgd]}
        train.momentum: {float: [0.5, 0.99], when: {train.optimizer: sgd}}
        _depth: {int: [1, 3]}                           # a helper parameter: not written into the spec
        model.hidden: {per_layer: _depth, int: [32, 512], log: true}
      metric: val_accuracy
      sampler: tpe
      scheduler: {name: asha, min_epochs: 1, reduction_factor: 3}
      budget: 10m
      cv: 5

Parameters whose name starts with ``_`` are helpers for other parameters (a depth for ``per_layer``); they are
recorded with the trial but not merged into the spec.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunelab.errors import SpecError
from tunelab.search._samplers import SAMPLER_NAMES
from tunelab.search.space import SearchSpace

__all__ = ["SchedulerSpec", "SearchSpec", "metric_direction", "parse_duration"]

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
    """Early stopping of unpromising trials, with epochs as the resource."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["none", "median", "asha", "hyperband"] = "asha"
    min_epochs: int = Field(default=1, ge=1, description="the first rung (ASHA / Hyperband) or grace period")
    reduction_factor: int = Field(default=3, ge=2, description="η: keep the top 1/η at each rung")
    n_startup_trials: int = Field(default=5, ge=0, description="median rule: trials before it may stop any")


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
    refit: bool = Field(default=True, description="retrain the winner on train + validation before testing")
    fused: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="train trials of one structure as a fused population; auto decides by measurement",
    )
    population_size: int | None = Field(
        default=None, ge=1, le=256, description="members per fused population (None: chosen by measurement)"
    )

    @field_validator("space")
    @classmethod
    def _check_space(cls, value: dict[str, Any]) -> dict[str, Any]:
        SearchSpace.from_dict(value)  # raises SpecError with the details
        return value

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

    @property
    def budget_seconds(self) -> float | None:
        return None if self.budget is None else parse_duration(self.budget)

    def search_space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.space)
