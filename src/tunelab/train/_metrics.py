"""Evaluation metrics, computed by scikit-learn on CPU numpy arrays once per evaluation (never per step)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn import metrics as skm

from tunelab.errors import SpecError

__all__ = [
    "DEFAULT_METRICS",
    "GREATER_IS_BETTER",
    "METRICS",
    "compute_metrics",
    "metric_from_row_means",
    "metric_row_terms",
    "resolve_metrics",
]

# metric name -> the task family it applies to
METRICS: dict[str, str] = {
    "accuracy": "classification",
    "f1": "classification",  # macro-averaged over classes
    "roc_auc": "classification",  # binary, or one-vs-rest macro average
    "rmse": "regression",  # averaged over targets, like scikit-learn
    "mae": "regression",
    "r2": "regression",
}
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1"),
    "regression": ("rmse", "mae", "r2"),
}
GREATER_IS_BETTER = frozenset({"accuracy", "f1", "roc_auc", "r2"})


def _family(task: str) -> str:
    return "classification" if task == "classification" else "regression"  # forecasting is regression


def resolve_metrics(task: str, names: Sequence[str] | None) -> tuple[str, ...]:
    """The metrics to report for ``task``: ``names`` checked against the task, or its defaults."""
    family = _family(task)
    if names is None:
        return DEFAULT_METRICS[family]
    wrong = [name for name in names if METRICS[name] != family]
    if wrong:
        valid = [name for name, kind in METRICS.items() if kind == family]
        raise SpecError(
            f"metrics {wrong} do not apply to a {task} task. Valid metrics for {task}: {', '.join(valid)}"
        )
    return tuple(names)


def compute_metrics(
    names: Sequence[str], prediction: torch.Tensor, target: torch.Tensor, *, n_classes: int | None = None
) -> dict[str, float]:
    """Metrics of ``prediction`` against ``target``.

    Classification: ``prediction`` holds probabilities ``[N, C]``, ``target`` class ids ``[N]``.
    Regression: ``prediction`` and ``target`` are values ``[N, T]`` in the same (original) units.
    A metric that is undefined here (roc_auc with one class present, non-finite predictions) is NaN.
    """
    pred = prediction.detach().to("cpu", torch.float64).numpy()
    true = target.detach().cpu().numpy()
    if not np.isfinite(pred).all():
        return {name: float("nan") for name in names}
    return {name: _METRIC_FUNCTIONS[name](true, pred, n_classes) for name in names}


def metric_row_terms(name: str, prediction: torch.Tensor, target: torch.Tensor) -> np.ndarray | None:
    """Per-row terms ``[N, K]`` of metric ``name`` (arguments as for :func:`compute_metrics`), whose column
    means give the metric by :func:`metric_from_row_means`: for accuracy, 1 where the row is right; for rmse
    the squared error per target; for mae the absolute error per target. None for a metric that is not a
    mean over rows (f1, roc_auc, r2). Reweighting the rows (a bootstrap) reweights the terms."""
    if name not in ("accuracy", "rmse", "mae"):
        return None
    pred = prediction.detach().to("cpu", torch.float64).numpy()
    true = target.detach().cpu().numpy()
    if name == "accuracy":
        return (pred.argmax(axis=1) == true).astype(np.float64)[:, None]
    error = pred - true.reshape(pred.shape)
    return error**2 if name == "rmse" else np.abs(error)


def metric_from_row_means(name: str, means: np.ndarray) -> np.ndarray:
    """The metric from the (weighted) means of its row terms over rows: ``means`` is ``[..., K]``."""
    return np.sqrt(means).mean(axis=-1) if name == "rmse" else means.mean(axis=-1)


def _accuracy(true: np.ndarray, prob: np.ndarray, _n_classes: int | None) -> float:
    return float(skm.accuracy_score(true, prob.argmax(axis=1)))


def _f1(true: np.ndarray, prob: np.ndarray, n_classes: int | None) -> float:
    labels = list(range(n_classes if n_classes is not None else prob.shape[1]))
    return float(skm.f1_score(true, prob.argmax(axis=1), labels=labels, average="macro", zero_division=0))


def _roc_auc(true: np.ndarray, prob: np.ndarray, n_classes: int | None) -> float:
    n = n_classes if n_classes is not None else prob.shape[1]
    if len(np.unique(true)) < n:  # a class absent from `true`: its one-vs-rest area is undefined
        return float("nan")
    if n == 2:
        return float(skm.roc_auc_score(true, prob[:, 1]))
    return float(skm.roc_auc_score(true, prob, multi_class="ovr", labels=list(range(n))))


def _rmse(true: np.ndarray, pred: np.ndarray, _n_classes: int | None) -> float:
    per_target = skm.mean_squared_error(true, pred, multioutput="raw_values")
    return float(np.sqrt(per_target).mean())


def _mae(true: np.ndarray, pred: np.ndarray, _n_classes: int | None) -> float:
    return float(skm.mean_absolute_error(true, pred))


def _r2(true: np.ndarray, pred: np.ndarray, _n_classes: int | None) -> float:
    if len(true) < 2:
        return float("nan")
    return float(skm.r2_score(true, pred))


_METRIC_FUNCTIONS = {
    "accuracy": _accuracy,
    "f1": _f1,
    "roc_auc": _roc_auc,
    "rmse": _rmse,
    "mae": _mae,
    "r2": _r2,
}
