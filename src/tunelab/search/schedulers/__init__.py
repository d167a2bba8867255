"""Schedulers decide, per reported epoch, whether a trial continues, stops, is promoted or exploits another.

Decisions are return values (:class:`Decision`, or :class:`Exploit` from PBT); executing them (stopping a
trial, copying weights) is the caller's job. See :mod:`tunelab.search.schedulers._base` for the call order.
"""

from tunelab.search.schedulers._asha import AshaScheduler
from tunelab.search.schedulers._base import (
    BaseScheduler,
    Decision,
    Direction,
    Exploit,
    NoScheduler,
    SchedulerDecision,
    TrialStatus,
)
from tunelab.search.schedulers._hyperband import HyperbandScheduler, bracket_sizes
from tunelab.search.schedulers._median import MedianStoppingScheduler
from tunelab.search.schedulers._pbt import PbtScheduler
from tunelab.search.schedulers._rungs import n_continuing, rung_levels

__all__ = [
    "AshaScheduler",
    "BaseScheduler",
    "Decision",
    "Direction",
    "Exploit",
    "HyperbandScheduler",
    "MedianStoppingScheduler",
    "NoScheduler",
    "PbtScheduler",
    "SchedulerDecision",
    "TrialStatus",
    "bracket_sizes",
    "n_continuing",
    "rung_levels",
]
