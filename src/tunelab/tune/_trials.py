"""One trial of a study: build its spec, train it on each fold, report every epoch, score it."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

from tunelab.data import DataBundle, load_dataset, prepare_data
from tunelab.errors import SpecError, TrainingError
from tunelab.models import build_model
from tunelab.search import (
    Decision,
    TrialHandle,
    merge_overrides,
)
from tunelab.spec import ExperimentSpec, parse_spec
from tunelab.train import Callback, Trainer, output_dim_for


class Events:
    """Where the protocol says what it does: a live progress display (``tunelab.report.make_progress``), a
    plain line callback, or nothing. Calling it with a message reports a phase."""

    def __init__(self, progress: Any = None, log: Any = None) -> None:
        self.progress, self.log = progress, log

    def __call__(self, message: str) -> None:
        if self.progress is not None:
            self.progress.phase(message)
        if self.log is not None:
            self.log(message)

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.trial_started(number, params)

    def trial_reported(self, number: int, epoch: int, value: float) -> None:
        if self.progress is not None:
            self.progress.trial_reported(number, epoch, value)

    def trial_finished(self, number: int, state: str, value: float | None) -> None:
        if self.progress is not None:
            self.progress.trial_finished(number, state, value)
        if self.log is not None:
            shown = "" if value is None else f" {value:.4f}"
            self.log(f"trial {number:>3} {state}{shown}")


class Evaluator:
    """Trains one configuration on one fold; reads the source once and keeps each fold's tensors."""

    def __init__(self, spec: ExperimentSpec, data_spec: Any, *, dataset: Any = None) -> None:
        self.data_spec = data_spec
        self.seed = spec.seed
        self.dataset = dataset if dataset is not None else load_dataset(data_spec)
        self._bundles: dict[int | None, DataBundle] = {}
        self.task = self.bundle(None).task

    def bundle(self, fold: int | None) -> DataBundle:
        if fold not in self._bundles:
            spec = self.data_spec
            if fold is None and spec.split.method != "holdout" and spec.split.method != "timeseries":
                spec = spec.model_copy(update={"split": spec.split.model_copy(update={"method": "holdout"})})
            self._bundles[fold] = prepare_data(spec, seed=self.seed, fold=fold, dataset=self.dataset)
        return self._bundles[fold]

    @staticmethod
    def output_dim(spec: ExperimentSpec, bundle: DataBundle) -> int:
        n_targets = int(bundle.y_train.shape[1]) if bundle.y_train.ndim == 2 else 1
        return output_dim_for(bundle.task, bundle.n_classes, n_targets, spec.train.loss)

    def trainer(self, spec: ExperimentSpec, bundle: DataBundle, **kwargs: Any) -> Trainer:
        model = build_model(
            spec.model,
            input_shape=bundle.input_shape,
            output_dim=self.output_dim(spec, bundle),
            seed=spec.train.seed,
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
        self,
        spec: ExperimentSpec,
        fold: int | None,
        metric: str,
        *,
        callbacks: tuple[Callback, ...] = (),
        run_dir: Path | None = None,
        resume_from: Path | None = None,
    ) -> tuple[float, int] | None:
        """Train on the fold's training part; return the validation ``metric`` and the best epoch, or None
        if a callback ended the training within an epoch (the time budget)."""
        bundle = self.bundle(fold)
        trainer = self.trainer(spec, bundle, callbacks=callbacks, run_dir=run_dir)
        history = trainer.fit(
            (bundle.X_train, bundle.y_train), (bundle.X_val, bundle.y_val), resume_from=resume_from
        )
        if history.interrupted_in is not None:
            return None
        values = trainer.evaluate(bundle.X_val, bundle.y_val)
        key = metric.removeprefix("val_")
        if key not in values:
            raise SpecError(
                f"search.metric '{metric}' is not computed for this task; available: "
                f"{', '.join('val_' + k for k in values)}."
            )
        best_epoch = history.best_epoch or len(history.epochs)
        return float(values[key]), int(best_epoch)


def trial_spec(base: ExperimentSpec, overrides: dict[str, Any], *, seed: int | None = None) -> ExperimentSpec:
    """The base spec with a trial's parameters merged in (helper parameters ``_name`` left out)."""
    clean = {k: v for k, v in overrides.items() if not k.startswith("_")}
    merged = merge_overrides(base.model_dump(mode="json"), clean)
    merged.pop("search", None)
    if seed is not None:
        merged["train"]["seed"] = seed
    try:
        return parse_spec(merged, source="a sampled configuration")
    except SpecError as err:
        # A combination the space allows but the spec rejects: the trial fails, the study goes on.
        raise TrainingError(str(err)) from None


class _Reporter(Callback):
    """Reports the metric after each epoch to the trial and passes the scheduler's decision back."""

    def __init__(
        self, handle: TrialHandle, metric: str, offset: int, events: Events, *, final_epoch: int | None
    ) -> None:
        self.handle, self.metric, self.offset, self.events = handle, metric, offset, events
        # The trial's last epoch (its last fold's); None on other folds, whose last epoch is not the trial's.
        self.final_epoch = final_epoch
        self.stopped = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool | None:
        if self.metric not in logs:
            raise SpecError(
                f"search.metric '{self.metric}' is not in the training logs; available: "
                f"{', '.join(k for k in logs if k.startswith('val_'))}."
            )
        decision = self.handle.report(self.offset + epoch, float(logs[self.metric]))
        self.events.trial_reported(self.handle.number, self.offset + epoch, float(logs[self.metric]))
        self.stopped = decision is Decision.STOP
        if not self.stopped and epoch != self.final_epoch:
            self.stopped = self.handle.out_of_time()
        return self.stopped

    def on_batch_end(self, epoch: int, step: int) -> bool | None:
        # Within any epoch, the last one's included: the budget holds to a minibatch, not to an epoch.
        self.stopped = self.handle.out_of_time(within_epoch=True)
        return self.stopped


class Objective:
    def __init__(
        self,
        spec: ExperimentSpec,
        evaluator: Evaluator,
        folds: list[int | None],
        metric: str,
        direction: str,
        run_dir: Path,
        say: Any,
    ) -> None:
        self.spec, self.evaluator, self.folds = spec, evaluator, folds
        self.metric, self.direction, self.run_dir, self.say = metric, direction, run_dir, say

    def __call__(self, handle: TrialHandle) -> float | None:
        self.say.trial_started(handle.number, handle.params)
        try:
            value = self._run(handle)
        except TrainingError:
            self.say.trial_finished(handle.number, "failed", None)
            raise
        self.say.trial_finished(handle.number, "pruned" if value is None else "complete", value)
        return value

    def _run(self, handle: TrialHandle) -> float | None:
        spec = trial_spec(self.spec, handle.params)
        values: list[float] = []
        best_epochs: list[int] = []
        for index, fold in enumerate(self.folds):
            trial_dir = self.run_dir / "trials" / str(handle.number) / f"fold{index}"
            if index > 0 and handle.out_of_time():
                return None
            resume = self._checkpoint_to_resume(handle, index)
            last_fold = index == len(self.folds) - 1
            reporter = _Reporter(
                handle,
                self.metric,
                offset=index * spec.train.epochs,
                events=self.say,
                final_epoch=spec.train.epochs if last_fold else None,
            )
            scored = self.evaluator.score(
                spec, fold, self.metric, callbacks=(reporter,), run_dir=trial_dir, resume_from=resume
            )
            if reporter.stopped or scored is None:
                return None
            value, best_epoch = scored
            values.append(value)
            best_epochs.append(best_epoch)
        shutil.rmtree(self.run_dir / "trials" / str(handle.number), ignore_errors=True)
        mean = statistics.fmean(values)
        handle.set_attr("fold_values", values)
        handle.set_attr("best_epochs", best_epochs)
        return mean

    def _checkpoint_to_resume(self, handle: TrialHandle, fold_index: int) -> Path | None:
        original = handle.retry_of
        if original is None:
            return None
        path = self.run_dir / "trials" / str(original) / f"fold{fold_index}" / "checkpoint.pt"
        return path if path.exists() else None
