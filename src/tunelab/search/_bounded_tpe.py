"""``BoundedTPESampler``: Optuna's TPE whose cost per trial stops growing with the history.

Why: at every ask Optuna's TPE splits every finished trial into a "good" and a "bad" group, reads every
trial's parameters and builds one kernel per trial, with Python work per trial, and Optuna 5 evaluates its
truncated normals with a Python call per element. With a cheap objective that is the whole cost of a trial:
about 3 ms per ask with a short history, about 9 ms on average over 1,000 trials (tunelab's own cost is
0.4 ms).

What, once the study holds more than ``max_history`` finished trials: TPE models a bounded view of the
history, ``max_history`` trials (plus the running ones, for the constant liar):

- the good group the full history has (TPE's default ``gamma`` of the number of finished trials: the 25
  best for one objective), so the "good" density is full-history TPE's;
- the most recent of the other trials, weighted by TPE's default weights (linear in age) within the view,
  as the "bad" density. (Keeping a uniform sample of older trials instead of some recent ones, weighted as
  the full history would weigh them, or the next-best trials, searched worse in ``bench/tpe_quality.py``.)

Up to ``max_history`` finished trials the view is the whole history, so proposals are Optuna's TPE's, from
the same random draws (only the arithmetic differs, beyond the 7th digit); the indexed arrays below serve
those asks too (Optuna's own path cost about 3 ms an ask there).

How: a ``TPESampler`` subclass. Optuna's public flow is untouched (search space inference, startup trials,
relative and independent sampling, constant liar, after-trial hooks). Private pieces of it are replaced or
called; each is checked when a sampler is built, so that an Optuna that changes them fails loudly (a
``RuntimeError`` naming this file) rather than silently modelling something else:

- ``TPESampler._sample(study, trial, search_space)``, where TPE models the history: past ``max_history`` it
  models the view. Finished trials never change, so each is indexed once into numpy arrays of objective
  values and parameters, and an ask costs a few vectorized passes rather than Python per trial. Several
  objectives, pruned or infeasible trials in the good group, or a parameter whose distribution changed take
  Optuna's own split and parameter reading (``_split_trials``, ``_get_internal_repr``) on the view.
- ``_parzen_estimator_cls`` (Optuna's comment calls it overridable): Optuna's Parzen estimator, vectorized
  over parameters and evaluated with scipy.special (:mod:`tunelab.search._parzen`). Checked against Optuna's
  own once per process.
- ``TPESampler._sample_relative(study, trial, search_space)``: Optuna counts the finished trials at every
  ask to know whether the startup trials are done (a pass over the whole history); finished trials never
  go back, so once the count has reached ``n_startup_trials`` for a study it is not taken again.
- the search-space inference (``IntersectionSearchSpace``, and the parameter groups of ``group=True``),
  updated with new trials only: Optuna's deep-copies the space at every ask, and its groups re-read every
  trial at every ask (about 10 ms at 1,000 trials).
"""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tunelab.search._parzen import _check_estimator, _FastParzenEstimator

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

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

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


class _NewTrials:
    """The trials of one study that finished (complete or pruned) since the last call, without filtering the
    whole trial list at every ask (Optuna's filter costs about 0.1 ms per 1,000 trials).

    Trial lists are in number order with ``trials[k].number == k`` in Optuna's storages; the tracker reads
    the trials past the last one it saw, and the ones that were running or waiting then. Finished trials
    never change. If a list breaks that order, it filters the whole list instead (same result, slower).
    """

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self.n_finished = 0
        self._next = 0  # the first trial number not read yet
        self._open: set[int] = set()  # running or waiting when read
        self._seen: set[int] = set()  # finished, returned already

    def collect(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The newly finished trials of ``trials`` (all the study's trials, as ``Study._get_trials`` gives
        them with ``states=None``), in number order."""
        numbers = [*sorted(self._open), *range(self._next, len(trials))]
        if len(trials) < self._next or any(trials[k].number != k for k in numbers):
            numbers = sorted(t.number for t in trials)  # out of order: read everything, by number
            by_number = {t.number: t for t in trials}
        else:
            by_number = None
        new, still_open = [], set()
        for number in numbers:
            trial = by_number[number] if by_number is not None else trials[number]
            if trial.state in _FINISHED:
                if number not in self._seen:
                    new.append(trial)
                    self._seen.add(number)
            elif not trial.state.is_finished():
                still_open.add(number)
        self._open, self._next = still_open, max(self._next, len(trials))
        self.n_finished += len(new)
        return new

    def running(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The running trials among those ``collect`` last read (``trials``: the same list)."""
        return [trials[k] for k in sorted(self._open) if trials[k].state == TrialState.RUNNING]


class _Split(NamedTuple):
    """A bounded view, as rows of :class:`_History` (sorted: in trial-number order but for stragglers).

    ``good``: the full history's good group (for several objectives, or with too few complete trials, the
    trials that may be in it; Optuna's split then decides, on the view: ``fast`` is False). ``others``: the
    most recent of the other trials.
    """

    good: np.ndarray
    others: np.ndarray
    fast: bool


class _History:
    """The finished trials of one study, indexed once each, in numpy arrays (rows in the order indexed).

    For each trial: its number; whether it is a feasible complete trial, and then its objective values
    (signed to minimize); for several objectives, how many complete trials dominate it; for a pruned trial,
    Optuna's ranking key; each parameter's internal value (NaN where the trial lacks it). A parameter whose
    distribution differs between trials is marked irregular, and spaces with it take Optuna's slower path.
    """

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self._signs = np.array([-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions])
        self.trials: list[FrozenTrial] = []
        self.new_trials = _NewTrials(study)
        self._numbers = _Growing(np.float64)
        self._complete = _Growing(np.bool_)  # feasible and complete
        self._losses = _Growing(np.float64, width=len(self._signs))
        self._n_dominating = _Growing(np.int64)  # several objectives: complete trials dominating each
        self._pruned_key = _Growing(np.float64, width=2, fill=np.nan)  # Optuna's ranking of pruned trials
        self._params: dict[str, _Growing] = {}
        self._distributions: dict[str, BaseDistribution] = {}
        self._irregular: set[str] = set()

    def add(self, trials: Sequence[FrozenTrial]) -> None:
        """Index the trials of ``trials`` (all the study's trials) that finished since the last call."""
        for trial in self.new_trials.collect(trials):
            self._add(trial)

    def _add(self, trial: FrozenTrial) -> None:
        row = len(self.trials)
        self.trials.append(trial)
        self._numbers.append(trial.number)
        complete = trial.state == TrialState.COMPLETE and not any(v > 0 for v in trial.constraints.values())
        self._complete.append(complete)
        losses = np.asarray(trial.values, dtype=np.float64) * self._signs if complete else np.nan
        if len(self._signs) > 1:
            self._count_domination(losses)
        self._losses.append(losses)
        self._pruned_key.append(self._pruned_score(trial) if trial.state == TrialState.PRUNED else np.nan)
        for column in self._params.values():
            column.append(np.nan)
        for name, value in trial.params.items():
            distribution = trial.distributions[name]
            if name not in self._params:
                self._params[name] = _Growing(np.float64, fill=np.nan, size=row + 1)
                self._distributions[name] = distribution
            elif distribution != self._distributions[name]:
                self._irregular.add(name)
            self._params[name].view()[row] = distribution.to_internal_repr(value)

    def _count_domination(self, losses: np.ndarray | float) -> None:
        """Update how many complete trials dominate each, for a new row with ``losses`` (NaN if not a
        feasible complete trial; NaN rows compare false, so they neither count nor get counted)."""
        others = self._losses.view()
        dominated = (losses <= others).all(axis=1) & (losses < others).any(axis=1)
        self._n_dominating.view()[dominated] += 1
        self._n_dominating.append(int(((others <= losses).all(axis=1) & (others < losses).any(axis=1)).sum()))

    def _pruned_score(self, trial: FrozenTrial) -> tuple[float, float]:
        """Optuna's key for pruned trials: the later the last reported step the better, then its value."""
        if not trial.intermediate_values:
            return 1.0, 0.0
        step, value = max(trial.intermediate_values.items())
        if math.isnan(value):
            return -step, math.inf
        return -step, value * self._signs[0]

    def split(self, n_good: int, size: int, search_space: dict[str, BaseDistribution]) -> _Split:
        """Choose the view (``size`` rows) for a good group of ``n_good``; see :class:`_Split`."""
        complete = np.flatnonzero(self._complete.view())
        numbers = self._numbers.view()
        if len(complete) < n_good:
            # Too few complete trials: TPE fills its good group with the best pruned ones.
            pruned = np.flatnonzero(~np.isnan(self._pruned_key.view()[:, 0]))
            keys = self._pruned_key.view()[pruned]
            good = np.concatenate(
                [complete, pruned[np.lexsort((keys[:, 1], keys[:, 0]))[: n_good - len(complete)]]]
            )
        elif len(self._signs) == 1:
            # TPE's good group for one objective: the best values, ties to the earlier trial.
            losses = self._losses.view()[complete, 0]
            kth = losses[np.argpartition(losses, n_good - 1)[n_good - 1]]
            candidates = complete[losses <= kth]
            good = candidates[np.lexsort((numbers[candidates], losses[losses <= kth]))[:n_good]]
        else:
            # A trial dominated by n_good others is outranked by at least n_good trials, so only those
            # dominated by fewer can be in TPE's good group; past half the view, the least dominated.
            n_dominating = self._n_dominating.view()[complete]
            candidates = np.flatnonzero(n_dominating < n_good)
            if len(candidates) > size // 2:
                candidates = candidates[np.argsort(n_dominating[candidates], kind="stable")[: size // 2]]
            good = complete[candidates]
        others = np.ones(len(self.trials), dtype=bool)
        others[good] = False
        rest = np.flatnonzero(others)
        # The other rows: the most recent (TPE's default weights count the recent trials most).
        n_recent = min(size - len(good), len(rest))
        recent = rest[np.argpartition(-numbers[rest], n_recent - 1)[:n_recent]] if n_recent else rest[:0]
        # The index holds internal values under each parameter's own distribution: the fast path needs every
        # trial to have had the distribution the model uses.
        regular = not (self._irregular & search_space.keys()) and all(
            self._distributions.get(name) == distribution for name, distribution in search_space.items()
        )
        fast = len(self._signs) == 1 and len(complete) >= n_good and regular
        return _Split(np.sort(good), np.sort(recent), fast)

    def trials_at(self, rows: np.ndarray) -> list[FrozenTrial]:
        return [self.trials[row] for row in rows.tolist()]

    def observations(
        self,
        rows: np.ndarray,
        search_space: dict[str, BaseDistribution],
        *,
        extra: Sequence[tuple[int, dict[str, Any]]] = (),
    ) -> dict[str, np.ndarray]:
        """Internal parameter values of the trials at ``rows`` that have every parameter of the space, as
        Optuna's ``_get_internal_repr`` reads them; ``extra``: more trials, as (number, parameters). In the
        order of trial numbers."""
        values = np.stack([self._params[name].view()[rows] for name in search_space])  # (params, rows)
        keep = ~np.isnan(values).any(axis=0)
        values, numbers = values[:, keep], self._numbers.view()[rows][keep]
        more = [
            (number, [dist.to_internal_repr(params[name]) for name, dist in search_space.items()])
            for number, params in extra
            if search_space.keys() <= params.keys()
        ]
        if more:
            numbers = np.concatenate([numbers, [number for number, _ in more]])
            values = np.concatenate([values, np.array([v for _, v in more]).T], axis=1)
        return dict(zip(search_space, values[:, np.argsort(numbers, kind="stable")], strict=True))


class _Growing:
    """A numpy array that grows at the end in amortized O(1) (capacity doubling)."""

    def __init__(self, dtype: Any, *, width: int | None = None, fill: float = 0.0, size: int = 0) -> None:
        self._tail = () if width is None else (width,)
        self._fill = fill
        self._data = np.full((max(16, 2 * size), *self._tail), fill, dtype=dtype)
        self._size = size

    def append(self, item: Any) -> None:
        if self._size == len(self._data):
            grown = np.full((2 * len(self._data), *self._tail), self._fill, dtype=self._data.dtype)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size] = item
        self._size += 1

    def view(self) -> np.ndarray:
        """The items so far (a view: writes go to the array)."""
        return self._data[: self._size]

    def __len__(self) -> int:
        return self._size
