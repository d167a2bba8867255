"""Executors: they carry out the trials the search decides on.

- :class:`SequentialExecutor`: one trial at a time through the single-model trainer, fold after fold, with a
  checkpoint every epoch (a trial a kill interrupts resumes from it);
- :class:`PopulationExecutor`: a pack of trials that share their structure, trained as one fused population
  (:class:`SpecPopulation` maps their specs onto :mod:`tunelab.fused`); :func:`choose_fusion` decides by
  measurement whether fusion pays, and how many members (:mod:`~tunelab.execute._sizing` under a time budget);
- :func:`run_search`: one search process following a :class:`SearchPlan`; :func:`search_in_workers`: several;
- distributed studies (:class:`Distributed`): :func:`publish_plan` puts the plan in the study, :func:`work` is
  one worker anywhere (``tunelab worker``), :func:`search_on_ray` runs the workers as Ray actors
  (:class:`RayBackend`, the ``ray`` extra, imported only when used).

Both executors implement :class:`tunelab.search.Executor`; the study loop (:func:`tunelab.search.run_study`)
asks, tells and keeps the books, executors only train and report through their trials' handles.
"""

from tunelab.execute._distributed import PLAN_ATTR, publish_plan, read_plan, work, worker_name
from tunelab.execute._evaluator import Evaluator, FoldData, FoldRun, output_dim, trial_spec
from tunelab.execute._fusion import (
    PBT_MIN_POPULATION,
    FusionDecision,
    choose_fusion,
    fusion_blocker,
    measure_throughput,
)
from tunelab.execute._population import PopulationExecutor
from tunelab.execute._ray import RayBackend, search_on_ray
from tunelab.execute._search import Distributed, SearchPlan, SearchResult, run_search
from tunelab.execute._sequential import SequentialExecutor
from tunelab.execute._sizing import POPULATION_SHARE, PopulationSizer, expected_epochs, forward_flops
from tunelab.execute._spec_population import SHARED_TRAIN_FIELDS, SpecPopulation, fusible_loss_reason
from tunelab.execute._workers import search_in_workers

__all__ = [
    "PBT_MIN_POPULATION",
    "PLAN_ATTR",
    "POPULATION_SHARE",
    "SHARED_TRAIN_FIELDS",
    "Distributed",
    "Evaluator",
    "FoldData",
    "FoldRun",
    "FusionDecision",
    "PopulationExecutor",
    "PopulationSizer",
    "RayBackend",
    "SearchPlan",
    "SearchResult",
    "SequentialExecutor",
    "SpecPopulation",
    "choose_fusion",
    "expected_epochs",
    "forward_flops",
    "fusible_loss_reason",
    "fusion_blocker",
    "measure_throughput",
    "output_dim",
    "publish_plan",
    "read_plan",
    "run_search",
    "search_in_workers",
    "search_on_ray",
    "trial_spec",
    "work",
    "worker_name",
]
