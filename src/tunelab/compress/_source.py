"""What a compression starts from: a tuned run's winner (the teacher), its data and its score to keep.

Everything is read and checked before anything is written, so bad input leaves the run directory as it was.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from tunelab.data import DataBundle, prepare_data
from tunelab.errors import DataError, SpecError
from tunelab.execute import trial_spec
from tunelab.export import ExportedModel, find_export, load
from tunelab.layout import RunLayout
from tunelab.models import AnyModelSpec, parse_model_spec
from tunelab.spec import CompressSpec, ExperimentSpec, load_spec
from tunelab.train import Trainer, TrainSpec

__all__ = ["BOUNDED_METRICS", "CompressSource", "Scorer", "allowed_drop", "open_source"]

# Scores in [0, 1]: a drop is in points (1.0 = 0.01); any other metric's drop is a percent of its value.
BOUNDED_METRICS = ("accuracy", "f1", "roc_auc", "r2")


class Scorer:
    """The run's validation metric of raw model outputs (logits, or values in training units)."""

    def __init__(self, trainer: Trainer, metric: str, direction: Literal["minimize", "maximize"]) -> None:
        self._trainer = trainer
        self.metric = metric
        self.direction = direction

    def __call__(self, outputs: torch.Tensor, y: torch.Tensor) -> float:
        name = self.metric
        values = self._trainer.evaluate_outputs(outputs, y, names=[name])
        return float(values[name])


@dataclass
class CompressSource:
    """A tuned run, ready to compress. ``teacher``: the delivered fp32 model (eval, CPU). ``reference``: the
    validation score a compressed model is compared with: the teacher's own on the validation rows, or the
    search's estimate (``best_value``) when the teacher was refit on them."""

    run_dir: Path
    export_dir: Path
    experiment: ExperimentSpec
    model_spec: AnyModelSpec | None
    train_spec: TrainSpec
    exported: ExportedModel
    teacher: nn.Module
    bundle: DataBundle
    scorer: Scorer
    reference: float
    reference_is: str
    teacher_val_score: float
    onnx: Path | None
    # The delivered model was trained on the test rows too (search.refit: all): test scores are in-sample.
    saw_test: bool = False

    @property
    def metric(self) -> str:
        return self.scorer.metric

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.bundle.input_shape

    @property
    def output_dim(self) -> int:
        return self.exported.output_dim

    def new_trainer(self, model: nn.Module, spec: TrainSpec, callbacks: list[Any] | None = None) -> Trainer:
        return Trainer(
            model,
            spec,
            task=self.bundle.task,
            n_classes=self.bundle.n_classes,
            target_scale=self.bundle.target_scale,
            callbacks=callbacks or [],
        )

    def outputs(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs of a torch ``model`` on ``x`` (eval mode, no gradients, in batches)."""
        return self.new_trainer(model, self.train_spec).outputs(x).cpu()


def allowed_drop(spec: CompressSpec, metric: str, reference: float) -> float:
    """``max_drop`` in the metric's own units: points of a bounded score, a percent of an unbounded one."""
    if metric in BOUNDED_METRICS:
        return spec.max_drop / 100.0
    return abs(reference) * spec.max_drop / 100.0


def open_source(run_dir: str | Path, spec: CompressSpec) -> CompressSource:
    """Read a ``tunelab tune`` run directory: its spec, summary, exported winner and data.

    Raises :class:`DataError` for a directory that is not a finished tune run with an exported model, and
    :class:`SpecError` for a ``max_drop`` that no model could meet.
    """
    layout = RunLayout(Path(run_dir))
    root = layout.root
    if not root.is_dir():
        raise DataError(
            f"'{root}' is not a directory. Expected the run directory of `tunelab tune` (runs/NAME), "
            "whose best/ holds the exported winner."
        )
    if not layout.summary.exists() or not layout.spec.exists():
        raise DataError(
            f"'{root}' holds no finished tune run ({layout.summary.name} and {layout.spec.name} are "
            f"needed). Run `tunelab tune SPEC --out {root}` first, or pass the run directory it wrote."
        )
    export_dir = find_export(root)
    try:
        summary = json.loads(layout.summary.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {layout.summary}: {error}. Run `tunelab tune` again.") from None
    experiment = load_spec(layout.spec)
    exported = load(export_dir, backend="weights")
    metadata = exported.metadata
    model_spec = parse_model_spec(metadata["model_spec"]) if metadata.get("model_spec") else None
    metric_key = str(summary.get("metric", "val_loss"))
    metric = metric_key.removeprefix("val_")
    direction = summary.get("direction", "minimize")
    if direction not in ("minimize", "maximize"):
        raise DataError(f"{layout.summary} names direction {direction!r}; run `tunelab tune` again.")
    best_params = summary.get("best_params") or {}
    train_spec = trial_spec(experiment, best_params).train
    bundle = prepare_data(experiment.data, seed=experiment.seed)
    if bundle.task != exported.task:
        raise DataError(
            f"the data of {layout.spec} is a {bundle.task} task but the export in {export_dir} does "
            f"{exported.task}; the run directory is inconsistent. Run `tunelab tune` again."
        )
    teacher = exported.module
    trainer = Trainer(
        teacher,
        train_spec,
        task=bundle.task,
        n_classes=bundle.n_classes,
        target_scale=bundle.target_scale,
    )
    if metric not in (*trainer.metrics, "loss"):
        raise DataError(
            f"the run was tuned for {metric_key}, which its training spec does not compute "
            f"({', '.join(trainer.metrics)}); run `tunelab tune` again."
        )
    scorer = Scorer(trainer, metric, direction)
    teacher_val = scorer(trainer.outputs(bundle.X_val).cpu(), bundle.y_val)
    saw_validation = bool(
        summary.get("trained_on_validation", "no refit" not in summary.get("refit_budget", ""))
    )
    best_value = summary.get("best_value")
    if saw_validation and isinstance(best_value, int | float) and math.isfinite(best_value):
        reference, reference_is = (
            float(best_value),
            "the search's validation estimate (teacher refit on them)",
        )
    else:
        reference, reference_is = teacher_val, "the teacher's validation score"
    _check_drop(spec, metric, reference, direction)
    onnx = export_dir / metadata["files"]["onnx"] if metadata["files"].get("onnx") else None
    return CompressSource(
        run_dir=root,
        export_dir=export_dir,
        experiment=experiment,
        model_spec=model_spec,
        train_spec=train_spec,
        exported=exported,
        teacher=teacher.eval(),
        bundle=bundle,
        scorer=scorer,
        reference=reference,
        reference_is=reference_is,
        teacher_val_score=teacher_val,
        onnx=onnx,
        saw_test=bool(summary.get("trained_on_test", False)),
    )


def _check_drop(spec: CompressSpec, metric: str, reference: float, direction: str) -> None:
    """A ``max_drop`` that makes every model acceptable, even a constant one, is no constraint: refuse it."""
    if metric in BOUNDED_METRICS and direction == "maximize" and spec.max_drop / 100.0 >= reference:
        raise SpecError(
            f"--max-drop {spec.max_drop:g} points allows the {metric} to fall from {reference:.4f} to "
            f"{reference - spec.max_drop / 100.0:.4f} or below, which any constant model meets. Expected a "
            f"drop below {reference * 100.0:.1f} points (typically 0.5-2). Fix: pass a smaller --max-drop."
        )
