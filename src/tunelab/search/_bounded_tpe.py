"""``BoundedTPESampler``: Optuna's TPE whose cost per trial stops growing with the history.

Why: at every ask Optuna's TPE splits every finished trial into a "good" and a "bad" group, reads every
trial's parameters and builds one kernel per trial, with Python work per trial; with a cheap objective that
is the whole cost of a trial, and it grows with the history (BENCHMARKS.md has the figures).

What: past ``max_history`` finished trials, TPE models a bounded view of the history (plus the running
trials, for the constant liar): the good group the full history has (TPE's default ``gamma``), so the
"good" density is full-history TPE's, and the most recent of the other trials, weighted by TPE's default
weights within the view, as the "bad" density. Up to ``max_history`` the view is the whole history, and
proposals are Optuna's TPE's from the same random draws (the arithmetic differs beyond the 7th digit).

How: a ``TPESampler`` subclass; Optuna's public flow (search-space inference, startup trials, relative and
independent sampling, constant liar, hooks) is untouched. The private pieces it replaces are each checked
when a sampler is built, so an Optuna that changes them fails loudly (a ``RuntimeError`` naming this file):

- ``TPESampler._sample``: finished trials never change, so each is indexed once into numpy arrays
  (:mod:`tunelab.search._tpe_history`) and an ask costs a few vectorized passes. Several objectives, pruned
  or infeasible trials in the good group, or a parameter whose distribution changed take Optuna's own split
  and parameter reading (``_split_trials``, ``_get_internal_repr``) on the view;
- ``_parzen_estimator_cls``: Optuna's Parzen estimator, vectorized (:mod:`tunelab.search._parzen`), checked
  against Optuna's own once per process;
- ``TPESampler._sample_relative``: once the finished trials reach ``n_startup_trials`` for a study, they
  are not counted again at every ask;
- the search-space inference, updated with new trials only rather than re-read (and deep-copied) per ask.
"""

from __future__ import annotations

import inspect
import math
import threading
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from tunelab.search._parzen import _check_estimator, _FastParzenEstimator
from tunelab.search._tpe_history import _FINISHED, _History, _NewTrials

try:  # Optuna's private TPE internals (see the module docstring)
    from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator
    from optuna.samplers._tpe.sampler import _split_trials
    from optuna.search_space import IntersectionSearchSpace
    from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace, _SearchSpaceGroup
except ImportError as err:  # pragma: no cover - only with an Optuna that moved them
    raise ImportError(
        f"tunelab's BoundedTPESampler builds on Optuna's TPE internals, which optuna {optuna.__version__} "
        f"has moved ({err}). Update tunelab/search/_bounded_tpe.py for this Optuna."
    ) from err

__all__ = ["DEFAULT_MAX_HISTORY", "BoundedTPESampler", "good_group_size"]

DEFAULT_MAX_HISTORY = 100
"""Finished trials TPE models at most, by default: the 25 good ones and the 75 most recent others. Larger
views (200, 400) cost more and searched no better in ``bench/tpe_quality.py``; 64 searched a little worse."""

# What the sampler relies on in Optuna's TPESampler: attributes, and methods with their parameters.
_TPE_ATTRIBUTES = (
    "_parzen_estimator_cls",
    "_parzen_estimator_parameters",
    "_n_ei_candidates",
    "_rng",
    "_constant_liar",
    "_group",
)
_TPE_METHODS = {
    "_sample": ["self", "study", "trial", "search_space"],
    "_sample_relative": ["self", "study", "trial", "search_space"],
    "_get_internal_repr": ["self", "trials", "search_space", "study"],
    "_compute_acquisition_func": ["self", "samples", "mpe_below", "mpe_above"],
    "_compare": ["samples", "acquisition_func_vals"],
    "_get_params": ["self", "trial", "study"],
}


def _check_optuna(sampler: optuna.samplers.TPESampler) -> None:
    """Fail at construction if Optuna's TPE no longer has what this module replaces or calls."""
    problems = [f"attribute {name}" for name in _TPE_ATTRIBUTES if not hasattr(sampler, name)]
    for name, expected in _TPE_METHODS.items():
        method = getattr(optuna.samplers.TPESampler, name, None)
        found = list(inspect.signature(method).parameters) if callable(method) else None
        if found != expected:
            problems.append(f"{name}{tuple(expected)} (found {found})")
    if list(inspect.signature(_split_trials).parameters) != ["study", "trials", "n_below"]:
        problems.append("_split_trials(study, trials, n_below)")
    if getattr(sampler, "_parzen_estimator_cls", None) is not _ParzenEstimator:
        problems.append("_parzen_estimator_cls = _ParzenEstimator")
    if not isinstance(getattr(sampler, "_search_space", None), IntersectionSearchSpace):
        problems.append("_search_space (an IntersectionSearchSpace)")
    if getattr(sampler, "_group", False) and not isinstance(
        getattr(sampler, "_group_decomposed_search_space", None), _GroupDecomposedSearchSpace
    ):
        problems.append("_group_decomposed_search_space")
    if problems:
        raise RuntimeError(
            f"optuna {optuna.__version__}'s TPESampler has changed where tunelab's BoundedTPESampler builds "
            f"on it: {'; '.join(problems)}. Update tunelab/search/_bounded_tpe.py for this Optuna, or use "
            "optuna.samplers.TPESampler directly."
        )


def good_group_size(n_finished: int, *, n_objectives: int) -> int:
    """How many of ``n_finished`` trials Optuna's TPE puts in its "good" group (its default ``gamma``: 10 %,
    at most 25 for one objective; 10 % for several). A test checks this still matches Optuna."""
    n_good = math.ceil(0.1 * n_finished)
    return min(n_good, 25) if n_objectives == 1 else n_good


class BoundedTPESampler(optuna.samplers.TPESampler):
    """Optuna's :class:`~optuna.samplers.TPESampler` that models at most ``max_history`` finished trials.

    ``max_history``: finished trials TPE models at most (at least ``n_startup_trials``, so the model always
    starts); past it TPE models the full history's good group and the most recent other trials (see the
    module docstring). Every other keyword goes to ``TPESampler`` unchanged, except ``gamma``: the good
    group is TPE's default.
    """

    def __init__(self, *, max_history: int = DEFAULT_MAX_HISTORY, **tpe: Any) -> None:
        if isinstance(max_history, bool) or not isinstance(max_history, int) or max_history < 1:
            raise ValueError(f"max_history must be a whole number >= 1, got {max_history!r}.")
        if "gamma" in tpe:
            raise TypeError(
                "BoundedTPESampler keeps TPE's default gamma; a custom gamma is not supported. Use "
                "optuna.samplers.TPESampler for a custom gamma."
            )
        super().__init__(**tpe)
        _check_optuna(self)
        _check_estimator(self._parzen_estimator_parameters)
        self._parzen_estimator_cls = _FastParzenEstimator
        self._search_space = _IncrementalIntersection()
        if self._group:
            self._group_decomposed_search_space = _IncrementalGroups()
        self._max_history = max(max_history, tpe.get("n_startup_trials", 10))
        self._history: _History | None = None
        self._started: optuna.Study | None = None  # the study whose startup trials are known to be done
        self._lock = threading.Lock()

    @property
    def max_history(self) -> int:
        """Finished trials TPE models at most."""
        return self._max_history

    def _sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """Optuna's: random (``{}``) until ``n_startup_trials`` trials finished, then :meth:`_sample`."""
        if not search_space:
            return {}
        if self._started is not study:
            if (
                len(study._get_trials(deepcopy=False, states=_FINISHED, use_cache=True))
                < self._n_startup_trials
            ):
                return {}
            self._started = study  # finished trials stay finished: the count is not taken again
        return self._sample(study, trial, search_space)

    def _sample(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        observed = self._observe_view(study, trial, search_space)
        if observed is None:
            return super()._sample(study, trial, search_space)
        observed_below, observed_above = observed
        weights_below = None
        if study._is_multi_objective():  # as Optuna: the good trials of several objectives weigh the same
            weights_below = np.ones(len(next(iter(observed_below.values()))) if observed_below else 0)
        mpe_below = self._parzen_estimator_cls(
            observed_below, search_space, self._parzen_estimator_parameters, weights_below
        )
        mpe_above = self._parzen_estimator_cls(
            observed_above, search_space, self._parzen_estimator_parameters
        )
        samples = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        # Both log-densities in one pass; Optuna's acquisition function then reads them.
        if isinstance(mpe_below, _FastParzenEstimator) and isinstance(mpe_above, _FastParzenEstimator):
            _FastParzenEstimator.prepare_log_pdfs([mpe_below, mpe_above], samples)
        best = optuna.samplers.TPESampler._compare(
            samples, self._compute_acquisition_func(samples, mpe_below, mpe_above)
        )
        return {name: dist.to_external_repr(best[name]) for name, dist in search_space.items()}

    def _observe_view(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
        """The internal parameter values of the good and the other trials of the view (the whole history
        while the study holds at most ``max_history`` finished trials)."""
        liar = self._constant_liar
        # As Optuna: with the constant liar, trials are read afresh (other workers may have started some).
        trials = study._get_trials(deepcopy=False, use_cache=not liar)
        with self._lock:
            history = self._history
            if history is None or history.new_trials.study is not study:
                history = self._history = _History(study)
            history.add(trials)
            # Running trials count as bad results (constant liar); not the one being sampled.
            running = history.new_trials.running(trials) if liar else []
            running = [t for t in running if t.number != trial.number]
            n_good = min(
                good_group_size(len(history.trials), n_objectives=len(study.directions)),
                self._max_history // 2,
            )
            view = history.split(n_good, self._max_history, search_space)
            if view.fast:
                return history.observations(view.good, search_space), history.observations(
                    view.others, search_space, extra=self._params_of(running, study)
                )
            # Optuna's own split and parameter reading, on the view (several objectives, or a good group
            # that needs pruned or infeasible trials, or parameters whose distribution changed).
            rows = np.concatenate([view.good, view.others])
            below, above = _split_trials(study, history.trials_at(rows) + running, n_good)
            return (
                self._get_internal_repr(below, search_space, study),
                self._get_internal_repr(above, search_space, study),
            )

    def _params_of(self, running: list[FrozenTrial], study: optuna.Study) -> list[tuple[int, dict[str, Any]]]:
        """(number, parameters) of running trials, with the parameters TPE already chose for them."""
        return [(t.number, self._get_params(t, study)) for t in running]

    def __getstate__(self) -> dict[str, Any]:
        # The index and the search-space trackers are caches of one study: a copy rebuilds them.
        state = self.__dict__.copy()
        del state["_lock"]
        state["_history"] = None
        state["_started"] = None
        state["_search_space"] = _IncrementalIntersection()
        if self._group:
            state["_group_decomposed_search_space"] = _IncrementalGroups()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class _IncrementalIntersection(IntersectionSearchSpace):
    """Optuna's intersection search space (the parameters every finished trial has, with the same
    distribution), updated with the new finished trials only and returned without Optuna's deep copy of it
    at every ask (TPE only reads it)."""

    def __init__(self) -> None:
        super().__init__(include_pruned=True)
        self._new: _NewTrials | None = None
        self._space: dict[str, BaseDistribution] | None = None

    def calculate(self, study: optuna.Study, use_cache: bool = False) -> dict[str, BaseDistribution]:
        if self._new is None or self._new.study is not study:
            self._new, self._space = _NewTrials(study), None
        for trial in self._new.collect(study._get_trials(deepcopy=False, use_cache=use_cache)):
            if self._space is None:
                self._space = dict(sorted(trial.distributions.items()))
            else:
                self._space = {
                    name: dist for name, dist in self._space.items() if trial.distributions.get(name) == dist
                }
        return dict(self._space or {})


class _IncrementalGroups(_GroupDecomposedSearchSpace):
    """Optuna's decomposition of a conditional space into groups of parameters that appear together, updated
    with the new finished trials only. Optuna's own feeds every trial again at every ask (a trial seen before
    changes nothing), which costs O(history) per ask: about 10 ms at 1,000 trials."""

    def __init__(self) -> None:
        super().__init__(include_pruned=True)
        self._new: _NewTrials | None = None

    def calculate(self, study: optuna.Study, use_cache: bool = False) -> _SearchSpaceGroup:
        if self._new is None or self._new.study is not study:
            super().__init__(include_pruned=True)
            self._new = _NewTrials(study)
        for trial in self._new.collect(study._get_trials(deepcopy=False, use_cache=use_cache)):
            self._search_space.add_distributions(trial.distributions)
        groups = _SearchSpaceGroup()
        groups._search_spaces = [dict(space) for space in self._search_space.search_spaces]
        return groups
