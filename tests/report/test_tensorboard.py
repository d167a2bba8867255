"""TensorBoard logging: the event files hold every epoch's logs (read back with TensorBoard's own reader), a
study exports one directory per trial, and a missing `tensorboard` package is a MissingExtraError."""

from __future__ import annotations

import math
import sys

import optuna
import pytest

from tunelab.errors import MissingExtraError
from tunelab.report._tensorboard import (
    TensorBoardLogger,
    scalar_tag,
    write_run_to_tensorboard,
    write_study_to_tensorboard,
)
from tunelab.run import train_experiment
from tunelab.spec import parse_spec

_IRIS = {
    "name": "iris-tb",
    "seed": 0,
    "data": {"source": "iris"},
    "model": {"type": "mlp", "hidden": [8]},
    "train": {"epochs": 3, "lr": 0.01, "batch_size": 32},
}


def _scalars(log_dir):
    """{tag: {step: value}} as TensorBoard reads the directory."""
    accumulator_module = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    accumulator = accumulator_module.EventAccumulator(str(log_dir))
    accumulator.Reload()
    return {
        tag: {event.step: event.value for event in accumulator.Scalars(tag)}
        for tag in accumulator.Tags()["scalars"]
    }


def test_tags_group_logs_by_panel():
    assert scalar_tag("loss") == "train/loss"
    assert scalar_tag("val_loss") == "val/loss"
    assert scalar_tag("val_accuracy") == "val/accuracy"
    assert scalar_tag("lr") == "train/lr"
    assert scalar_tag("samples_per_second") == "speed/samples_per_second"
    assert scalar_tag("epoch_seconds") == "speed/epoch_seconds"


def test_training_run_logs_every_epoch_live_and_after_the_fact(tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    live = tmp_path / "live"
    result = train_experiment(
        parse_spec(_IRIS), out_dir=tmp_path / "run", callbacks=[TensorBoardLogger(live)]
    )
    history = result.history.epochs
    scalars = _scalars(live)
    for key in ("loss", "val_loss", "val_accuracy", "lr", "samples_per_second"):
        # Event files store float32: compare at that precision.
        assert scalars[scalar_tag(key)] == pytest.approx(
            {row["epoch"]: row[key] for row in history}, rel=1e-6
        )
    # The run directory exported afterwards holds the same curves.
    (written,) = write_run_to_tensorboard(tmp_path / "run", tmp_path / "export")
    assert written == tmp_path / "export" / "train"
    exported = _scalars(written)
    assert exported.keys() == scalars.keys()
    for tag, curve in scalars.items():
        assert exported[tag] == pytest.approx(curve, rel=1e-6)


def test_non_numeric_and_non_finite_logs_are_skipped(tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    logger = TensorBoardLogger(tmp_path)
    logger.on_train_begin({})
    logger.on_epoch_end(1, {"loss": 0.5, "val_loss": float("nan"), "note": "text", "stopped": True})
    logger.on_train_end({})
    assert _scalars(tmp_path) == {"train/loss": {1: 0.5}}


def test_study_export_writes_one_directory_per_finished_trial(tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    curves = {0: [0.5, 0.7, 0.8], 1: [0.4], 2: [0.6, 0.9]}
    for number, values in curves.items():
        trial = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)})
        for step, value in enumerate(values, start=1):
            trial.report(value, step)
        state = optuna.trial.TrialState.PRUNED if number == 1 else optuna.trial.TrialState.COMPLETE
        study.tell(trial, values[-1] if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    study.ask()  # still running: left out

    written = write_study_to_tensorboard(study, tmp_path, metric="val_accuracy")
    assert [p.name for p in written] == ["trial_0000", "trial_0001", "trial_0002"]
    for number, values in curves.items():
        scalars = _scalars(tmp_path / f"trial_{number:04d}")
        expected = dict(enumerate(values, start=1))
        assert scalars["search/val_accuracy"] == pytest.approx(expected, rel=1e-6)
        (final,) = scalars["hparam/val_accuracy"].values()
        if number == 1:
            assert math.isnan(final)  # a pruned trial has no final value
        else:
            assert final == pytest.approx(values[-1])

    write_study_to_tensorboard(study, tmp_path, metric="val_accuracy")  # again: replaces, never duplicates
    assert len(_scalars(tmp_path / "trial_0000")["search/val_accuracy"]) == 3


def test_missing_tensorboard_names_the_extra(monkeypatch, tmp_path):
    # A None entry in sys.modules makes `import` raise ImportError, as when the package is not installed.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'tunelab\[tensorboard\]'"):
        TensorBoardLogger(tmp_path)
    with pytest.raises(MissingExtraError, match="tensorboard"):
        write_study_to_tensorboard(optuna.create_study(), tmp_path)
