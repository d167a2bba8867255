"""The median stopping rule (Golovin et al., "Google Vizier", 2017)."""

from __future__ import annotations

import statistics

from tunelab.search.schedulers._base import (
    BaseScheduler,
    Decision,
    Direction,
    SchedulerDecision,
    TrialStatus,
    check_positive_int,
)

__all__ = ["MedianStoppingScheduler"]


class MedianStoppingScheduler(BaseScheduler):
    """Stop a trial at epoch ``t`` if its best value so far is strictly worse than the median, over completed
    trials that reached ``t``, of their running averages up to ``t``.

    The rule applies from epoch ``grace_epochs`` on, once at least ``n_startup_trials`` completed trials
    reached ``t``; before that every trial continues.
    """

    def __init__(
        self,
        *,
        n_startup_trials: int = 5,
        grace_epochs: int = 1,
        direction: Direction = "minimize",
    ) -> None:
        super().__init__(direction=direction)
        self.n_startup_trials = check_positive_int(n_startup_trials, "n_startup_trials")
        self.grace_epochs = check_positive_int(grace_epochs, "grace_epochs")
        self._curves: dict[
            int, list[float]
        ] = {}  # scores at epochs 1, 2, ... (last one kept for skipped epochs)
        self._best: dict[int, float] = {}
        # For completed trials: prefix sums of their scores, so a running average costs O(1).
        self._completed: dict[int, list[float]] = {}

    def on_report(self, trial_id: int, epoch: int, value: float) -> SchedulerDecision:
        score = self.score(value)
        curve = self._curves.setdefault(trial_id, [])
        while len(curve) < epoch:
            curve.append(score)
        self._best[trial_id] = min(self._best.get(trial_id, score), score)
        if epoch < self.grace_epochs:
            return Decision.CONTINUE
        averages = [prefix[epoch] / epoch for prefix in self._completed.values() if len(prefix) > epoch]
        if len(averages) < self.n_startup_trials:
            return Decision.CONTINUE
        return Decision.STOP if self._best[trial_id] > statistics.median(averages) else Decision.CONTINUE

    def on_trial_end(self, trial_id: int, status: TrialStatus) -> None:
        curve = self._curves.pop(trial_id, [])
        self._best.pop(trial_id, None)
        if status == "complete":
            prefix = [0.0]
            for score in curve:
                prefix.append(prefix[-1] + score)
            self._completed[trial_id] = prefix
