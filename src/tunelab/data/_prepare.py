"""From a spec to a :class:`DataBundle`: load, split, fit preprocessing on train only, transform all parts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tunelab.data._array_features import ImageFeatures, SequenceFeatures
from tunelab.data._bundle import DataBundle
from tunelab.data._dataset import Dataset, take_rows
from tunelab.data._preprocessor import FeatureTransform, Preprocessor
from tunelab.data._sources import load_dataset
from tunelab.data._spec import DataSpec
from tunelab.data._splits import SplitIndices, split_indices
from tunelab.data._table_features import TableFeatures, WindowFeatures
from tunelab.data._targets import ClassTarget, ScaledTarget
from tunelab.data._text_features import TextFeatures
from tunelab.errors import DataError

__all__ = ["prepare_data"]


def prepare_data(
    spec: DataSpec, *, seed: int, fold: int | None = None, dataset: Dataset | None = None
) -> DataBundle:
    """Split the data, fit the preprocessing on the training part, and return tensors for every part.

    The test part is the source's own when it has one, else ``split.test_fraction`` of the rows (stratified
    for classification, the last rows for time series); it depends on ``seed`` only. Validation comes from the
    rest: ``fold=None`` gives one part of ``split.val_fraction``, ``fold=i`` the i-th of ``n_splits(spec)``
    folds. Pass a ``dataset`` from :func:`load_dataset` to prepare several folds without reading the source
    again.

    >>> bundle = prepare_data(DataSpec(source="iris"), seed=0)
    >>> bundle.X_train.shape[1], bundle.n_classes
    (4, 3)
    """
    dataset = load_dataset(spec) if dataset is None else dataset
    if dataset.task == "forecasting":
        return _prepare_forecast(spec, dataset, seed=seed, fold=fold)
    classification = dataset.task == "classification"
    indices = split_indices(
        dataset.n_rows,
        spec.split,
        seed=seed,
        fold=fold,
        labels=dataset.target if classification else None,
        has_test_part=dataset.has_test_part,
    )
    train_features = take_rows(dataset.features, indices.train)
    features = _fit_features(dataset, train_features, spec)
    if classification:
        labels = (
            dataset.target
            if dataset.test_target is None
            else np.concatenate([dataset.target, dataset.test_target])
        )
        target: ClassTarget | ScaledTarget = ClassTarget.fit(labels, label_names=dataset.label_names)
    else:
        target = ScaledTarget.fit(dataset.target[indices.train])
    preprocessor = Preprocessor(features, target, task=dataset.task, kind=dataset.kind)
    if dataset.test_features is not None and dataset.test_target is not None:
        test_features, test_target = dataset.test_features, dataset.test_target
    else:
        test_features, test_target = take_rows(dataset.features, indices.test), dataset.target[indices.test]
    parts = [
        (train_features, dataset.target[indices.train]),
        (take_rows(dataset.features, indices.val), dataset.target[indices.val]),
        (test_features, test_target),
    ]
    tensors = [
        tensor for X, y in parts for tensor in (preprocessor.transform(X), preprocessor.transform_target(y))
    ]
    return _bundle(tensors, dataset, preprocessor, indices)


def _prepare_forecast(spec: DataSpec, dataset: Dataset, *, seed: int, fold: int | None) -> DataBundle:
    """Windows of ``window`` past rows (all numeric columns) → the next ``horizon`` target values.

    Splits are chronological over window positions, with ``horizon - 1`` positions left out between parts so
    that no target value of a training window is a target of a validation or test window. The scaler sees
    only the rows the training windows cover; targets share the series column's scaling.
    """
    series = dataset.features
    if not isinstance(series, pd.DataFrame):  # load_dataset builds forecasting data from tables only
        raise DataError("forecasting needs a table series (CSV / Parquet)")
    window, horizon = spec.window, spec.horizon
    n_windows = len(series) - window - horizon + 1
    if n_windows < 3:
        raise DataError(
            f"the series has {len(series)} rows, but window ({window}) + horizon ({horizon}) need "
            f"{window + horizon} rows for one sample, and train / validation / test need several samples. "
            "Fix: lower `window` or `horizon`, or provide a longer series (max_rows may be cutting it)."
        )
    indices = split_indices(n_windows, spec.split, seed=seed, fold=fold, chronological=True, gap=horizon - 1)
    covered = series.iloc[int(indices.train.min()) : int(indices.train.max()) + window + horizon]
    features = WindowFeatures.fit(covered, window=window)
    # Target windows: position i holds the target at rows i + window .. i + window + horizon - 1.
    future = np.lib.stride_tricks.sliding_window_view(dataset.target.astype(np.float64), horizon)[window:]
    # The targets are scaled as the series' own column of the windows (feature 0), so that a model can add a
    # window's last value to its forecast (model.normalize: last); fitted on the training rows either way.
    scaling = features.table
    target = ScaledTarget(mean=np.full(horizon, scaling.mean[0]), scale=np.full(horizon, scaling.scale[0]))
    preprocessor = Preprocessor(features, target, task="forecasting", kind="sequence")
    windows = preprocessor.transform(series)[:n_windows]
    tensors = []
    for part in (indices.train, indices.val, indices.test):
        tensors += [windows[torch.from_numpy(part)], preprocessor.transform_target(future[part])]
    return _bundle(tensors, dataset, preprocessor, indices)


def _fit_features(dataset: Dataset, train: pd.DataFrame | np.ndarray, spec: DataSpec) -> FeatureTransform:
    if isinstance(train, pd.DataFrame) and dataset.kind == "text":
        options = spec.text
        return TextFeatures.fit(
            train,
            list(dataset.text_columns),
            tokenizer=options.tokenizer,
            vocab_size=options.vocab_size,
            max_length=options.max_length,
            min_frequency=options.min_frequency,
            lowercase=options.lowercase,
        )
    if isinstance(train, pd.DataFrame):
        return TableFeatures.fit(train)
    if dataset.kind == "image":
        return ImageFeatures.fit(train)
    return SequenceFeatures.fit(train)


def _bundle(
    tensors: list[torch.Tensor], dataset: Dataset, preprocessor: Preprocessor, indices: SplitIndices
) -> DataBundle:
    X_train, y_train, X_val, y_val, X_test, y_test = tensors
    classification = dataset.task == "classification"
    return DataBundle(
        X_train=X_train,
        y_train=y_train,
        X_val=X_val,
        y_val=y_val,
        X_test=X_test,
        y_test=y_test,
        task=dataset.task,
        kind=dataset.kind,
        n_classes=preprocessor.output_dim if classification else None,
        class_names=preprocessor.class_names,
        feature_names=preprocessor.feature_names,
        input_shape=preprocessor.input_shape,
        output_dim=preprocessor.output_dim,
        target_scale=preprocessor.target_scale,
        preprocessor=preprocessor,
        text=preprocessor.text_input,
        notices=list(dataset.notices)
        + ([preprocessor.features.describe()] if isinstance(preprocessor.features, TextFeatures) else []),
        indices=indices,
        name=dataset.name,
    )
