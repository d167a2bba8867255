"""Learning-rate schedules as closed-form functions of the optimizer step.

Each schedule is a pure function ``(base_lr, step, length) -> lr``, so that a fused population can evaluate it
per member. Notation: ``t`` is the 0-based optimizer step, ``S`` the steps per epoch, ``e = t // S`` the
0-based epoch, ``T = S * epochs`` the total number of steps. The trainer sets the rate before every step.

========== =========== =======================================================================================
name       granularity  learning rate
========== =========== =======================================================================================
constant   epoch        ``lr``
step       epoch        ``lr * gamma ** (e // step_size)``                    (= torch ``StepLR``)
exponential epoch       ``lr * gamma ** e``                                   (= torch ``ExponentialLR``)
cosine     step         ``min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2`` (= torch ``CosineAnnealingLR``)
warmup     step         ``lr * (t + 1) / W`` for ``t < W = warmup_epochs * S``, then cosine from ``lr`` to
                        ``min_lr`` over the remaining ``T - W`` steps (= torch ``LinearLR`` then
                        ``CosineAnnealingLR`` in ``SequentialLR``)
onecycle   step         cosine from ``max_lr / 25`` up to ``max_lr`` at step ``pct_start * T - 1``, then
                        cosine down to ``max_lr / 25 / 1e4`` at step ``T - 1`` (= torch ``OneCycleLR``
                        with ``cycle_momentum=False``); ``max_lr`` defaults to ``lr``
plateau    epoch        ``max(lr * factor ** n, min_lr)`` where ``n`` counts reductions: one each time the
                        monitored loss has not decreased for more than ``patience`` epochs
                        (= torch ``ReduceLROnPlateau(threshold=0)``); state in :class:`PlateauState`
========== =========== =======================================================================================
"""

from __future__ import annotations

import math
from typing import NamedTuple

from tunelab.train._monitor import MonitorState, update_monitor
from tunelab.train._spec import ScheduleSpec

__all__ = ["PER_STEP_SCHEDULES", "PlateauState", "RunLength", "lr_at", "update_plateau"]

# Schedules whose rate changes within an epoch; the others change only at epoch boundaries.
PER_STEP_SCHEDULES = frozenset({"cosine", "warmup", "onecycle"})
# OneCycle's start and end rates relative to its peak, as in torch.optim.lr_scheduler.OneCycleLR.
_ONECYCLE_DIV = 25.0
_ONECYCLE_FINAL_DIV = 1e4


class RunLength(NamedTuple):
    """A run's length in optimizer steps, ``steps_per_epoch`` (S) times ``n_epochs``: where a step sits in
    the run, which is what a schedule's rate depends on."""

    steps_per_epoch: int
    n_epochs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.n_epochs


class PlateauState(NamedTuple):
    """The plateau schedule's whole state: how the monitored loss fared, and how often the rate was cut."""

    monitor: MonitorState = MonitorState.initial("min")
    n_reductions: int = 0


def update_plateau(state: PlateauState, value: float, *, epoch: int, patience: int) -> PlateauState:
    """State after an epoch whose monitored loss was ``value``: one more reduction once patience runs out."""
    monitor = update_monitor(state.monitor, value, epoch=epoch, mode="min", min_delta=0.0)
    if monitor.n_bad_epochs > patience:
        return PlateauState(monitor._replace(n_bad_epochs=0), state.n_reductions + 1)
    return PlateauState(monitor, state.n_reductions)


def lr_at(
    spec: ScheduleSpec, base_lr: float, step: int, length: RunLength, *, n_reductions: int = 0
) -> float:
    """The learning rate for optimizer step ``step`` (0-based); ``n_reductions`` is the plateau's count."""
    epoch = step // length.steps_per_epoch
    name = spec.name
    if name == "constant":
        return base_lr
    if name == "step":
        return base_lr * spec.gamma ** (epoch // spec.step_size)
    if name == "exponential":
        return base_lr * spec.gamma**epoch
    if name == "cosine":
        return _cosine(base_lr, spec.min_lr, step, length.total_steps)
    if name == "warmup":
        return _warmup_cosine(spec, base_lr, step, length)
    if name == "onecycle":
        return _one_cycle(spec.max_lr or base_lr, spec.pct_start, step, length.total_steps)
    return max(base_lr * spec.factor**n_reductions, spec.min_lr)  # plateau


def _cosine(start: float, end: float, step: float, n_steps: float) -> float:
    return end + (start - end) * (1.0 + math.cos(math.pi * step / n_steps)) / 2.0


def _warmup_cosine(spec: ScheduleSpec, base_lr: float, step: int, length: RunLength) -> float:
    n_warmup = spec.warmup_epochs * length.steps_per_epoch
    if step < n_warmup:
        return base_lr * (step + 1) / n_warmup
    return _cosine(base_lr, spec.min_lr, step - n_warmup, length.total_steps - n_warmup)


def _one_cycle(max_lr: float, pct_start: float, step: int, n_steps: int) -> float:
    start = max_lr / _ONECYCLE_DIV
    peak_step = pct_start * n_steps - 1.0
    if step <= peak_step:
        # cos goes from 1 to -1 as the phase progresses: the rate rises from `start` to `max_lr`.
        return _cosine(start, max_lr, step, peak_step) if peak_step > 0 else max_lr
    end = start / _ONECYCLE_FINAL_DIV
    return _cosine(max_lr, end, step - peak_step, n_steps - 1 - peak_step)
