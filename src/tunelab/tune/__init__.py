"""Tune an experiment end to end: search, select honestly, refit, test once, export.

The protocol, written into every study's ``summary.json``:

1. **Search**: the sampler proposes configurations from ``search.space``; each trains on the training part
   and is scored on the validation part (or, with ``cv: K``, on each of K folds in turn, reporting after
   every epoch so the scheduler can stop it early fold by fold). It gets 80% of a wall-time budget.
2. **Selection**: the ``top_k`` configurations are trained again with ``n_seeds`` fresh training seeds on
   every fold; their mean, standard deviation and a 95% interval (inside the metric's range) are reported,
   and the best mean wins.
   Fresh seeds keep the estimate free of the search's own selection bias.
3. **Refit**: the winner is trained on train + validation for the median of its best epoch counts.
4. **Test**: the test part, set aside before anything else, is evaluated once, here.
5. **Export**: the refit model is exported with its preprocessing to ``run_dir/best``.

Everything lives in the run directory (:class:`tunelab.layout.RunLayout`): ``study.db`` (Optuna's schema),
``spec.yaml``, per-trial checkpoints while a trial runs, ``summary.json``, and ``best/``.
"""

from tunelab.search import Events
from tunelab.tune._defaults import MODEL_FAMILIES, SMALL_TABLE_ROWS, default_experiment
from tunelab.tune._plan import SEARCH_SHARE, TimeBudget
from tunelab.tune._protocol import tune_experiment
from tunelab.tune._result import Candidate, Refit, TuneProtocol, TuneResult

__all__ = [
    "MODEL_FAMILIES",
    "SEARCH_SHARE",
    "SMALL_TABLE_ROWS",
    "Candidate",
    "Events",
    "Refit",
    "TimeBudget",
    "TuneProtocol",
    "TuneResult",
    "default_experiment",
    "tune_experiment",
]
