"""Metrics from outputs at hand: what evaluate() computes, without running the model again."""

from __future__ import annotations

import pytest
import torch

from tunelab.models import MLPSpec, build_model
from tunelab.train import Trainer, TrainSpec


def test_evaluate_outputs_is_evaluate_on_the_models_outputs():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=generator), torch.randint(0, 3, (40,), generator=generator)
    model = build_model(MLPSpec(hidden=[8]), input_shape=(5,), output_dim=3, seed=0)
    trainer = Trainer(model, TrainSpec(epochs=2, batch_size=8), task="classification", n_classes=3)
    trainer.fit((x, y))
    outputs = trainer.outputs(x)
    assert outputs.shape == (40, 3)
    assert trainer.evaluate_outputs(outputs, y) == pytest.approx(trainer.evaluate(x, y))
    assert set(trainer.evaluate_outputs(outputs, y, names=["accuracy"])) == {"accuracy"}
    assert set(trainer.evaluate_outputs(outputs, y, names=["loss"])) == {"loss"}


def test_evaluate_outputs_reports_regression_metrics_in_original_units():
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 4, generator=generator), torch.randn(30, 1, generator=generator)
    model = build_model(MLPSpec(hidden=[4]), input_shape=(4,), output_dim=1, seed=0)
    trainer = Trainer(model, TrainSpec(epochs=1), task="regression", target_scale=(10.0, 2.0))
    outputs = trainer.outputs(x)
    rmse = trainer.evaluate_outputs(outputs, y, names=["rmse"])["rmse"]
    expected = float(((outputs * 2.0 + 10.0) - (y * 2.0 + 10.0)).pow(2).mean().sqrt())
    assert abs(rmse - expected) < 1e-4 * expected
