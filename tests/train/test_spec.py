"""`TrainSpec` rejects impossible values with messages that name the field, the bound and the choices."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tunelab.train import EarlyStoppingSpec, ScheduleSpec, TrainSpec


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"lr": -0.1}, ["lr", "greater than 0"]),
        ({"epochs": 0}, ["epochs", "greater than or equal to 1"]),
        ({"batch_size": 0}, ["batch_size", "greater than or equal to 1"]),
        ({"momentum": 1.0}, ["momentum", "less than 1"]),
        ({"label_smoothing": 1.0}, ["label_smoothing", "less than 1"]),
        ({"betas": (0.9, 1.0)}, ["betas", "less than 1"]),
        ({"weight_decay": -1e-4}, ["weight_decay", "greater than or equal to 0"]),
        ({"grad_clip": 0}, ["grad_clip", "greater than 0"]),
        ({"optimizer": "adamm"}, ["optimizer", "'adam'", "'sgd'", "'nesterov'"]),
        ({"schedule": {"name": "cosin"}}, ["schedule.name", "'cosine'", "'onecycle'"]),
        ({"loss": "ce"}, ["loss", "'cross_entropy'"]),
        ({"metrics": ["acuracy"]}, ["Did you mean 'accuracy'", "Valid metrics: accuracy, f1, roc_auc"]),
        ({"metrics": ["rmse", "rmse"]}, ["twice"]),
        (
            {"epochs": 3, "schedule": {"name": "warmup", "warmup_epochs": 3}},
            ["warmup_epochs (3)", "epochs (3)"],
        ),
        (
            {"lr": 0.01, "schedule": {"name": "cosine", "min_lr": 0.1}},
            ["min_lr (0.1) must be below lr (0.01)"],
        ),
        ({"learning_rate": 0.1}, ["learning_rate", "Extra inputs are not permitted"]),
        ({"early_stopping": {"patience": 0}}, ["early_stopping.patience", "greater than or equal to 1"]),
        ({"schedule": {"name": "onecycle", "pct_start": 1.0}}, ["pct_start", "less than 1"]),
        ({"augment": {"shift": -1}}, ["augment.shift", "greater than or equal to 0"]),
    ],
)
def test_impossible_values_are_rejected_with_a_clear_message(values, words):
    with pytest.raises(ValidationError) as info:
        TrainSpec(**values)
    message = str(info.value)
    for word in words:
        assert word in message


def test_defaults_are_valid_and_round_trip_through_json():
    spec = TrainSpec(schedule=ScheduleSpec(name="onecycle"), early_stopping=EarlyStoppingSpec())
    assert TrainSpec.model_validate_json(spec.model_dump_json()) == spec
    assert (spec.optimizer, spec.lr, spec.batch_size) == ("adam", 1e-3, 128)
