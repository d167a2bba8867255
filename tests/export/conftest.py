"""Three small trained models (table, image, sequence) with their raw test rows, each exported once."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from tunelab.data import DataBundle, DataSpec, load_dataset, prepare_data
from tunelab.export import export_model
from tunelab.models import ModelSpec, build_model, parse_model_spec
from tunelab.train import Trainer, TrainSpec


@dataclass(frozen=True)
class Trained:
    """A model trained in this process, the raw rows of its test part, and its export directory."""

    bundle: DataBundle
    trainer: Trainer
    spec: ModelSpec
    raw: Any  # the whole source as the user has it: a DataFrame, or raw image arrays
    raw_test: Any  # the rows of ``raw`` behind bundle.X_test (None for a series: its windows overlap)
    expected: np.ndarray  # trainer.predict(X_test): probabilities, or values in original units
    export_dir: Path

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.model

    def on_test(self, predict: Callable[[Any], np.ndarray]) -> np.ndarray:
        """``predict`` applied to the raw data as a user has it, restricted to the test part, row for row
        with bundle.X_test. A series is passed whole: it gives one window per row position."""
        if self.raw_test is None:
            assert self.bundle.indices is not None
            return predict(self.raw)[self.bundle.indices.test]
        return predict(self.raw_test)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny models run fastest on one thread on a shared CPU (tests/conftest.py restores the count)."""
    torch.set_num_threads(1)


@contextmanager
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def make_people(n_rows: int = 240, seed: int = 0) -> pd.DataFrame:
    """Numeric and categorical columns with missing values, and a 3-class text label they determine."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n_rows).astype(float)
    income = rng.normal(50_000, 15_000, n_rows)
    color = rng.choice(["red", "green", "blue"], n_rows).astype(object)
    score = age / 10 + (color == "red") * 3 + rng.normal(0, 1, n_rows)
    label = np.where(score > 7, "high", np.where(score > 5, "mid", "low"))
    age[rng.choice(n_rows, 15, replace=False)] = np.nan
    color[rng.choice(n_rows, 12, replace=False)] = None
    return pd.DataFrame({"age": age, "income": income, "color": color, "label": label})


def make_series(n_rows: int = 160, seed: int = 0) -> pd.DataFrame:
    """A noisy seasonal series ``y`` with an exogenous column ``temp``, in time order."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows, dtype=float)
    temp = 20 + 5 * np.cos(t / 9) + rng.normal(0, 0.5, n_rows)
    y = 100 + 10 * np.sin(t / 6) + 0.3 * temp + rng.normal(0, 0.5, n_rows)
    return pd.DataFrame({"temp": temp, "y": y})


def _train(
    bundle: DataBundle, spec_data: dict[str, Any], train: TrainSpec
) -> tuple[Trainer, ModelSpec, np.ndarray]:
    spec = parse_model_spec(spec_data)
    model = build_model(spec, input_shape=bundle.input_shape, output_dim=bundle.output_dim, seed=0)
    trainer = Trainer(
        model, train, task=bundle.task, n_classes=bundle.n_classes, target_scale=bundle.target_scale
    )
    with _single_thread():
        trainer.fit((bundle.X_train, bundle.y_train))
        expected = trainer.predict(bundle.X_test).numpy()
    return trainer, spec, expected


def _export(trained_dir: Path, bundle: DataBundle, trainer: Trainer, spec: ModelSpec) -> Path:
    with _single_thread():
        return export_model(
            trained_dir,
            model=trainer.model,
            preprocessor=bundle.preprocessor,
            model_spec=spec,
            task=bundle.task,
            input_shape=bundle.input_shape,
            output_dim=bundle.output_dim,
            metadata={"metrics": {"val_accuracy": 0.5}, "best_params": {"lr": 0.01}},
            onnx=False,  # tests/export/test_onnx.py covers it
        )


@pytest.fixture(scope="session")
def table(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """An MLP on a CSV with numeric, categorical and missing values (classification of a text label)."""
    root = tmp_path_factory.mktemp("table")
    people = make_people()
    people.to_csv(root / "people.csv", index=False)
    raw = pd.read_csv(root / "people.csv")
    bundle = prepare_data(DataSpec(source=str(root / "people.csv"), target="label"), seed=0)
    trainer, spec, expected = _train(
        bundle, {"type": "mlp", "hidden": [16], "batch_norm": True}, TrainSpec(epochs=30, batch_size=32)
    )
    assert bundle.indices is not None
    raw_test = raw.iloc[bundle.indices.test]
    return Trained(
        bundle, trainer, spec, raw, raw_test, expected, _export(root / "export", bundle, trainer, spec)
    )


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A CNN on scikit-learn's digits as images [N, 1, 8, 8] (raw pixels 0-16)."""
    root = tmp_path_factory.mktemp("image")
    data_spec = DataSpec(source="digits", max_rows=400)
    dataset = load_dataset(data_spec)
    bundle = prepare_data(data_spec, seed=0, dataset=dataset)
    trainer, spec, expected = _train(
        bundle, {"type": "cnn", "channels": [4], "dense": [16]}, TrainSpec(epochs=2, batch_size=64)
    )
    assert bundle.indices is not None
    assert isinstance(dataset.features, np.ndarray)
    raw = dataset.features
    raw_test = raw[bundle.indices.test]
    return Trained(
        bundle, trainer, spec, raw, raw_test, expected, _export(root / "export", bundle, trainer, spec)
    )


@pytest.fixture(scope="session")
def sequence(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """An LSTM forecasting the next 2 values of a series from windows of 8 rows."""
    root = tmp_path_factory.mktemp("sequence")
    make_series().to_csv(root / "series.csv", index=False)
    raw = pd.read_csv(root / "series.csv")
    data_spec = DataSpec(source=str(root / "series.csv"), target="y", task="forecasting", window=8, horizon=2)
    bundle = prepare_data(data_spec, seed=0)
    trainer, spec, expected = _train(
        bundle, {"type": "lstm", "hidden_size": 8}, TrainSpec(epochs=2, batch_size=32)
    )
    return Trained(
        bundle, trainer, spec, raw, None, expected, _export(root / "export", bundle, trainer, spec)
    )


@pytest.fixture
def trained(request: pytest.FixtureRequest) -> Trained:
    """Indirect parametrization over the three fixtures by name."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def copy_export(tmp_path: Path) -> Callable[[Path], Path]:
    """``copy_export(directory)``: a private copy of an export that a test may damage."""

    def copy(directory: Path) -> Path:
        target = tmp_path / "export-copy"
        shutil.copytree(directory, target)
        return target

    return copy
