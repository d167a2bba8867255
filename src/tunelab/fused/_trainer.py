"""``PopulationTrainer``: a small loop that trains, evaluates and manages a population's members at once."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tunelab.errors import DataError, SpecError
from tunelab.fused._base import BasePopulation
from tunelab.fused._graphs import StepGraph, tensor_signature
from tunelab.fused._hostflags import HostFlags
from tunelab.fused._loss import Task, clip_grad_norm_per_member, l1_penalty, member_accuracy, member_loss
from tunelab.fused._optim_base import HyperparameterValue, PopulationOptimizer
from tunelab.fused._population import Population
from tunelab.train import batch_bounds, denormals_flushed, keep_freed_memory

__all__ = ["PopulationTrainer"]

_REGULARIZATION = ("label_smoothing", "l1", "clip_norm")
# Hyperparameters bounded above by 1: perturbation by explore() keeps them below it.
_BELOW_ONE = ("momentum", "beta1", "beta2", "alpha", "label_smoothing", "dropout")


class PopulationTrainer:
    """Train K members on the same minibatches, each with its own hyperparameters; manage them in place.

    Per step: one forward ``[K, N, ...]``; each member's mean loss (plus its L1 penalty) ``[K]``; backward of
    the sum over live members; per-member gradient clipping; one vectorized optimizer step. A member whose
    loss (or gradient norm) is not finite is marked dead at that step (:attr:`alive`,
    :attr:`diverged_at_step`) and frozen; the others carry on exactly as they would without it.

    Hyperparameters (:attr:`hparams`, all ``[K]``): the optimizer's (``lr``, ``weight_decay``...), the
    regularization here (``label_smoothing``, ``l1``, ``clip_norm`` with ``inf`` meaning no clipping) and, for
    a :class:`Population`, ``dropout``.

    ``cuda_graphs``: on a GPU, record the step as a CUDA graph and replay it (:mod:`tunelab.fused._graphs`):
    the same results without the host's launch overhead, which bounds small models there. ``"auto"``
    (default) does so on a CUDA device for populations built from population layers with the ``foreach``
    optimizers (CUDA's default); a :class:`FunctionalPopulation` reseeds its random streams in every forward
    pass, which a recording would freeze, and per-member fused kernels read on the host which members are
    alive, so those run eagerly. ``True`` records whatever the population is, and fails with a
    :class:`~tunelab.errors.TrainingError` where that cannot work.
    """

    def __init__(
        self,
        population: BasePopulation,
        optimizer: PopulationOptimizer,
        *,
        task: Task = "classification",
        label_smoothing: HyperparameterValue = 0.0,
        l1: HyperparameterValue = 0.0,
        clip_norm: HyperparameterValue = float("inf"),
        cuda_graphs: bool | Literal["auto"] = "auto",
    ) -> None:
        if population.n_members != optimizer.n_members:
            raise SpecError(
                f"the population has {population.n_members} members but the optimizer was built for "
                f"{optimizer.n_members}; build it with n_members=population.n_members"
            )
        if task not in ("classification", "regression"):
            raise SpecError(f"task must be 'classification' or 'regression', not {task!r}")
        self.population = population
        self.optimizer = optimizer
        self.task: Task = task
        K = population.n_members
        device = optimizer.step_count.device
        self.regularization = {
            name: torch.zeros(K, dtype=torch.float64, device=device) for name in _REGULARIZATION
        }
        self.set_hparams({"label_smoothing": label_smoothing, "l1": l1, "clip_norm": clip_norm})
        self.alive = torch.ones(K, dtype=torch.bool, device=device)
        self.diverged_at_step = torch.full((K,), -1, dtype=torch.long, device=device)
        self.n_steps = 0
        # The step number on the device, for diverged_at_step: a recorded step cannot read a Python counter.
        self._step_number = torch.zeros((), dtype=torch.long, device=device)
        self._flags = HostFlags()
        self.graph: StepGraph | None = None
        if _use_cuda_graphs(cuda_graphs, population, optimizer, device):
            self.graph = StepGraph(self._step, self._graph_signature, population.graph_generators)

    @property
    def n_members(self) -> int:
        return self.population.n_members

    # -- hyperparameters --
    @property
    def hparams(self) -> dict[str, Tensor]:
        """Every per-member hyperparameter, ``[K]`` each (copies)."""
        values = {name: value.clone() for name, value in self.optimizer.hparams.items()}
        values.update({name: value.clone() for name, value in self.regularization.items()})
        if isinstance(self.population, Population):
            values["dropout"] = self.population.dropout_rates()
        return values

    def set_hparams(
        self, values: Mapping[str, HyperparameterValue], *, members: Sequence[int] | Tensor | None = None
    ) -> None:
        """Set hyperparameters by name, for all members or only ``members``."""
        index = slice(None) if members is None else torch.as_tensor(members, dtype=torch.long)
        for name, value in values.items():
            if name in self.optimizer.hparams:
                self.optimizer.set_hparam(name, value, members=members)
            elif name in self.regularization:
                tensor = torch.as_tensor(value, dtype=torch.float64)
                low_ok = bool((tensor >= 0).all())
                if not low_ok or (name != "clip_norm" and not bool(torch.isfinite(tensor).all())):
                    raise SpecError(f"{name} must be >= 0 and finite (clip_norm may be inf); got {value!r}")
                if name == "label_smoothing" and bool((tensor >= 1).any()):
                    raise SpecError(f"label_smoothing must be in [0, 1); got {value!r}")
                self.regularization[name][index] = tensor.to(self.regularization[name].device)
            elif name == "dropout" and isinstance(self.population, Population):
                tensor = torch.as_tensor(value, dtype=torch.float64)
                if not bool(((tensor >= 0) & (tensor <= 1)).all()):
                    raise SpecError(f"dropout must be in [0, 1]; got {value!r}")
                self.population.set_dropout_rate(tensor, members=members)
            else:
                raise self._unknown(name)

    def _unknown(self, name: str) -> SpecError:
        known = sorted(self.hparams)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return SpecError(f"unknown per-member hyperparameter {name!r}.{hint} Valid: {', '.join(known)}.")

    # -- training --
    def train_step(self, x: Tensor, y: Tensor) -> Tensor:
        """One optimizer step on the minibatch ``(x, y)`` all members share; losses ``[K]`` (NaN: dead)."""
        losses = self._step(x, y) if self.graph is None else self.graph(x, y)
        self.n_steps += 1
        return losses

    def _step(self, x: Tensor, y: Tensor) -> Tensor:
        """The step's device work, which a CUDA graph may record: no host sync, no Python state advanced."""
        population, optimizer, reg = self.population, self.optimizer, self.regularization
        population.train()
        optimizer.zero_grad()
        flags = self._flags
        smoothing = reg["label_smoothing"] if self.task == "classification" else None
        if smoothing is not None and not flags.any("label_smoothing", smoothing):
            smoothing = None
        losses = member_loss(population(x), y, task=self.task, label_smoothing=smoothing)
        if flags.any("l1", reg["l1"]):
            losses = losses + l1_penalty(optimizer.params, reg["l1"])
        self._mark_dead(torch.isfinite(losses.detach()))
        # where(), not a product: 0 * NaN would be NaN and reach every member through the sum.
        torch.where(self.alive, losses, torch.zeros_like(losses)).sum().backward()
        if flags.get("clip_norm", reg["clip_norm"], lambda clip: torch.isfinite(clip).any()):
            norms = clip_grad_norm_per_member(optimizer.params, reg["clip_norm"])
            self._mark_dead(torch.isfinite(norms))
        optimizer.step(alive=self.alive)
        self._step_number += 1
        return torch.where(self.alive, losses.detach(), torch.full_like(losses, float("nan")))

    def _mark_dead(self, finite: Tensor) -> None:
        """Members not ``finite`` die at this step; no host sync (see ``_hostflags``)."""
        # where(), not masked_fill_ with a tensor value, which reads the value on the host.
        newly_dead = self.alive & ~finite
        self.diverged_at_step.copy_(torch.where(newly_dead, self._step_number, self.diverged_at_step))
        self.alive &= finite

    def _graph_signature(self, x: Tensor, y: Tensor) -> Hashable:
        """What a recorded step depends on (see ``_graphs``); a change makes the next steps record anew."""
        population = self.population
        tensors = [
            *population.parameters(),
            *population.buffers(),
            *self.regularization.values(),
            self.alive,
            self.diverged_at_step,
            self._step_number,
        ]
        return (
            (tuple(x.shape), x.dtype, tuple(y.shape), y.dtype, self.task, population.training),
            tuple(id(generator) for generator in population.graph_generators()),
            tensor_signature(tensors),
            self._flags.snapshot(),
            self.optimizer.graph_signature(),
        )

    @denormals_flushed()
    def fit_epoch(
        self,
        x: Tensor,
        y: Tensor,
        *,
        batch_size: int,
        generator: torch.Generator,
        before_step: Callable[[int], None] | None = None,
        transform: Callable[[Tensor], Tensor] | None = None,
        interrupt: Callable[[], bool] | None = None,
    ) -> Tensor | None:
        """One pass over ``(x, y)`` in minibatches sliced from a permutation drawn from ``generator``, as the
        single-model trainer slices them (:func:`tunelab.train.batch_bounds`). Every member sees the same
        minibatches. Returns each member's mean training loss ``[K]`` (NaN: dead).

        Per step ``i`` (0-based within the epoch): ``before_step(i)`` (a schedule setting each member's rate),
        then ``transform(inputs)`` (augmentation), the step, and ``interrupt()``: when it answers True the
        epoch ends there and this returns None (the members' weights are then mid-epoch).
        """
        n = _check_data(x, y, batch_size)
        keep_freed_memory()  # once per process: a step's large tensors reuse the last step's pages
        order = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
        total = torch.zeros(self.n_members, dtype=torch.float64, device=self.alive.device)
        for i, (start, end) in enumerate(batch_bounds(n, batch_size)):
            if before_step is not None:
                before_step(i)
            rows = order[start:end]
            inputs = x[rows] if transform is None else transform(x[rows])
            total += self.train_step(inputs, y[rows]).to(torch.float64) * (end - start)
            if interrupt is not None and interrupt():
                return None
        return total / n

    def fit(
        self, x: Tensor, y: Tensor, *, n_epochs: int = 1, batch_size: int = 128, seed: int = 0
    ) -> list[Tensor]:
        """``n_epochs`` epochs (see :meth:`fit_epoch`), batches drawn from ``seed``; the losses per epoch."""
        generator = torch.Generator().manual_seed(seed)
        losses = [self.fit_epoch(x, y, batch_size=batch_size, generator=generator) for _ in range(n_epochs)]
        return [loss for loss in losses if loss is not None]  # never None: no interrupt

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, *, batch_size: int = 1024) -> dict[str, Tensor]:
        """All members in one batched pass (eval mode): ``{"loss": [K], "accuracy": [K]}`` (accuracy for
        classification only; the loss is without label smoothing or penalties). Dead members get NaN."""
        n = _check_data(x, y, batch_size)
        was_training = self.population.training
        self.population.eval()
        loss = torch.zeros(self.n_members, dtype=torch.float64, device=self.alive.device)
        correct = torch.zeros_like(loss)
        for start in range(0, n, batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            output = self.population(xb)
            loss += member_loss(output, yb, task=self.task).to(torch.float64) * yb.shape[0]
            if self.task == "classification":
                correct += member_accuracy(output, yb) * yb.shape[0]
        self.population.train(was_training)
        nan = torch.full_like(loss, float("nan"))
        metrics = {"loss": torch.where(self.alive, loss / n, nan)}
        if self.task == "classification":
            metrics["accuracy"] = torch.where(self.alive, correct / n, nan)
        return metrics

    # -- population management --
    def shrink(self, keep: Sequence[int] | Tensor) -> None:
        """Keep only members ``keep`` (in that order), in place: parameters, buffers, optimizer state,
        hyperparameters, step counters and status. The survivors continue exactly as if never shrunk."""
        index = torch.as_tensor(keep, dtype=torch.long)
        if index.dim() != 1 or index.numel() == 0:
            raise SpecError(f"keep must be a non-empty list of member indices; got {keep!r}")
        if bool((index < 0).any()) or bool((index >= self.n_members).any()):
            raise SpecError(f"keep has indices outside 0..{self.n_members - 1}: {index.tolist()}")
        self.population.select_(index)
        self.optimizer.select_(index)
        device = self.alive.device
        self.regularization = {
            name: value.index_select(0, index.to(device)) for name, value in self.regularization.items()
        }
        self.alive = self.alive.index_select(0, index.to(device))
        self.diverged_at_step = self.diverged_at_step.index_select(0, index.to(device))

    # -- checkpoints --
    def member_state(self, k: int) -> dict[str, Any]:
        """Member ``k``'s part of the training state, for a checkpoint: its weights and buffers (dropout rates
        included), optimizer hyperparameters, step counter and state, regularization hyperparameters and
        status; tensors without the member dimension, otherwise numbers. :meth:`load_member_states` puts
        such states back into a trainer of a population of the same structure; with :meth:`state`'s shared
        part it then trains on as this one would."""
        k = self.population.check_member_index(k)
        return {
            "population": self.population.member_state(k),
            "optimizer": self.optimizer.member_state(k),
            "regularization": {name: float(value[k]) for name, value in self.regularization.items()},
            "alive": bool(self.alive[k]),
            "diverged_at_step": int(self.diverged_at_step[k]),
        }

    @torch.no_grad()
    def load_member_states(self, states: Sequence[Mapping[str, Any]]) -> None:
        """Set every member from ``states`` (one :meth:`member_state` per member, in slot order)."""
        if len(states) != self.n_members:
            raise SpecError(f"got {len(states)} member states for a population of {self.n_members} members")
        self.population.load_member_states([state["population"] for state in states])
        self.optimizer.load_member_states([state["optimizer"] for state in states])
        for name, value in self.regularization.items():
            value.copy_(torch.tensor([float(s["regularization"][name]) for s in states], dtype=torch.float64))
        self.alive.copy_(torch.tensor([bool(s["alive"]) for s in states], dtype=torch.bool))
        self.diverged_at_step.copy_(torch.tensor([int(s["diverged_at_step"]) for s in states]))

    def state(self) -> dict[str, Any]:
        """What the members share of the training state: the steps taken (which :attr:`diverged_at_step`
        counts) and the population's random streams (dropout)."""
        return {
            "n_steps": self.n_steps,
            "step_number": int(self._step_number),
            "random": self.population.random_state(),
        }

    def load_state(self, state: Mapping[str, Any], *, random: bool = True) -> None:
        """Set :meth:`state`'s shared part; ``random=False`` keeps the random streams as they are (states
        saved on another kind of device do not fit this one's generators)."""
        self.n_steps = int(state["n_steps"])
        self._step_number.fill_(int(state["step_number"]))
        if random:
            self.population.load_random_state(state["random"])

    def refill(
        self, slot: int, module: nn.Module, hparams: Mapping[str, HyperparameterValue] | None = None
    ) -> None:
        """Replace member ``slot`` by a new config: ``module``'s weights (and dropout rates), fresh optimizer
        state and step counter, and ``hparams`` (names as in :attr:`hparams`).

        Deprecated: the search never refills a slot (measured not to pay; a stopped member is shrunk out
        with :meth:`shrink`); it goes in the next release."""
        _deprecated("refill", "build a new population for new configurations")
        slot = self.population.check_member_index(slot)
        self.population.load_member(slot, module)
        self.optimizer.reset_(slot)
        if hparams:
            self.set_hparams(hparams, members=[slot])
        self.alive[slot] = True
        self.diverged_at_step[slot] = -1

    def exploit(self, src: int, dst: int) -> None:
        """PBT exploit: copy member ``src``'s weights, buffers, optimizer state, step counter and
        hyperparameters over member ``dst``."""
        src, dst = self.population.check_member_index(src), self.population.check_member_index(dst)
        self.population.copy_member_(src, dst)
        self.optimizer.copy_member_(src, dst)
        for value in self.regularization.values():
            value[dst] = value[src]
        self.alive[dst] = self.alive[src]
        self.diverged_at_step[dst] = self.diverged_at_step[src]

    def explore(
        self,
        dst: int,
        *,
        generator: torch.Generator,
        names: Sequence[str] = ("lr",),
        factors: Sequence[float] = (0.8, 1.2),
    ) -> dict[str, float]:
        """PBT explore: multiply each hyperparameter in ``names`` of member ``dst`` by a factor drawn from
        ``factors``; values bounded by 1 (momentum, betas, dropout...) stay below it. Returns the values.

        Deprecated: the search's PBT explores in the search space (``tunelab.search.PbtScheduler``) and sets
        the values with :meth:`set_hparams`; this goes in the next release."""
        _deprecated("explore", "use tunelab.search.PbtScheduler with set_hparams")
        dst = self.population.check_member_index(dst)
        current = self.hparams
        new_values = {}
        for name in names:
            if name not in current:
                raise self._unknown(name)
            choice = int(torch.randint(len(factors), (), generator=generator))
            value = float(current[name][dst]) * factors[choice]
            if name in _BELOW_ONE:
                value = min(value, 0.999)
            new_values[name] = value
        self.set_hparams(new_values, members=[dst])
        return new_values

    def status(self) -> list[str]:
        """A line per member: ``alive`` or the step at which its loss stopped being finite."""
        return [
            "alive" if bool(alive) else f"diverged at step {int(step)} (loss or gradient not finite); frozen"
            for alive, step in zip(self.alive, self.diverged_at_step, strict=True)
        ]


def _deprecated(name: str, instead: str) -> None:
    import warnings

    warnings.warn(
        f"PopulationTrainer.{name} is deprecated and goes in the next release; {instead}",
        DeprecationWarning,
        stacklevel=3,
    )


def _use_cuda_graphs(
    setting: bool | Literal["auto"],
    population: BasePopulation,
    optimizer: PopulationOptimizer,
    device: torch.device,
) -> bool:
    if setting not in (True, False, "auto"):
        raise SpecError(f"cuda_graphs must be True, False or 'auto'; got {setting!r}")
    if setting is True and device.type != "cuda":
        raise SpecError(
            f"cuda_graphs=True needs a population on a CUDA device; this one is on {device.type}. "
            "Move the population with .to('cuda') before building its optimizer, or leave cuda_graphs='auto'."
        )
    if device.type != "cuda" or setting is False:
        return False
    # auto: only what is known to record: population layers (not torch.func's reseeding forward) and the
    # [K, M] foreach optimizers (a fused kernel per member reads which members are alive on the host).
    return setting is True or (population.graph_safe and optimizer.implementation == "foreach")


def _check_data(x: Tensor, y: Tensor, batch_size: int) -> int:
    if batch_size < 1:
        raise SpecError(f"batch_size must be >= 1; got {batch_size}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise DataError(
            f"x and y must hold the same number (> 0) of samples; got {x.shape[0]} and {y.shape[0]}"
        )
    return int(x.shape[0])
