"""Rung arithmetic for successive halving, shared by ASHA and every Hyperband bracket.

Definitions (Li et al., "A System for Massively Parallel Hyperparameter Tuning", 2020):

- rung levels: ``r * eta**k`` for k = 0, 1, ... below ``max_resource`` (reaching ``max_resource`` completes a
  trial; it is not a rung);
- at a rung with ``n`` results so far (this trial's included), the best ``max(1, n // eta)`` continue.
  With fewer than ``eta`` results nobody can be in the top 1/eta yet, and a trial cannot be paused here, so
  the rule becomes "continue iff best so far" (Optuna's SuccessiveHalvingPruner makes the same choice). Ties
  continue.
- results that arrive together (:meth:`RungSystem.report_many`: a fused population's members end an epoch
  at the same moment) are all recorded at the rung before any of them is decided, so ``n`` counts every one
  of them: synchronous successive halving within the group, ASHA's rule against the results before it.
"""

from __future__ import annotations

import bisect

from tunelab.search.schedulers._base import Decision

__all__ = ["RungSystem", "n_continuing", "rung_levels"]


def rung_levels(min_resource: int, max_resource: int, reduction_factor: int) -> list[int]:
    """``[r, r*eta, r*eta**2, ...]``, every level strictly below ``max_resource``."""
    levels = []
    level = min_resource
    while level < max_resource:
        levels.append(level)
        level *= reduction_factor
    return levels


def n_continuing(n_results: int, reduction_factor: int) -> int:
    """How many of ``n_results`` recorded at a rung continue: the top 1/eta, at least one."""
    return max(1, n_results // reduction_factor)


class RungSystem:
    """Recorded scores per rung (lower is better) and the continue/stop rule."""

    def __init__(self, levels: list[int], reduction_factor: int) -> None:
        self.levels = levels
        self.reduction_factor = reduction_factor
        self._sorted_scores: list[list[float]] = [[] for _ in levels]
        self._last_epoch: dict[int, int] = {}
        self._stopped: set[int] = set()

    def scores_at(self, rung: int) -> list[float]:
        """Scores recorded at rung index ``rung``, best first."""
        return list(self._sorted_scores[rung])

    def report_many(self, reports: list[tuple[int, int, float]]) -> list[Decision]:
        """``(trial_id, epoch, score)`` results that arrived together; a decision each, in order.

        Rung by rung (lowest first), every result crossing it is recorded before the cut is taken, and a
        result that fails a rung is not recorded at the rungs above it.
        """
        decisions: list[Decision] = []
        crossing: dict[int, list[int]] = {}  # rung -> indices into reports
        for index, (trial_id, epoch, _) in enumerate(reports):
            if trial_id in self._stopped:
                decisions.append(Decision.STOP)
                continue
            last = self._last_epoch.get(trial_id, 0)
            self._last_epoch[trial_id] = max(last, epoch)
            crossed = [k for k, level in enumerate(self.levels) if last < level <= epoch]
            decisions.append(Decision.PROMOTE if crossed else Decision.CONTINUE)
            for k in crossed:
                crossing.setdefault(k, []).append(index)
        for k in sorted(crossing):
            entrants = [i for i in crossing[k] if decisions[i] is not Decision.STOP]
            scores = self._sorted_scores[k]
            for i in entrants:
                bisect.insort(scores, reports[i][2])
            cutoff = scores[n_continuing(len(scores), self.reduction_factor) - 1] if entrants else 0.0
            for i in entrants:
                if reports[i][2] > cutoff:
                    self._stopped.add(reports[i][0])
                    decisions[i] = Decision.STOP
        return decisions

    def report(self, trial_id: int, epoch: int, score: float) -> Decision:
        """Record ``score`` at every rung the trial crossed since its last report and decide (a group of one
        for :meth:`report_many`)."""
        return self.report_many([(trial_id, epoch, score)])[0]
