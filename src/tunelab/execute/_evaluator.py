"""One configuration on one fold: the fold's prepared data, the trainer, the score. And a trial's spec."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from tunelab.data import DataBundle, DataSpec, load_dataset, prepare_data
from tunelab.errors import SpecError, TrainingError
from tunelab.models import build_model, carried_model_fields
from tunelab.search import merge_overrides
from tunelab.spec import ExperimentSpec, parse_spec
from tunelab.train import Callback, Trainer, TrainSpec, output_dim_for

__all__ = ["Evaluator", "FoldData", "FoldRun", "output_dim", "trial_spec"]


class FoldData(Protocol):
    """Where executors get their data: the prepared bundle of a fold (None: the holdout split)."""

    def bundle(self, fold: int | None) -> DataBundle: ...


def output_dim(bundle: DataBundle, train: TrainSpec) -> int:
    """The model output size for ``bundle``'s task trained with ``train``'s loss."""
    n_targets = int(bundle.y_train.shape[1]) if bundle.y_train.ndim == 2 else 1
    return output_dim_for(bundle.task, bundle.n_classes, n_targets, train.loss)


@dataclass(frozen=True)
class FoldRun:
    """One configuration trained on one fold: its validation ``score``, its ``best_epoch``, the model's raw
    ``outputs`` on the fold's validation part (float32 on the CPU), from which ensembles are chosen, the mean
    wall time of its epochs (``epoch_seconds``, evaluation included), and its ``trainer`` (the model)."""

    score: float
    best_epoch: int
    outputs: torch.Tensor
    epoch_seconds: float = math.nan
    trainer: Trainer | None = field(default=None, repr=False, compare=False)


class Evaluator:
    """Trains one configuration on one fold; reads the source once and keeps each fold's tensors."""

    def __init__(self, spec: ExperimentSpec, data_spec: DataSpec, *, dataset: Any = None) -> None:
        self.data_spec = data_spec
        self.seed = spec.seed
        self.dataset = dataset if dataset is not None else load_dataset(data_spec)
        self._bundles: dict[int | None, DataBundle] = {}
        self.task = self.bundle(None).task
        # Complete trials' models (their last fold's), the best few by value: a budget too short for the
        # winner's whole refit delivers the winner as the search trained it. ``cut_trials``: those among
        # them the time budget cut before any trial completed (their models as cut).
        self.search_models: dict[int, Trainer] = {}
        self.cut_trials: set[int] = set()
        self._search_values: dict[int, float] = {}

    def keep_search_model(
        self, number: int, trainer: Trainer, value: float, *, keep: int, minimize: bool
    ) -> None:
        """Keep trial ``number``'s model if its value is among the ``keep`` best kept so far."""
        if keep <= 0 or not math.isfinite(value):
            return
        self.search_models[number], self._search_values[number] = trainer, value
        ranked = sorted(self._search_values, key=lambda n: self._search_values[n], reverse=not minimize)
        for dropped in ranked[keep:]:
            del self.search_models[dropped], self._search_values[dropped]

    def bundle(self, fold: int | None) -> DataBundle:
        if fold not in self._bundles:
            spec = self.data_spec
            if fold is None and spec.split.method not in ("holdout", "timeseries"):
                spec = spec.model_copy(update={"split": spec.split.model_copy(update={"method": "holdout"})})
            self._bundles[fold] = prepare_data(spec, seed=self.seed, fold=fold, dataset=self.dataset)
        return self._bundles[fold]

    def trainer(self, spec: ExperimentSpec, bundle: DataBundle, **kwargs: Any) -> Trainer:
        model = build_model(
            spec.model,
            input_shape=bundle.input_shape,
            output_dim=output_dim(bundle, spec.train),
            seed=spec.train.seed,
            text=bundle.text,
        )
        return Trainer(
            model,
            spec.train,
            task=bundle.task,
            n_classes=bundle.n_classes,
            target_scale=bundle.target_scale,
            **kwargs,
        )

    def score(
        self, spec: ExperimentSpec, fold: int | None, metric: str, **options: Any
    ) -> tuple[float, int] | None:
        """Train on the fold's training part; return the validation ``metric`` and the best epoch, or None
        if a callback ended the training within an epoch (the time budget). ``options``: :meth:`run`'s."""
        run = self.run(spec, fold, metric, **options)
        return None if run is None else (run.score, run.best_epoch)

    def run(
        self,
        spec: ExperimentSpec,
        fold: int | None,
        metric: str,
        *,
        callbacks: tuple[Callback, ...] = (),
        run_dir: Path | None = None,
        resume_from: Path | None = None,
        score_interrupted: Callable[[], bool] | None = None,
    ) -> FoldRun | None:
        """Train on the fold's training part (``callbacks``, checkpoints in ``run_dir``, resumed from
        ``resume_from``); its validation ``metric``, best epoch and raw validation outputs, or None if a
        callback ended the training within an epoch (the time budget), unless ``score_interrupted()`` then
        says to score the model as it is."""
        bundle = self.bundle(fold)
        trainer = self.trainer(spec, bundle, callbacks=callbacks, run_dir=run_dir)
        history = trainer.fit(
            (bundle.X_train, bundle.y_train), (bundle.X_val, bundle.y_val), resume_from=resume_from
        )
        if history.interrupted_in is not None and (score_interrupted is None or not score_interrupted()):
            return None
        outputs = trainer.outputs(bundle.X_val)
        values = trainer.evaluate_outputs(outputs, bundle.y_val)
        key = metric.removeprefix("val_")
        if key not in values:
            raise SpecError(
                f"search.metric '{metric}' is not computed for this task; available: "
                f"{', '.join('val_' + k for k in values)}."
            )
        best_epoch = history.best_epoch or max(1, len(history.epochs))
        seconds = [row["epoch_seconds"] for row in history.epochs if "epoch_seconds" in row]
        per_epoch = statistics.fmean(seconds) if seconds else math.nan
        return FoldRun(float(values[key]), int(best_epoch), outputs.cpu(), per_epoch, trainer)


def trial_spec(base: ExperimentSpec, overrides: dict[str, Any], *, seed: int | None = None) -> ExperimentSpec:
    """The base spec with a trial's parameters merged in (helper parameters ``_name`` left out); a trial that
    sets ``model.type`` keeps only the base model's fields that the family it chose keeps."""
    clean = {k: v for k, v in overrides.items() if not k.startswith("_")}
    dumped = base.model_dump(mode="json")
    model = clean.get("model")
    if isinstance(model, dict) and "type" in model:  # the trial chooses the family: see carried_model_fields
        dumped["model"] = carried_model_fields(dumped["model"], model["type"])
    merged = merge_overrides(dumped, clean)
    merged.pop("search", None)
    if seed is not None:
        merged["train"]["seed"] = seed
    try:
        return parse_spec(merged, source="a sampled configuration")
    except SpecError as err:
        # A combination the space allows but the spec rejects: the trial fails, the study goes on.
        raise TrainingError(str(err)) from None
