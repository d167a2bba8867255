"""Train one configuration end to end and write its run directory.

The run directory holds everything needed to inspect or reuse the run::

    spec.yaml       the validated spec, with every default filled in
    history.csv     one row per epoch (also history.json)
    checkpoint.pt   the last checkpoint; best.pt the best epoch's (weights only, no pickled objects)
    model.pt        the final weights (the best epoch's when early stopping restored them)
    curves.png      loss, validation metrics and learning rate per epoch
    metrics.json    validation and test metrics
    summary.json    what was trained, on what, for how long, and how well
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunelab.data import DataBundle, prepare_data
from tunelab.errors import SpecError
from tunelab.layout import RunLayout
from tunelab.models import build_model, count_parameters
from tunelab.report import plot_training_curves
from tunelab.spec import ExperimentSpec
from tunelab.train import Callback, History, Trainer, output_dim_for

__all__ = ["TrainResult", "train_experiment", "write_test_predictions"]


@dataclass
class TrainResult:
    """What :func:`train_experiment` produced; ``summary`` is also written to ``run_dir/summary.json``."""

    run_dir: Path | None
    history: History
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)
    trainer: Trainer | None = None
    bundle: DataBundle | None = None


def train_experiment(
    spec: ExperimentSpec,
    *,
    out_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    overwrite: bool = False,
) -> TrainResult:
    """Load the data, build the model, train it, evaluate on validation and (once) on test, write the run."""
    started = time.perf_counter()
    run_dir = _prepare_run_dir(out_dir, overwrite=overwrite) if out_dir is not None else None
    if run_dir is not None:
        RunLayout(run_dir).spec.write_text(spec.to_yaml(), encoding="utf-8")

    bundle = prepare_data(spec.data, seed=spec.seed)
    n_targets = int(bundle.y_train.shape[1]) if bundle.y_train.ndim == 2 else 1
    output_dim = output_dim_for(bundle.task, bundle.n_classes, n_targets, spec.train.loss)
    model = build_model(
        spec.model,
        input_shape=bundle.input_shape,
        output_dim=output_dim,
        seed=spec.train.seed,
        text=bundle.text,
    )
    trainer = Trainer(
        model,
        spec.train,
        task=bundle.task,
        n_classes=bundle.n_classes,
        target_scale=bundle.target_scale,
        callbacks=callbacks,
        run_dir=run_dir,
    )
    history = trainer.fit((bundle.X_train, bundle.y_train), (bundle.X_val, bundle.y_val))
    val_metrics = trainer.evaluate(bundle.X_val, bundle.y_val)
    # The test part is touched exactly once, here, after every training decision has been made.
    test_metrics = trainer.evaluate(bundle.X_test, bundle.y_test)
    elapsed = time.perf_counter() - started

    summary = {
        "name": spec.name,
        "task": bundle.task,
        "data": {
            "source": spec.data.source,
            "kind": bundle.kind,
            "n_train": len(bundle.y_train),
            "n_val": len(bundle.y_val),
            "n_test": len(bundle.y_test),
            "input_shape": list(bundle.input_shape),
            "n_classes": bundle.n_classes,
            "class_names": list(bundle.class_names) if bundle.class_names else None,
            "notices": list(bundle.notices),
        },
        "model": {"type": spec.model.type, "n_parameters": count_parameters(model)},
        "training": {
            "epochs_run": len(history.epochs),
            "best_epoch": history.best_epoch,
            "stopped_early": history.stopped_early,
            "device": str(trainer.device),
        },
        "val_metrics": val_metrics,
        "test_metrics": test_metrics,
        "elapsed_seconds": round(elapsed, 3),
        "versions": {"tunelab": _version(), "torch": torch.__version__, "python": platform.python_version()},
    }
    if run_dir is not None:
        write_test_predictions(run_dir / "test_predictions.csv", trainer, bundle)
        _write_run(run_dir, spec, history, model, val_metrics, test_metrics, summary)
        from tunelab.report import build_report

        build_report(run_dir)
    return TrainResult(run_dir, history, val_metrics, test_metrics, summary, trainer=trainer, bundle=bundle)


def _prepare_run_dir(out_dir: str | Path, *, overwrite: bool) -> Path:
    run_dir = Path(out_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise SpecError(f"--out '{run_dir}' is a file; expected a directory for the run's outputs.")
    if run_dir.exists() and RunLayout(run_dir).summary.exists() and not overwrite:
        raise SpecError(
            f"run directory '{run_dir}' already holds a finished run (summary.json). Nothing was changed. "
            "Choose another --out, or pass --overwrite to replace it."
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SpecError(f"cannot create run directory '{run_dir}': {err}. Choose a writable --out.") from None
    return run_dir


def _write_run(
    run_dir: Path,
    spec: ExperimentSpec,
    history: History,
    model: torch.nn.Module,
    val_metrics: dict[str, float],
    test_metrics: dict[str, float],
    summary: dict[str, Any],
) -> None:
    layout = RunLayout(run_dir)
    history.to_frame().to_csv(layout.history_csv, index=False)
    layout.history_json.write_text(json.dumps(history.to_dict(), indent=2), encoding="utf-8")
    torch.save(model.state_dict(), layout.model)
    plot_training_curves(history.epochs, layout.curves, title=spec.name, best_epoch=history.best_epoch)
    metrics = {"val": val_metrics, "test": test_metrics}
    layout.metrics.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    # summary.json last: its presence marks a finished run.
    layout.summary.write_text(json.dumps(summary, indent=2), encoding="utf-8")


def write_test_predictions(path: Path, trainer: Trainer, bundle: DataBundle) -> None:
    """Test-part truth and predictions as a CSV, in original units: classification ``y_true, y_pred,
    proba_<k>``; regression / forecasting ``y_true_<k>, y_pred_<k>`` per output."""
    import pandas as pd

    predicted = trainer.predict(bundle.X_test).cpu()
    truth = bundle.y_test.cpu()
    columns: dict[str, Any] = {}
    if bundle.task == "classification":
        columns["y_true"] = truth.numpy()
        columns["y_pred"] = predicted.argmax(dim=1).numpy()
        for k in range(predicted.shape[1]):
            columns[f"proba_{k}"] = predicted[:, k].numpy()
    else:
        if bundle.target_scale is not None:
            mean, std = bundle.target_scale
            truth = truth * std.cpu() + mean.cpu()
        for k in range(predicted.shape[1]):
            columns[f"y_true_{k}"] = truth[:, k].numpy()
            columns[f"y_pred_{k}"] = predicted[:, k].numpy()
    pd.DataFrame(columns).to_csv(path, index=False)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tunelab")
    except PackageNotFoundError:
        return "unknown"
