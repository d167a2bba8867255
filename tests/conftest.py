"""Shared test fixtures: small real data and hygiene checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def pytest_configure(config):
    """As the tunelab command does: denormals flushed before any torch work, so that torch's threads inherit
    the mode (training entry points warn otherwise: tunelab.train.ensure_denormals_flushed)."""
    from tunelab.train import flush_denormals

    flush_denormals()


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
