"""Shared test fixtures: small real data, a PostgreSQL server, and hygiene checks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tests._postgres import PostgresServer, running_postgres

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def pytest_configure(config):
    """torch's threads start flushing denormals, as training would start them (tunelab.train.denormals_flushed
    warns where they do not); this thread's own mode stays as it was, which hypothesis checks."""
    from tunelab.train import denormals_flushed

    with denormals_flushed():
        torch.ones(1 << 20).sum()


@pytest.fixture(autouse=True)
def _torch_hygiene():
    """Tests run on the CPU with a fixed thread count and must not leave global torch state changed."""
    threads = torch.get_num_threads()
    grad = torch.is_grad_enabled()
    yield
    torch.set_num_threads(threads)
    torch.set_grad_enabled(grad)


@pytest.fixture
def fashion_mnist_dir() -> Path:
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed: apt-get install -y dataset-fashion-mnist")
    return FASHION_MNIST_DIR


@pytest.fixture
def no_env_leak():
    before = dict(os.environ)
    yield
    assert dict(os.environ) == before, "the test leaked environment variables"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session (``tests._postgres``); skips without the binaries."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A SQLAlchemy URL to a fresh, empty database on the session's server."""
    return postgres_server.create_database()
