"""Asynchronous successive halving (ASHA), in its stopping form."""

from __future__ import annotations

from collections.abc import Sequence

from tunelab.errors import SpecError
from tunelab.search.schedulers._base import (
    BaseScheduler,
    Direction,
    SchedulerDecision,
    check_positive_int,
)
from tunelab.search.schedulers._rungs import RungSystem, rung_levels

__all__ = ["AshaScheduler", "check_resources"]


def check_resources(min_resource: int, max_resource: int, reduction_factor: int) -> None:
    check_positive_int(min_resource, "min_resource")
    check_positive_int(max_resource, "max_resource")
    check_positive_int(reduction_factor, "reduction_factor", minimum=2)
    if min_resource >= max_resource:
        raise SpecError(
            f"min_resource ({min_resource}) must be below max_resource ({max_resource}) epochs, or there is "
            "nothing to stop early; lower min_resource or use no scheduler."
        )


class AshaScheduler(BaseScheduler):
    """ASHA: rungs at ``min_resource * reduction_factor**k`` epochs (below ``max_resource``).

    A trial reaching a rung is compared with every result recorded at that rung so far: it continues
    (``PROMOTE``) iff it is in the top ``1/reduction_factor`` of them (at least the best one), else ``STOP``.
    Between rungs the answer is ``CONTINUE``. ``max_resource`` should equal the trials' epoch budget: the
    scheduler never stops a trial for reaching it.

    >>> AshaScheduler(min_resource=1, max_resource=27, reduction_factor=3).levels
    [1, 3, 9]
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
        self.rungs = RungSystem(rung_levels(min_resource, max_resource, reduction_factor), reduction_factor)

    @property
    def levels(self) -> list[int]:
        return self.rungs.levels

    def on_report(self, trial_id: int, epoch: int, value: float) -> SchedulerDecision:
        return self.rungs.report(trial_id, epoch, self.score(value))

    def on_reports(self, reports: Sequence[tuple[int, int, float]]) -> list[SchedulerDecision]:
        """Results that arrived together are ranked together (``RungSystem.report_many``)."""
        return list(self.rungs.report_many([(t, e, self.score(v)) for t, e, v in reports]))
