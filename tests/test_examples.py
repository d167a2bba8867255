"""Every example spec runs (fast, on a tiny budget); the slow tests reach the accuracy the README promises."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tunelab.run import train_experiment
from tunelab.spec import load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SPECS = sorted(EXAMPLES.glob("*.yaml"))


def tiny(path: Path, **data_overrides):
    """The example with a tiny budget: 1 epoch, a few hundred rows."""
    raw = load_spec(path).model_dump(mode="json")
    raw["train"]["epochs"] = 1
    raw["data"].update({"max_rows": 600, **data_overrides})
    return parse_spec(raw, source=str(path))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_example_runs_on_a_tiny_budget(path, tmp_path, request):
    if "fashion" in path.stem:
        request.getfixturevalue("fashion_mnist_dir")
    result = train_experiment(tiny(path), out_dir=tmp_path / path.stem)
    assert (tmp_path / path.stem / "summary.json").is_file()
    assert len(result.history.epochs) == 1


def _train_full(name: str, tmp_path: Path):
    started = time.perf_counter()
    result = train_experiment(load_spec(EXAMPLES / f"{name}.yaml"), out_dir=tmp_path / name)
    seconds = time.perf_counter() - started
    print(
        f"{name}: test accuracy {result.test_metrics['accuracy']:.4f} after "
        f"{len(result.history.epochs)} epochs in {seconds:.0f}s"
    )
    return result


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_digits_mlp_reaches_097(tmp_path):
    assert _train_full("digits_mlp", tmp_path).test_metrics["accuracy"] >= 0.97


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fashion_mnist_mlp_reaches_088(tmp_path, fashion_mnist_dir):
    assert _train_full("fashion_mnist_mlp", tmp_path).test_metrics["accuracy"] >= 0.88


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fashion_mnist_cnn_reaches_090(tmp_path, fashion_mnist_dir):
    assert _train_full("fashion_mnist_cnn", tmp_path).test_metrics["accuracy"] >= 0.90
