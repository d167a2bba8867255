"""Tune an experiment end to end: search, select honestly, refit, test once, export.

The protocol, written into every study's ``summary.json``:

1. **Search**: the sampler proposes configurations from ``search.space``; each trains on the training part
   and is scored on the validation part (or, with ``cv: K``, on each of K folds in turn, reporting after
   every epoch so the scheduler can stop it early fold by fold). It gets 80% of a wall-time budget.
2. **Selection**: the ``top_k`` configurations are trained again with ``n_seeds`` fresh training seeds on
   every fold; their mean, standard deviation and a 95% interval (inside the metric's range) are reported.
   The winner (``search.select``) is the candidate with the fewest trainable parameters among those within
   one standard error of the best mean (the paired difference over validation rows, ``_simplest``), or the
   best mean itself with ``select: best``.
   Fresh seeds keep the estimate free of the search's own selection bias. Seeds go round the candidates (each
   gets one complete seed, every fold, before any gets a second), and a seed the budget cuts short is not
   counted. Each run's validation outputs are kept.
3. **Refit**: the winner is trained on train + validation for the median of its best epoch counts.
4. **Ensemble** (``search.ensemble``, on by default): the re-evaluation runs, averaged (probabilities for
   classification, outputs for regression and forecasts) with weights from greedy selection with replacement
   on the validation loss, replace the winner when they beat it by the search metric on validation rows that
   did not choose them (``_greedy``); their models are then refit like the winner, if that fits the budget.
5. **Test**: the test part, set aside before anything else, is evaluated once, here: the winner's refit and,
   when one was built, the ensemble, both after the choice between them.
6. **Export**: the delivered model (the refit winner, or the ensemble as one module) is exported with its
   preprocessing to ``run_dir/best``; ``summary.json`` records the choice, its validation gain and both test
   scores.

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
