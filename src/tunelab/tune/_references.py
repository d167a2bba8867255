"""The reference forecasts a forecasting run's winner is reported beside: seasonal naive and lagged ridge.

Both are computed on the same windows the search used (``evaluator.bundle(None)``: the holdout split) and
scored in the target's own units over every forecast step. On the validation part each is fitted on the
training part; on the test part on what the delivered model was trained on: train + validation after a
refit, else the training part. A model that does not beat them has learned nothing a one-line forecast
does not know.

- **seasonal naive**: each step repeats the value one season earlier, ``y[t + j - m * ceil(j / m)]`` for
  step ``j`` after the last observed row ``t`` and season ``m`` (``data.season``, or inferred from the time
  column's spacing; 1 is the naive forecast, the last value).
- **lagged ridge**: scikit-learn's ``RidgeCV`` on the flattened windows (every feature at each of the
  ``data.window`` lags, scaled as the networks see them), its penalty chosen by time-ordered
  cross-validation on the rows it is fitted on.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tunelab.data import DataBundle, Dataset, DataSpec, season_length
from tunelab.errors import SpecError

__all__ = ["forecast_references"]

_ALPHAS = np.logspace(-4, 4, 17)
_CV_FOLDS = 5


def forecast_references(
    spec: DataSpec,
    dataset: Dataset,
    bundle: DataBundle,
    *,
    refit: bool,
    winner_validation: dict[str, float],
    winner_test: dict[str, float],
) -> dict[str, Any]:
    """The ``references`` record of ``summary.json``: seasonal naive and lagged ridge on the validation and
    test parts, beside the winner's figures (``winner_validation``: its re-evaluation's mean of the search
    metric; ``winner_test``: its test metrics), all in the target's units."""
    indices = bundle.indices
    preprocessor = bundle.preprocessor
    if indices is None or preprocessor is None:
        raise SpecError("forecast references need a prepared forecasting bundle (indices and preprocessing).")
    season, season_from = season_length(spec, dataset)
    target = np.asarray(dataset.target, dtype=np.float64)
    window, horizon = spec.window, spec.horizon

    def truth(positions: np.ndarray) -> np.ndarray:
        return target[positions[:, None] + window + np.arange(horizon)]

    def ridge(fit_on: list[tuple[Any, Any]], windows: Any) -> tuple[np.ndarray, float]:
        features = np.concatenate([_flat(x) for x, _ in fit_on])
        targets = np.concatenate([y.double().numpy().reshape(len(y), -1) for _, y in fit_on])
        model = _fit_ridge(features, targets)
        predicted = model.predict(_flat(windows)).reshape(len(windows), -1)
        return preprocessor.inverse_target(predicted), float(model.alpha_)

    val_ridge, val_alpha = ridge([(bundle.X_train, bundle.y_train)], bundle.X_val)
    test_parts = [(bundle.X_train, bundle.y_train)] + ([(bundle.X_val, bundle.y_val)] if refit else [])
    test_ridge, test_alpha = ridge(test_parts, bundle.X_test)
    parts: dict[str, Any] = {}
    for part, positions, ridged, alpha, winner in (
        ("validation", indices.val, val_ridge, val_alpha, winner_validation),
        ("test", indices.test, test_ridge, test_alpha, winner_test),
    ):
        actual = truth(positions)
        naive = _seasonal_naive(target, positions + window - 1, horizon, season)
        parts[part] = {
            "winner": winner,
            "lagged_ridge": {**_errors(ridged, actual), "alpha": alpha},
            "seasonal_naive": _errors(naive, actual),
        }
    fitted = "train + validation" if refit else "the training part"
    return {
        "season": season,
        "season_from": season_from,
        "lags": window,
        **parts,
        "how": (
            f"seasonal naive repeats the value {season} row(s) earlier; lagged ridge is RidgeCV on the "
            f"{window} lags of every window feature. On the validation part both are fitted on the training "
            f"part, on the test part on {fitted}, as the winner was; errors in the target's units over "
            f"{horizon} forecast step(s)."
        ),
    }


def _flat(windows: Any) -> np.ndarray:
    return np.asarray(windows.double().numpy()).reshape(len(windows), -1)


def _fit_ridge(features: np.ndarray, targets: np.ndarray) -> Any:
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import TimeSeriesSplit

    # Time-ordered folds where there are rows enough for them; leave-one-out (RidgeCV's own) otherwise.
    cv = TimeSeriesSplit(n_splits=_CV_FOLDS) if len(features) >= 4 * _CV_FOLDS else None
    return RidgeCV(alphas=_ALPHAS, cv=cv).fit(features, targets)


def _seasonal_naive(target: np.ndarray, last_rows: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """Per window (its last observed row in ``last_rows``), step j's value one season before it."""
    steps = np.arange(1, horizon + 1)
    sources = last_rows[:, None] + steps - season * np.ceil(steps / season).astype(np.int64)
    if len(sources) and int(sources.min()) < 0:
        raise SpecError(
            f"data.season is {season}, but the series has only {int(last_rows.min()) + 1} rows before the "
            "first window it is asked for; give a shorter season (data.season) or a longer series."
        )
    return target[sources]


def _errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    error = np.asarray(predicted, dtype=np.float64).reshape(actual.shape) - actual
    return {"rmse": math.sqrt(float(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}
