"""Hyperband: several successive-halving brackets with different minimum resources, run asynchronously."""

from __future__ import annotations

from collections.abc import Sequence

from tunelab.search.schedulers._asha import check_resources
from tunelab.search.schedulers._base import BaseScheduler, Decision, Direction, SchedulerDecision
from tunelab.search.schedulers._rungs import RungSystem, rung_levels

__all__ = ["HyperbandScheduler", "bracket_sizes", "smooth_weighted_cycle"]


def bracket_sizes(min_resource: int, max_resource: int, reduction_factor: int) -> list[int]:
    """Configurations per bracket in a Hyperband iteration; bracket ``s`` starts at ``min_resource * eta**s``.

    Li et al. (2018): ``n_s = ceil((s_max + 1) / (s_max - s + 1) * eta**(s_max - s))`` with
    ``s_max = floor(log_eta(max_resource / min_resource))``, so every bracket gets about the same total
    epochs.
    """
    s_max = len(rung_levels(min_resource, max_resource + 1, reduction_factor)) - 1
    eta = reduction_factor
    # Integer arithmetic for the ceiling: floats would turn 4/4 * 27 into 27.000000000000004 on some inputs.
    return [-(-(s_max + 1) * eta ** (s_max - s) // (s_max - s + 1)) for s in range(s_max + 1)]


def smooth_weighted_cycle(weights: list[int]) -> list[int]:
    """Smooth weighted round-robin (as in nginx): one cycle of ``sum(weights)`` picks, index ``i`` picked
    ``weights[i]`` times, spread out rather than in blocks; ties go to the lower index."""
    current = [0] * len(weights)
    total = sum(weights)
    cycle = []
    for _ in range(total):
        current = [c + w for c, w in zip(current, weights, strict=True)]
        pick = max(range(len(weights)), key=lambda i: (current[i], -i))
        current[pick] -= total
        cycle.append(pick)
    return cycle


class HyperbandScheduler(BaseScheduler):
    """Asynchronous Hyperband.

    Brackets ``s = 0 .. s_max`` (``s_max = floor(log_eta(max_resource / min_resource))``); bracket ``s`` has
    its own rungs at ``min_resource * eta**(s + k)`` below ``max_resource`` and runs ASHA's rule among its own
    trials only. Bracket 0 stops most aggressively; bracket ``s_max`` may have no rung at all (plain full
    training).

    Assignment: trial ``i`` goes to bracket ``cycle[i % len(cycle)]``, where ``cycle`` is the smooth weighted
    round-robin over the brackets with weights :func:`bracket_sizes` (Hyperband's own allocation). It depends
    on the trial number only, so a resumed study assigns old trials to the same brackets, and any prefix of
    the trials is spread over brackets in about the right proportions.
    """

    def __init__(
        self,
        *,
        min_resource: int = 1,
        max_resource: int,
        reduction_factor: int = 3,
        direction: Direction = "minimize",
    ) -> None:
        super().__init__(direction=direction)
        check_resources(min_resource, max_resource, reduction_factor)
        self.min_resource = min_resource
        self.max_resource = max_resource
        self.reduction_factor = reduction_factor
        self.sizes = bracket_sizes(min_resource, max_resource, reduction_factor)
        self.brackets = [
            RungSystem(
                rung_levels(min_resource * reduction_factor**s, max_resource, reduction_factor),
                reduction_factor,
            )
            for s in range(len(self.sizes))
        ]
        self._cycle = smooth_weighted_cycle(self.sizes)

    @property
    def s_max(self) -> int:
        return len(self.brackets) - 1

    def bracket_of(self, trial_id: int) -> int:
        return self._cycle[trial_id % len(self._cycle)]

    def on_report(self, trial_id: int, epoch: int, value: float) -> SchedulerDecision:
        return self.brackets[self.bracket_of(trial_id)].report(trial_id, epoch, self.score(value))

    def on_reports(self, reports: Sequence[tuple[int, int, float]]) -> list[SchedulerDecision]:
        """Results that arrived together are ranked together within each bracket."""
        decisions: list[SchedulerDecision] = [Decision.CONTINUE] * len(reports)
        by_bracket: dict[int, list[int]] = {}
        for index, (trial_id, _, _) in enumerate(reports):
            by_bracket.setdefault(self.bracket_of(trial_id), []).append(index)
        for bracket, indices in by_bracket.items():
            batch = [(reports[i][0], reports[i][1], self.score(reports[i][2])) for i in indices]
            for i, decision in zip(indices, self.brackets[bracket].report_many(batch), strict=True):
                decisions[i] = decision
        return decisions
