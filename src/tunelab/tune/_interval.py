"""A candidate's 95% interval over its fresh runs, inside the metric's range.

A t-interval on the scores themselves can leave the range (two runs of accuracy 0.95 and 0.99 give an upper
end above 1). So the interval is a t-interval (``n - 1`` degrees of freedom) on a scale where the metric is
unbounded, mapped back: logit for scores in [0, 1] (accuracy, F1, ROC-AUC), log for errors and losses
(>= 0), log(1 - R²) for R² (<= 1). Few runs still give a wide interval; it cannot claim impossible values.

A proportion of ``n_rows`` validation rows (accuracy) is taken on the logit scale with the empirical-logit
correction, ``(k + 1/2) / (n + 1)``: a run that scores 1.0 on 73 rows is 5.0 there, not the 20.7 of 1 - 1e-9,
which would stretch the interval of runs at 0.96 to 1.0 from near 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["INTERVAL_METHOD", "interval", "metric_range"]

INTERVAL_METHOD = (
    "a 95% t-interval over the fresh runs on a scale where the metric is unbounded (logit for scores in "
    "[0, 1], for accuracy the empirical logit of its validation rows; log for errors), mapped back: it stays "
    "inside the metric's range"
)
_EPS = 1e-9  # how close to a bound a score is taken to be (logit and log of the bound itself are infinite)
_UNIT = ("accuracy", "f1", "roc_auc")
_POSITIVE = ("loss", "rmse", "mae")


def metric_range(metric: str) -> tuple[float, float]:
    """The values ``metric`` (``val_accuracy``, ``rmse``...) can take."""
    name = metric.removeprefix("val_")
    if name in _UNIT:
        return 0.0, 1.0
    if name in _POSITIVE:
        return 0.0, math.inf
    if name == "r2":
        return -math.inf, 1.0
    return -math.inf, math.inf


def _scale(
    metric: str, n_rows: int | None = None
) -> tuple[Callable[[float], float], Callable[[float], float]]:
    """The map to an unbounded scale and back, for ``metric``'s range (``n_rows``: see the module)."""
    low, high = metric_range(metric)
    if (low, high) == (0.0, 1.0):
        if n_rows:
            return (
                lambda x: math.log((x * n_rows + 0.5) / ((1 - x) * n_rows + 0.5)),
                lambda y: (
                    _clip(((n_rows + 1) / (1 + math.exp(-y)) - 0.5) / n_rows, 0.0, 1.0) if y > -700 else 0.0
                ),
            )
        return (
            lambda x: math.log(_clip(x, _EPS, 1 - _EPS) / (1 - _clip(x, _EPS, 1 - _EPS))),
            lambda y: 1 / (1 + math.exp(-y)) if y > -700 else 0.0,
        )
    if low == 0.0:
        return lambda x: math.log(max(x, _EPS)), lambda y: math.exp(min(y, 700))
    if high == 1.0:
        return lambda x: math.log(max(1 - x, _EPS)), lambda y: 1 - math.exp(min(y, 700))
    return lambda x: x, lambda y: y


def _clip(x: float, low: float, high: float) -> float:
    return min(max(x, low), high)


def interval(scores: Sequence[float], metric: str, *, n_rows: int | None = None) -> dict[str, Any]:
    """``n`` finite scores, their ``mean``, ``std`` and ``ci95`` (NaN ends with fewer than two scores);
    ``n_rows``: the validation rows behind each score, for proportions (accuracy) only."""
    finite = [s for s in scores if math.isfinite(s)]
    n = len(finite)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "ci95": (math.nan, math.nan)}
    mean = statistics.fmean(finite)
    std = statistics.stdev(finite) if n > 1 else 0.0
    if n == 1:
        return {"n": 1, "mean": mean, "std": std, "ci95": (math.nan, math.nan)}
    from scipy.stats import t

    forward, back = _scale(metric, n_rows if metric.removeprefix("val_") == "accuracy" else None)
    unbounded = [forward(s) for s in finite]
    centre = statistics.fmean(unbounded)
    half = float(t.ppf(0.975, n - 1)) * statistics.stdev(unbounded) / math.sqrt(n)
    low, high = sorted((back(centre - half), back(centre + half)))
    return {"n": n, "mean": mean, "std": std, "ci95": (low, high)}
