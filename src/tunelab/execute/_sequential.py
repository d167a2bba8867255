"""``SequentialExecutor``: one trial at a time through the single-model trainer, fold after fold."""

from __future__ import annotations

import contextlib
import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna.artifacts.exceptions import ArtifactNotFound

from tunelab.errors import SpecError, TrainingError
from tunelab.execute._evaluator import Evaluator, trial_spec
from tunelab.execute._pop_checkpoint import ArtifactStore
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
    one a kill interrupted (``handle.retry_of``) continues from that checkpoint. With a ``checkpoint_store``
    (Optuna's artifact-store protocol; in a distributed study :class:`tunelab.storage.DatabaseArtifactStore`,
    which every worker reaches), each checkpoint is also copied there as it is written, as the artifact
    ``<prefix>trial-<n>:fold<k>``, n the first trial of its retries (named in each trial's ``checkpoint``
    attribute, which a reclaim hands to the retry as ``resume_from``); a retry on any machine continues
    from it, and the artifacts are removed when the trial ends. A trial's checkpoints are removed when it
    completes; with ``keep_models=k`` its model stays in memory while its value is among the
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
        checkpoint_store: ArtifactStore | None = None,
        checkpoint_prefix: str = "",
    ) -> None:
        self.spec, self.evaluator, self.metric = spec, evaluator, metric
        self.layout, self.folds = RunLayout(run_dir), list(folds)
        self.keep_models, self.minimize = keep_models, direction == "minimize"
        self.checkpoint_store, self.checkpoint_prefix = checkpoint_store, checkpoint_prefix

    def run_trial(self, handle: TrialHandle) -> Outcome:
        shared = self._shared_checkpoints(handle)
        outcome = self._run_trial(handle, shared)
        if shared is not None:  # the trial ended (an exception, a kill, leaves them for its retry)
            shared.remove()
        return outcome

    def _shared_checkpoints(self, handle: TrialHandle) -> _SharedCheckpoints | None:
        """The store's checkpoints of ``handle``'s trial: its original's when it is a retry of one."""
        if self.checkpoint_store is None:
            return None
        own = f"{self.checkpoint_prefix}trial-{handle.number}"
        inherited = handle.resume_from if handle.retry_of is not None else None
        if inherited is not None and inherited.startswith(f"{self.checkpoint_prefix}trial-"):
            handle.set_attr("checkpoint", inherited)  # a reclaim of this retry hands the same ones on
            return _SharedCheckpoints(self.checkpoint_store, inherited, len(self.folds), named=True)
        return _SharedCheckpoints(self.checkpoint_store, own, len(self.folds), named=False)

    def _run_trial(self, handle: TrialHandle, shared: _SharedCheckpoints | None) -> Outcome:
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
            run_dir = self.layout.trial_dir(handle.number, index)
            callbacks: tuple[Callback, ...] = (reporter,)
            if shared is not None:
                callbacks = (reporter, _CopyCheckpoint(shared, handle, index))
                resume_from = shared.fetch(index, run_dir)
            else:
                resume_from = self._checkpoint_to_resume(handle, index)
            try:
                run = self.evaluator.run(
                    spec,
                    fold,
                    self.metric,
                    callbacks=callbacks,
                    run_dir=run_dir,
                    resume_from=resume_from,
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


class _SharedCheckpoints:
    """One trial's checkpoints in an artifact store, a fold each: ``<root>:fold<k>``."""

    def __init__(self, store: ArtifactStore, root: str, n_folds: int, *, named: bool) -> None:
        self.store, self.root, self.n_folds = store, root, n_folds
        self.named = named  # whether the trial's "checkpoint" attribute already names root

    def artifact(self, fold_index: int) -> str:
        return f"{self.root}:fold{fold_index}"

    def fetch(self, fold_index: int, run_dir: Path) -> Path | None:
        """The stored checkpoint of fold ``fold_index`` as a file in ``run_dir``, or None if there is none."""
        try:
            with self.store.open_reader(self.artifact(fold_index)) as reader:
                content = reader.read()
        except ArtifactNotFound:
            return None
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "resumed.pt"
        path.write_bytes(content)
        return path

    def put(self, fold_index: int, path: Path, handle: TrialHandle) -> None:
        if not self.named:
            handle.set_attr("checkpoint", self.root)
            self.named = True
        with path.open("rb") as content:
            self.store.write(self.artifact(fold_index), content)

    def remove(self) -> None:
        for fold_index in range(self.n_folds):
            with contextlib.suppress(ArtifactNotFound):
                self.store.remove(self.artifact(fold_index))


class _CopyCheckpoint(Callback):
    """Copies each checkpoint the trainer writes for one fold into the store."""

    def __init__(self, shared: _SharedCheckpoints, handle: TrialHandle, fold_index: int) -> None:
        self.shared, self.handle, self.fold_index = shared, handle, fold_index

    def on_checkpoint(self, epoch: int, path: Path) -> None:
        self.shared.put(self.fold_index, path, self.handle)


class _Reporter(Callback):
    """Reports the metric after each epoch to the trial and passes the scheduler's decision back; asks the
    trial whether the study's time is spent between epochs and after every minibatch."""

    def __init__(self, handle: TrialHandle, metric: str, offset: int, *, final_epoch: int | None) -> None:
        self.handle, self.metric, self.offset = handle, metric, offset
        # The trial's last epoch (its last fold's); None on other folds, whose last epoch is not the trial's.
        self.final_epoch = final_epoch
        self.stopped = False

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        if logs["initial_epoch"] > 0:  # resumed from a checkpoint: the trial's next report follows this one
            self.handle.set_attr("resumed_at_epoch", self.offset + int(logs["initial_epoch"]))

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
