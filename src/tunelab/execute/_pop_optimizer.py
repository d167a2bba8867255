"""The population optimizer for a pack of train specs, its parameters grouped as the single trainer's."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from torch import Tensor

from tunelab.fused import (
    PopAdagrad,
    PopAdam,
    PopAdamW,
    PopRMSprop,
    PopSGD,
    Population,
    PopulationOptimizer,
)
from tunelab.train import TrainSpec

__all__ = ["DecayGroups", "make_population_optimizer", "optimizer_hparams"]


class DecayGroups(PopulationOptimizer):
    """Two population optimizers of one kind: per-member weights (``[K, ...]`` with at least two dims per
    member) with weight decay, the other parameters (biases, normalization) without, as
    :func:`tunelab.train.make_optimizer` groups them. Everything else is the base class's contract, with
    ``weight_decay`` read and set on the weights' group."""

    def __init__(self, decayed: PopulationOptimizer, others: PopulationOptimizer) -> None:
        # The base constructor is not called: all state lives in the two inner optimizers.
        self.decayed, self.others = decayed, others
        self.params = [*decayed.params, *others.params]
        self.n_members = decayed.n_members
        self.implementation = decayed.implementation
        self._sync()

    def _sync(self) -> None:
        self.hparams = self.decayed.hparams
        self.step_count = self.decayed.step_count

    def set_hparam(self, name: str, value: Any, *, members: Sequence[int] | Tensor | None = None) -> None:
        self.decayed.set_hparam(name, value, members=members)
        if name != "weight_decay":
            self.others.set_hparam(name, value, members=members)

    def zero_grad(self) -> None:
        self.decayed.zero_grad()
        self.others.zero_grad()

    def step(self, *, alive: Tensor | None = None) -> None:
        self.decayed.step(alive=alive)
        self.others.step(alive=alive)

    def graph_signature(self) -> Hashable:
        return (self.decayed.graph_signature(), self.others.graph_signature())

    def select_(self, index: Tensor) -> None:
        self.decayed.select_(index)
        self.others.select_(index)
        self.n_members = self.decayed.n_members
        self._sync()

    def member_state(self, k: int) -> dict[str, Any]:
        return {"decayed": self.decayed.member_state(k), "others": self.others.member_state(k)}

    def load_member_states(self, states: Sequence[Mapping[str, Any]]) -> None:
        self.decayed.load_member_states([state["decayed"] for state in states])
        self.others.load_member_states([state["others"] for state in states])
        self._sync()

    def reset_(self, k: int) -> None:
        self.decayed.reset_(k)
        self.others.reset_(k)

    def copy_member_(self, src: int, dst: int) -> None:
        self.decayed.copy_member_(src, dst)
        self.others.copy_member_(src, dst)


def optimizer_hparams(train: TrainSpec, name: str) -> dict[str, float]:
    """A member's hyperparameters of the population optimizer for ``name`` (other than lr and decay)."""
    if name in ("gd", "sgd", "momentum", "nesterov"):
        return {"momentum": train.momentum if name in ("momentum", "nesterov") else 0.0}
    if name in ("adam", "adamw"):
        return {"beta1": train.betas[0], "beta2": train.betas[1], "eps": train.eps}
    return {"eps": train.eps}  # rmsprop, adagrad


def make_population_optimizer(
    population: Population, trains: list[TrainSpec], *, grouped: bool = False
) -> PopulationOptimizer:
    """The population optimizer for ``trains[0].optimizer`` with every member's hyperparameters, grouped as
    the single trainer's ``make_optimizer`` groups parameters (``grouped``: in decayed and other parameters
    even when no member decays yet)."""
    name = trains[0].optimizer
    K = len(trains)
    decay = [t.weight_decay for t in trains]
    hparams: dict[str, Any] = {"lr": [t.lr for t in trains]}
    per_member = [optimizer_hparams(t, name) for t in trains]
    for key in per_member[0]:
        hparams[key] = [values[key] for values in per_member]
    kind: type[PopulationOptimizer]
    extra: dict[str, Any] = {}
    if name in ("gd", "sgd", "momentum", "nesterov"):
        kind = PopSGD
        extra["nesterov"] = name == "nesterov"
    elif name in ("adam", "adamw"):
        kind = PopAdamW if name == "adamw" else PopAdam
    elif name == "rmsprop":
        kind = PopRMSprop
    else:
        kind = PopAdagrad
    params = [p for p in population.parameters() if p.requires_grad]
    if not any(decay) and not grouped:
        return kind(params, n_members=K, weight_decay=0.0, **hparams, **extra)
    # Per member a weight is [K, ...] with at least two dims of its own, as penalized_parameters decides.
    weights = [p for p in params if p.dim() >= 3]
    others = [p for p in params if p.dim() < 3]
    decayed = kind(weights, n_members=K, weight_decay=decay, **hparams, **extra)
    if not others:
        return decayed
    return DecayGroups(decayed, kind(others, n_members=K, weight_decay=0.0, **hparams, **extra))
