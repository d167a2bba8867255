"""Small real data and tiny models for the training-engine tests (built with torch.nn, no tunelab.models)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from sklearn.datasets import load_digits, make_regression
from sklearn.model_selection import train_test_split
from torch import nn

Split = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train fastest on one thread, above all on a shared CPU (tests/conftest.py restores it)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits() -> Split:
    """scikit-learn's 8x8 digits: ((X_train, y_train), (X_val, y_val)), X in [0, 1] as float32 [N, 64]."""
    X, y = load_digits(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    f32 = torch.float32
    return (torch.tensor(X_train, dtype=f32), torch.tensor(y_train)), (
        torch.tensor(X_val, dtype=f32),
        torch.tensor(y_val),
    )


@pytest.fixture(scope="session")
def regression() -> Split:
    """A linear regression problem with 20 features, 3 of them informative; standardized targets [N, 1]."""
    X, y = make_regression(n_samples=400, n_features=20, n_informative=3, noise=1.0, random_state=0)
    X = torch.tensor(X, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32)[:, None]
    y = (y - y[:300].mean()) / y[:300].std()
    return (X[:300], y[:300]), (X[300:], y[300:])


@pytest.fixture
def mlp() -> Callable[..., nn.Module]:
    """``mlp(n_in, n_out, hidden=32, dropout=0.0, seed=0)``: a seeded two-layer perceptron."""

    def build(n_in: int, n_out: int, *, hidden: int = 32, dropout: float = 0.0, seed: int = 0) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Sequential(
                nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_out)
            )

    return build


@pytest.fixture
def without_timings() -> Callable[[list[dict]], list[dict]]:
    """History rows without the wall-clock fields, which differ between identical runs."""

    def strip(rows: list[dict]) -> list[dict]:
        return [
            {k: v for k, v in row.items() if k not in ("epoch_seconds", "samples_per_second")} for row in rows
        ]

    return strip
