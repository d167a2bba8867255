"""How many members a fused population gets when the study runs on a wall-time budget.

A population's trials report to the study as they end, but the population as a whole holds the search until
its last member ends. A large population of an expensive structure (three layers of 512 at batch 64, say) can
then take most of the budget, and the sampler sees one structure instead of several. So with a time budget
each population is sized to its structure: a member costs ``3 x forward FLOPs x training rows x expected
epochs`` (the expected epochs follow from the scheduler's rungs: ASHA keeps the top ``1/eta`` at each); the
study's training rate in FLOP/s is first taken from the fusion probe, then measured on every population it
trains; and a population gets as many members as fit in :data:`POPULATION_SHARE` of the time left (at least
one, at most the measured or configured population size).

A small model's fused step costs mostly its fixed overhead (kernel launches, the optimizer's bookkeeping,
evaluation), which does not grow with members: a population of one linear model takes about as long as one of
eight. So each population's overhead per epoch is estimated too (its time less its members' compute at the
fastest rate seen) and a structure whose overhead is known takes members while their compute stays within
it: at most about twice the time of one member, whatever the share allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from tunelab.inputs import TextInput
from tunelab.models import ModelSpec, build_model
from tunelab.search import AshaScheduler, BaseScheduler, HyperbandScheduler

__all__ = ["POPULATION_SHARE", "PopulationSizer", "expected_epochs", "forward_flops"]

POPULATION_SHARE = 0.25  # of the time left, for one population
# Modules whose forward pass is a matmul (counted exactly) or negligible next to one; any other module with
# parameters (convolutions, recurrent layers...) is counted by torch's FLOP counter.
_LINEAR = (nn.Linear,)
_CHEAP = (nn.BatchNorm1d, nn.LayerNorm)


def expected_epochs(scheduler: BaseScheduler, max_epochs: int) -> float:
    """Mean epochs a trial trains under ``scheduler`` when each rung keeps its top ``1/eta``.

    ASHA: rungs ``r_0 < r_1 < ...``; every trial trains to ``r_0``, a ``1/eta`` share goes on to ``r_1``, and
    so on up to ``max_epochs``. Hyperband: its brackets' means weighted by their sizes. Any other scheduler
    (median rule, none, PBT): ``max_epochs``, the safe side.
    """
    if isinstance(scheduler, HyperbandScheduler):
        means = [_rung_mean(b.levels, scheduler.reduction_factor, max_epochs) for b in scheduler.brackets]
        return sum(n * m for n, m in zip(scheduler.sizes, means, strict=True)) / sum(scheduler.sizes)
    if isinstance(scheduler, AshaScheduler):
        return _rung_mean(scheduler.levels, scheduler.reduction_factor, max_epochs)
    return float(max_epochs)


def _rung_mean(levels: Sequence[int], eta: int, max_epochs: int) -> float:
    epochs, reached, share = 0.0, 0, 1.0
    for level in levels:
        epochs += share * (level - reached)
        reached, share = level, share / eta
    return epochs + share * (max_epochs - reached)


def forward_flops(
    model: ModelSpec, *, input_shape: tuple[int, ...], output_dim: int, text: TextInput | None = None
) -> float:
    """Floating-point operations of one sample's forward pass through the model ``model`` describes.

    MLPs are counted from their linear layers (``2 x in x out`` each); other models by running one sample
    through ``torch.utils.flop_counter`` (whose first use in a process costs about a second).
    """
    module = build_model(model, input_shape=input_shape, output_dim=output_dim, seed=0, text=text)
    with_params = [m for m in module.modules() if next(m.parameters(recurse=False), None) is not None]
    if all(isinstance(m, _LINEAR + _CHEAP) for m in with_params):
        return float(sum(2 * m.in_features * m.out_features for m in with_params if isinstance(m, _LINEAR)))
    from torch.utils.flop_counter import FlopCounterMode

    module.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, *input_shape))
    return float(counter.get_total_flops())


class PopulationSizer:
    """Members per population for a time budget; see the module docstring.

    ``rows``: training rows per epoch; ``flop_rate``: the training rate to assume before any population has
    been measured (None: populations keep their configured size until one has).
    """

    def __init__(self, *, rows: int, flop_rate: float | None = None) -> None:
        self.rows = rows
        self.assumed_rate = flop_rate
        self.work = 0.0  # FLOPs of the populations measured so far (3 x forward, per member-sample)
        self.seconds = 0.0  # and the wall time they took
        self._best_rate = flop_rate or 0.0  # the fastest FLOP/s seen (assumed or one population's)
        self._overhead: dict[float, float] = {}  # a structure's (by FLOPs) overhead seconds per epoch

    @property
    def rate(self) -> float | None:
        """FLOP/s: as measured on this study's populations, or as assumed until there is a measurement."""
        if self.seconds > 0 and self.work > 0:
            return self.work / self.seconds
        return self.assumed_rate

    def size(self, flops: float, *, epochs: float, cap: int, time_left: float) -> int:
        """Members whose expected work fits in ``POPULATION_SHARE`` of ``time_left`` seconds, in ``[1, cap]``,
        for a structure of ``flops`` forward FLOPs per sample whose trials train ``epochs`` epochs on average
        (:func:`expected_epochs`, folds included)."""
        rate = self.rate
        if rate is None or flops <= 0:
            return max(1, cap)
        per_member = 3.0 * flops * self.rows * epochs
        fits = math.floor(POPULATION_SHARE * max(0.0, time_left) * rate / per_member)
        overhead = self._overhead.get(flops, 0.0)
        if overhead > 0:  # members whose compute fits in the population's fixed cost
            fits = max(fits, math.floor(overhead * self._best_rate / (3.0 * flops * self.rows)))
        return max(1, min(cap, fits))

    def observe(
        self, flops: float, member_epochs: int, seconds: float, *, population_epochs: int | None = None
    ) -> None:
        """A population of ``flops`` per sample trained ``member_epochs`` epochs in all, in ``seconds``;
        ``population_epochs``: the epochs the population itself stepped through (its longest member's)."""
        if seconds > 0 and member_epochs > 0 and flops > 0:
            work = 3.0 * flops * self.rows * member_epochs
            self.work += work
            self.seconds += seconds
            self._best_rate = max(self._best_rate, work / seconds)
            if population_epochs:
                compute = work / self._best_rate
                self._overhead[flops] = max(0.0, seconds - compute) / population_epochs
