"""Hyperparameter search: decides what to train and when to stop. Imports no torch.

- :mod:`tunelab.search.space`: what may vary (``SearchSpace.from_dict``), sampled into nested spec overrides;
- :func:`make_sampler`: TPE, GP, CMA-ES, random, grid, QMC, NSGA-II, multi-objective TPE, seeded;
- :mod:`tunelab.search.schedulers`: ASHA, Hyperband, median stopping, PBT; decisions are return values;
- :func:`run_study`: the one ask/tell loop, over an :class:`Executor` that trains the trials it asks for
  (an objective function is wrapped in :class:`ObjectiveExecutor`), with budgets (:class:`StudyBudget`);
- :class:`SearchSpec`: the ``search:`` section of an experiment spec.
"""

from tunelab.search._budget import StudyBudget
from tunelab.search._events import Events, NoEvents, StudyEvents
from tunelab.search._executor import BaseExecutor, Executor, ObjectiveExecutor, Outcome
from tunelab.search._handle import StudyDeadline, TrialHandle, cut_note, report_together
from tunelab.search._packing import structural_paths
from tunelab.search._samplers import SAMPLER_NAMES, make_sampler
from tunelab.search._study import StudySummary, run_study, summarize
from tunelab.search._tune_spec import (
    SchedulerSpec,
    SearchSpec,
    metric_direction,
    parse_duration,
    pbt_mutable,
    pbt_problem,
)
from tunelab.search.schedulers import (
    AshaScheduler,
    BaseScheduler,
    Decision,
    Direction,
    Exploit,
    HyperbandScheduler,
    MedianStoppingScheduler,
    NoScheduler,
    PbtScheduler,
)
from tunelab.search.space import Choice, Fixed, Float, Int, SearchSpace, merge_overrides
from tunelab.storage import WriteBehind  # where a study lives; re-exported here, where it is used

__all__ = [
    "SAMPLER_NAMES",
    "AshaScheduler",
    "BaseExecutor",
    "BaseScheduler",
    "Choice",
    "Decision",
    "Direction",
    "Events",
    "Executor",
    "Exploit",
    "Fixed",
    "Float",
    "HyperbandScheduler",
    "Int",
    "MedianStoppingScheduler",
    "NoEvents",
    "NoScheduler",
    "ObjectiveExecutor",
    "Outcome",
    "PbtScheduler",
    "SchedulerSpec",
    "SearchSpace",
    "SearchSpec",
    "StudyBudget",
    "StudyDeadline",
    "StudyEvents",
    "StudySummary",
    "TrialHandle",
    "WriteBehind",
    "cut_note",
    "make_sampler",
    "merge_overrides",
    "metric_direction",
    "parse_duration",
    "pbt_mutable",
    "pbt_problem",
    "report_together",
    "run_study",
    "structural_paths",
    "summarize",
]
