"""``SequentialExecutor``: one trial at a time through the single-model trainer, fold after fold."""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunelab.errors import SpecError, TrainingError
from tunelab.execute._evaluator import Evaluator, trial_spec
from tunelab.layout import RunLayout
from tunelab.search import BaseExecutor, Decision, Outcome, TrialHandle, cut_note
from tunelab.spec import ExperimentSpec
from tunelab.train import Callback, Trainer

__all__ = ["SequentialExecutor"]


class SequentialExecutor(BaseExecutor):
    """Trains each trial alone with :class:`~tunelab.train.Trainer` on every fold in turn, reporting after
    every epoch (at epochs offset by ``i * epochs`` on fold i), so the scheduler can stop it early fold by
    fold; its value is the mean over the folds, with the user attributes ``fold_values`` and
    ``best_epochs``.

    Each trial saves a checkpoint every epoch under ``run_dir/trials/<number>/fold<k>/``; a trial retrying
    one a kill interrupted (``handle.retry_of``) continues from that checkpoint. A trial's checkpoints are
    removed when it completes; with ``keep_models=k`` its model stays in memory while its value is among the
    ``k`` best (``direction``) of this process's trials (``Evaluator.search_models``).
    """

    checkpoints = True

    def __init__(
        self,
        spec: ExperimentSpec,
        evaluator: Evaluator,
        *,
        metric: str,
        run_dir: str | Path,
        folds: Sequence[int | None] = (None,),
        keep_models: int = 0,
        direction: str = "maximize",
    ) -> None:
        self.spec, self.evaluator, self.metric = spec, evaluator, metric
        self.layout, self.folds = RunLayout(run_dir), list(folds)
        self.keep_models, self.minimize = keep_models, direction == "minimize"

    def run_trial(self, handle: TrialHandle) -> Outcome:
        try:
            spec = trial_spec(self.spec, handle.params)
        except TrainingError as err:
            return Outcome.from_error(err)
        values: list[float] = []
        best_epochs: list[int] = []
        handle.scores_cut = True  # a model cut before its first value is scored here
        last: Trainer | None = None
        for index, fold in enumerate(self.folds):
            if index > 0 and handle.out_of_time():
                if handle.cut_without_result and last is not None:  # the folds done are its result
                    return self._cut(handle, last, values, best_epochs)
                return Outcome.pruned()
            reporter = _Reporter(
                handle,
                self.metric,
                offset=index * spec.train.epochs,
                final_epoch=spec.train.epochs if index == len(self.folds) - 1 else None,
            )
            try:
                run = self.evaluator.run(
                    spec,
                    fold,
                    self.metric,
                    callbacks=(reporter,),
                    run_dir=self.layout.trial_dir(handle.number, index),
                    resume_from=self._checkpoint_to_resume(handle, index),
                    score_interrupted=lambda: handle.cut_without_result,
                )
            except TrainingError as err:
                return Outcome.from_error(err)
            if run is not None and run.trainer is not None and handle.cut_without_result:
                return self._cut(handle, run.trainer, [*values, run.score], [*best_epochs, run.best_epoch])
            if reporter.stopped or run is None:
                return Outcome.pruned()
            values.append(run.score)
            best_epochs.append(run.best_epoch)
            last = run.trainer
        shutil.rmtree(self.layout.trial_dir(handle.number), ignore_errors=True)
        value = statistics.fmean(values)
        if last is not None:
            self.evaluator.keep_search_model(
                handle.number, last, value, keep=self.keep_models, minimize=self.minimize
            )
        return Outcome.complete(value, fold_values=values, best_epochs=best_epochs)

    def _cut(
        self, handle: TrialHandle, trainer: Trainer, values: list[float], best_epochs: list[int]
    ) -> Outcome:
        """The search's only result, cut by the time budget: complete with the folds' scores (the last as
        cut), its last model kept to deliver if no refit fits."""
        value = statistics.fmean(values)
        self.evaluator.cut_trials.add(handle.number)
        self.evaluator.keep_search_model(
            handle.number, trainer, value, keep=max(1, self.keep_models), minimize=self.minimize
        )
        return Outcome.complete(
            value,
            fold_values=values,
            best_epochs=best_epochs,
            cut_by_budget=cut_note(handle.last_epoch, scored=True),
        )

    def _checkpoint_to_resume(self, handle: TrialHandle, fold_index: int) -> Path | None:
        original = handle.retry_of
        if original is None:
            return None
        path = RunLayout(self.layout.trial_dir(original, fold_index)).checkpoint
        return path if path.exists() else None


class _Reporter(Callback):
    """Reports the metric after each epoch to the trial and passes the scheduler's decision back; asks the
    trial whether the study's time is spent between epochs and after every minibatch."""

    def __init__(self, handle: TrialHandle, metric: str, offset: int, *, final_epoch: int | None) -> None:
        self.handle, self.metric, self.offset = handle, metric, offset
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
        self.stopped = decision is Decision.STOP
        if not self.stopped and epoch != self.final_epoch:
            self.stopped = self.handle.out_of_time()
        return self.stopped

    def on_batch_end(self, epoch: int, step: int) -> bool | None:
        # Within any epoch, the last one's included: the budget holds to a minibatch, not to an epoch.
        self.stopped = self.handle.out_of_time(within_epoch=True)
        return self.stopped
