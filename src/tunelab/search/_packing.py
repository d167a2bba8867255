"""Packing trials into fused populations: which search parameters shape the model, and asking a pack.

A population is K trials that share their *structural* parameters: all but the per-member ones the executor
names (``Executor.per_member_paths``: learning rate, dropout... each a [K] vector in a fused population). The
sampler proposes the first trial in full, the others only their per-member values; each is an ordinary
Optuna trial, so storage, resume and the dashboard see nothing unusual.

A model-based sampler's random startup (TPE's ``n_startup_trials``) is counted in populations: packed, ten
startup trials would be two or three structures, and the model would know nothing of the others. So the
first ``startup_populations`` populations each draw their first trial, structure included, at random.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np
import optuna
from optuna.samplers import PartialFixedSampler
from optuna.trial import FrozenTrial, TrialState

from tunelab.search.space import SearchSpace

__all__ = ["Packer", "pack_key", "startup_populations", "structural_paths"]

_STARTUP_STREAM = 1  # tells the startup draws' seed apart from the sampler's (see Packer)


def _under(path: str, paths: Collection[str]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in paths)


def structural_paths(space: SearchSpace, per_member_paths: Collection[str]) -> frozenset[str]:
    """The space's parameters whose values must be equal within a population.

    Every path not at or under one of ``per_member_paths`` is structural, helper parameters (``_depth``)
    included; so is every parameter a structural one depends on (through ``when`` or ``per_layer``), since a
    dependency that differed between members could make one member's structure differ.
    """
    structural = {path for path in space if not _under(path, per_member_paths)}
    pending = list(structural)
    while pending:
        node = space[pending.pop()]
        for dependency in [*node.when, *([node.per_layer] if node.per_layer else [])]:
            if dependency not in structural:
                structural.add(dependency)
                pending.append(dependency)
    return frozenset(structural)


def _path_of(name: str, space: SearchSpace) -> str:
    """The space path of an Optuna parameter name (``model.hidden_2`` -> ``model.hidden`` for per-layer)."""
    if name in space:
        return name
    base, _, index = name.rpartition("_")
    if base in space and space[base].per_layer is not None and index.isdigit():
        return base
    return name


def pack_key(
    params: Mapping[str, Any], space: SearchSpace, structural: frozenset[str]
) -> tuple[tuple[str, Any], ...]:
    """The structural part of a trial's flat Optuna ``params``, sorted: equal keys may share a population.

    A name the space does not know counts as structural (the safe side).
    """
    return tuple(
        sorted(
            (name, value)
            for name, value in params.items()
            if _path_of(name, space) in structural or _path_of(name, space) not in space
        )
    )


def startup_populations(sampler: optuna.samplers.BaseSampler) -> int:
    """The random startup trials of a model-based sampler (TPE, GP, CMA-ES: its ``n_startup_trials``), to be
    run as that many populations with random structures; 0 for samplers without a startup phase."""
    inner = getattr(sampler, "_base_sampler", sampler)  # a PartialFixedSampler's
    samplers = optuna.samplers
    if isinstance(inner, samplers.TPESampler | samplers.GPSampler | samplers.CmaEsSampler):
        # Each keeps its constructor's n_startup_trials under this name (Optuna 3 to 5).
        return int(getattr(inner, "_n_startup_trials", 0))
    return 0


class Packer:
    """Asks ``study`` for packs of trials that share their structural parameters.

    Trials already waiting in the study (enqueued by a user, or interrupted trials queued again on resume)
    are asked first, as Optuna always does; a pack takes the next waiting trial only while its fixed
    parameters have the pack's structure, and ends early otherwise, so that trial starts the next pack.
    Retried trials that continue from one checkpoint (the user attribute ``resume_from``: the population
    they trained in) make a pack of their own: only the waiting trials with the same ``resume_from``.

    ``shared``: other processes ask the same storage (``--workers N``). A trial enqueued for this pack could
    then be taken by another process's ask, so the pack's other members are asked through Optuna's
    ``PartialFixedSampler`` around the study's sampler instead (the structure fixed, this process's own).
    A waiting trial of another structure that an ask takes anyway (another process may take the one this
    one looked at) ends the pack and starts the next one.

    ``startup_populations``: until the study holds that many populations (by the user attribute
    ``population`` of its stored trials), a pack's first trial is drawn at random (Optuna's
    ``RandomSampler``, on a stream derived from ``seed``), structure included.
    """

    def __init__(
        self,
        study: optuna.Study,
        space: SearchSpace,
        *,
        per_member_paths: Collection[str] = (),
        shared: bool = False,
        startup_populations: int = 0,
        seed: int = 0,
    ) -> None:
        self.study = study
        self.space = space
        self.structural = structural_paths(space, per_member_paths)
        self.shared = shared
        self.startup_populations = startup_populations
        self._startup_over = startup_populations <= 0
        # Not ``seed`` itself: the study's sampler is usually seeded with it, and TPE's own startup draws
        # then come from RandomSampler(seed), the same stream, so members would repeat their first's values.
        self._random = optuna.samplers.RandomSampler(
            seed=int(np.random.SeedSequence((seed, _STARTUP_STREAM)).generate_state(1)[0])
        )
        self._next_first: tuple[optuna.Trial, dict[str, Any]] | None = None

    def next_pack(
        self, size: int | Callable[[dict[str, Any]], int]
    ) -> list[tuple[optuna.Trial, dict[str, Any]]]:
        """Up to ``size`` new trials with their nested override dicts; the first one sampled in full, the
        others with its structural values fixed. ``size`` may be a function of the first trial's overrides
        (a population's size can depend on its structure's cost)."""
        first, self._next_first = self._next_first, None
        if first is None and self._in_startup():
            first = self._ask(sampler=self._random)
        pack = [first or self._ask()]
        if callable(size):
            size = size(pack[0][1])
        if size <= 1:
            return pack
        key = pack_key(pack[0][0].params, self.space, self.structural)
        resume = _resume_from(pack[0][0].user_attrs)
        while len(pack) < size:
            waiting = self._next_waiting()
            if waiting is not None and (
                pack_key(waiting.system_attrs.get("fixed_params", {}), self.space, self.structural) != key
                or _resume_from(waiting.user_attrs) != resume
            ):
                break
            if waiting is None and resume is not None:
                break  # a population resumed from its checkpoint takes its own retried members only
            if waiting is not None or not self.shared:
                if waiting is None:
                    self.study.enqueue_trial(dict(key), skip_if_exists=False)
                member = self._ask()
            else:
                member = self._ask(fixed=dict(key))
            if (
                pack_key(member[0].params, self.space, self.structural) != key
                or _resume_from(member[0].user_attrs) != resume
            ):
                self._next_first = member  # a waiting trial of another kind: it starts the next pack
                break
            pack.append(member)
        return pack

    def _in_startup(self) -> bool:
        if self._startup_over:
            return False
        trials = self.study.get_trials(deepcopy=False)
        populations = {t.user_attrs["population"] for t in trials if "population" in t.user_attrs}
        # Populations are never taken back: once the count is reached it is not taken again.
        self._startup_over = len(populations) >= self.startup_populations
        return not self._startup_over

    def _ask(
        self, *, fixed: dict[str, Any] | None = None, sampler: optuna.samplers.BaseSampler | None = None
    ) -> tuple[optuna.Trial, dict[str, Any]]:
        """A new trial and its overrides, from the study's sampler, or from ``sampler`` instead, either with
        the parameters ``fixed``."""
        if fixed is None and sampler is None:  # the study's own sampler, as it is
            trial = self.study.ask()
            return trial, self.space.sample(trial)
        own = self.study.sampler
        chosen = sampler or own
        if fixed is not None:
            with warnings.catch_warnings():  # experimental in Optuna since 2.4, and stable there since
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                chosen = PartialFixedSampler(fixed, chosen)
        self.study.sampler = chosen
        try:
            trial = self.study.ask()
            return trial, self.space.sample(trial)
        finally:
            self.study.sampler = own

    def _next_waiting(self) -> FrozenTrial | None:
        """The trial ``study.ask()`` would take next, if one is waiting (``ask()`` takes the oldest;
        ``enqueue_trial`` keeps its fixed parameters in the system attribute ``fixed_params``)."""
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        return min(waiting, key=lambda t: t.number) if waiting else None


def _resume_from(user_attrs: Mapping[str, Any]) -> str | None:
    """The checkpoint a retried trial continues from (``resume_from``), or None."""
    value = user_attrs.get("resume_from")
    return None if value is None else str(value)
