"""The finished trials of a study as :class:`~tunelab.search._bounded_tpe.BoundedTPESampler` reads them.

- :class:`_NewTrials`: the trials that finished since the last ask, without filtering the whole list;
- :class:`_History`: every finished trial indexed once into numpy arrays (finished trials never change), and
  the bounded view TPE models (:meth:`_History.split`, a :class:`_Split`), read back as the internal parameter
  values Optuna's ``_get_internal_repr`` would give.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["_FINISHED", "_History", "_NewTrials", "_Split"]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


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
