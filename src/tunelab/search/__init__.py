"""Hyperparameter search: the search-space language, Optuna samplers, schedulers that decide, the study loop.

- :mod:`tunelab.search.space`: what may vary (``SearchSpace.from_dict``), sampled into nested spec overrides;
- :func:`make_sampler`: TPE, GP, CMA-ES, random, grid, QMC, NSGA-II, multi-objective TPE, seeded;
- :mod:`tunelab.search.schedulers`: ASHA, Hyperband, median stopping, PBT; decisions are return values;
- :func:`run_study`: ask/tell over an Optuna study (in memory, or SQLite with write-behind) with budgets.
"""

from tunelab.search._handle import TrialHandle
from tunelab.search._samplers import SAMPLER_NAMES, make_sampler
from tunelab.search._storage import WriteBehind
from tunelab.search._study import StudySummary, run_study
from tunelab.search._tune_spec import SchedulerSpec, SearchSpec, metric_direction, parse_duration
from tunelab.search.schedulers import (
    AshaScheduler,
    BaseScheduler,
    Decision,
    Exploit,
    HyperbandScheduler,
    MedianStoppingScheduler,
    NoScheduler,
    PbtScheduler,
)
from tunelab.search.space import Choice, Fixed, Float, Int, SearchSpace, merge_overrides

__all__ = [
    "SAMPLER_NAMES",
    "AshaScheduler",
    "BaseScheduler",
    "Choice",
    "Decision",
    "Exploit",
    "Fixed",
    "Float",
    "HyperbandScheduler",
    "Int",
    "MedianStoppingScheduler",
    "NoScheduler",
    "PbtScheduler",
    "SchedulerSpec",
    "SearchSpace",
    "SearchSpec",
    "StudySummary",
    "TrialHandle",
    "WriteBehind",
    "make_sampler",
    "merge_overrides",
    "metric_direction",
    "parse_duration",
    "run_study",
]
