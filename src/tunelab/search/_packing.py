"""Packing trials into fused populations: which search parameters shape the model, and asking a pack.

A population is K trials that share their *structural* parameters (FUSED.md, "What may differ"): layer
shapes, batch size, optimizer family, activation, epochs, loss, the training seed. The sampler proposes the
first trial in full; the others are enqueued with its structural values (``study.enqueue_trial``), so the
sampler chooses only their per-member values (lr, weight decay, dropout...). Every trial is an ordinary
Optuna trial: storage, resume and the dashboard see nothing unusual.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.samplers import PartialFixedSampler
from optuna.trial import TrialState

from tunelab.search.space import SearchSpace

__all__ = ["FUSIBLE_PATHS", "Packer", "pack_key", "structural_paths"]

# Spec paths (and everything below them) that may differ between members of one population: each becomes a
# [K] hyperparameter or per-member state. Every other path of a search space is structural.
FUSIBLE_PATHS = (
    "model.dropout",
    "model.init",
    "model.init_gain",
    "train.lr",
    "train.weight_decay",
    "train.momentum",
    "train.betas",
    "train.eps",
    "train.l1",
    "train.label_smoothing",
    "train.grad_clip",
    "train.schedule",
    "train.early_stopping",
)


def _is_fusible(path: str) -> bool:
    return any(path == p or path.startswith(p + ".") for p in FUSIBLE_PATHS)


def structural_paths(space: SearchSpace) -> frozenset[str]:
    """The space's parameters whose values must be equal within a population.

    Every path not under :data:`FUSIBLE_PATHS` is structural, helper parameters (``_depth``) included; so is
    every parameter a structural one depends on (through ``when`` or ``per_layer``), since a dependency that
    differed between members could make one member's structure differ.
    """
    structural = {path for path in space if not _is_fusible(path)}
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


class Packer:
    """Asks ``study`` for packs of trials that share their structural parameters.

    Trials already waiting in the study (enqueued by a user, or interrupted trials queued again on resume)
    are asked first, as Optuna always does; a pack takes the next waiting trial only while its fixed
    parameters have the pack's structure, and ends early otherwise, so that trial starts the next pack.

    ``shared``: other processes ask the same storage (``--workers N``). A trial enqueued for this pack could
    then be taken by another process's ask, so the pack's other members are asked through Optuna's
    ``PartialFixedSampler`` around the study's sampler instead (the structure fixed, this process's own).
    A waiting trial of another structure that an ask takes anyway (another process may take the one this
    one looked at) ends the pack and starts the next one.
    """

    def __init__(self, study: optuna.Study, space: SearchSpace, *, shared: bool = False) -> None:
        self.study = study
        self.space = space
        self.structural = structural_paths(space)
        self.shared = shared
        self._next_first: tuple[optuna.Trial, dict[str, Any]] | None = None

    def next_pack(
        self, size: int | Callable[[dict[str, Any]], int]
    ) -> list[tuple[optuna.Trial, dict[str, Any]]]:
        """Up to ``size`` new trials with their nested override dicts; the first one sampled in full, the
        others with its structural values fixed. ``size`` may be a function of the first trial's overrides
        (a population's size can depend on its structure's cost)."""
        first, self._next_first = self._next_first, None
        pack = [first or self._ask()]
        key = pack_key(pack[0][0].params, self.space, self.structural)
        if callable(size):
            size = size(pack[0][1])
        while len(pack) < size:
            waiting = self._next_waiting()
            if waiting is not None and pack_key(waiting, self.space, self.structural) != key:
                break
            if waiting is not None or not self.shared:
                if waiting is None:
                    self.study.enqueue_trial(dict(key), skip_if_exists=False)
                member = self._ask()
            else:
                member = self._ask(fixed=dict(key))
            if pack_key(member[0].params, self.space, self.structural) != key:
                self._next_first = member  # a waiting trial of another structure: it starts the next pack
                break
            pack.append(member)
        return pack

    def _ask(self, *, fixed: dict[str, Any] | None = None) -> tuple[optuna.Trial, dict[str, Any]]:
        if fixed is None:
            trial = self.study.ask()
            return trial, self.space.sample(trial)
        sampler = self.study.sampler
        with warnings.catch_warnings():  # experimental in Optuna since 2.4, and stable there since
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.sampler = PartialFixedSampler(fixed, sampler)
        try:
            trial = self.study.ask()
            return trial, self.space.sample(trial)
        finally:
            self.study.sampler = sampler

    def _next_waiting(self) -> dict[str, Any] | None:
        """The fixed parameters of the trial ``study.ask()`` would take next, if one is waiting."""
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting:
            return None
        # enqueue_trial keeps a trial's parameters in this system attribute, and ask() takes the oldest.
        return dict(min(waiting, key=lambda t: t.number).system_attrs.get("fixed_params", {}))
