"""Rung arithmetic for successive halving, shared by ASHA and every Hyperband bracket.

Definitions (Li et al., "A System for Massively Parallel Hyperparameter Tuning", 2020):

- rung levels: ``r * eta**k`` for k = 0, 1, ... below ``max_resource`` (reaching ``max_resource`` completes a
  trial; it is not a rung);
- at a rung with ``n`` results so far (this trial's included), the best ``max(1, n // eta)`` continue.
  With fewer than ``eta`` results nobody can be in the top 1/eta yet, and a trial cannot be paused here, so
  the rule becomes "continue iff best so far" (Optuna's SuccessiveHalvingPruner makes the same choice). Ties
  continue.
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

    def report(self, trial_id: int, epoch: int, score: float) -> Decision:
        """Record ``score`` at every rung the trial crossed since its last report and decide."""
        if trial_id in self._stopped:
            return Decision.STOP
        last = self._last_epoch.get(trial_id, 0)
        self._last_epoch[trial_id] = max(last, epoch)
        crossed = [k for k, level in enumerate(self.levels) if last < level <= epoch]
        if not crossed:
            return Decision.CONTINUE
        for k in crossed:  # a trial that fails a rung is not recorded at the rungs above it
            scores = self._sorted_scores[k]
            bisect.insort(scores, score)
            if score > scores[n_continuing(len(scores), self.reduction_factor) - 1]:
                self._stopped.add(trial_id)
                return Decision.STOP
        return Decision.PROMOTE
