"""The base of the vectorized population optimizers: per-member hyperparameters, step counters and state."""

from __future__ import annotations

import difflib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from tunelab.errors import SpecError
from tunelab.fused._graphs import tensor_signature
from tunelab.fused._hostflags import HostFlags

__all__ = ["HyperparameterValue", "Implementation", "PopulationOptimizer"]

HyperparameterValue = float | Sequence[float] | Tensor
Implementation = Literal["auto", "foreach", "fused"]
# One member's slices for the fused kernels: its parameters, its state by name, its step (a float32 scalar).
_MemberSlices = tuple[list[Tensor], dict[str, list[Tensor]], Tensor]


class PopulationOptimizer:
    """Base of the optimizers that update K members at once, each with its own hyperparameters.

    Every parameter is ``[K, ...]``. Hyperparameters are ``[K]`` float64 vectors in :attr:`hparams` (set them
    any step with :meth:`set_hparam`, e.g. for a schedule); inside the update they broadcast as ``[K, 1]``
    over each parameter viewed as ``[K, M]``, so one tensor op serves every member. :attr:`step_count`
    (``[K]``) counts each member's own steps, which drive bias corrections and decays exactly as
    ``torch.optim``'s per-parameter ``step`` does. Each subclass documents the ``torch.optim`` class whose
    update equations and defaults it follows.

    Call order per step: backward, then :meth:`step` (``alive`` masks members that must not move: their
    gradients are ignored, their parameters and step counters stay as they are), then :meth:`zero_grad`.

    ``implementation``: ``"foreach"`` updates all members with a few ``[K, M]`` tensor ops per step;
    ``"fused"`` calls torch's single-pass fused kernel (``torch._fused_adam_``...) once per live member with
    its own hyperparameters, reading each tensor once instead of once per op, which is several times faster
    when the update is memory-bound; ``"auto"`` (default) takes ``"fused"`` where the kernel exists for this
    optimizer, device and dtype.
    """

    defaults: ClassVar[dict[str, float]]
    # State tensors shaped like each parameter, and the hyperparameter that gives their initial value (None:
    # 0).
    state_names: ClassVar[dict[str, str | None]]

    # The torch fused kernel for one member's update (see _fused_member_step), or None.
    fused_kernel: ClassVar[str | None] = None

    def __init__(
        self,
        params: Iterable[Tensor],
        *,
        n_members: int,
        implementation: Implementation = "auto",
        **hparams: HyperparameterValue,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise SpecError("the optimizer got no trainable parameters; pass population.parameters()")
        for p in self.params:
            if p.dim() == 0 or p.shape[0] != n_members:
                raise SpecError(
                    f"every parameter must have the member dimension first ([{n_members}, ...]); "
                    "got a parameter "
                    f"of shape {tuple(p.shape)}. Pass the parameters of a population of {n_members} members."
                )
        self.n_members = n_members
        device = self.params[0].device
        unknown = sorted(set(hparams) - set(self.defaults))
        if unknown:
            raise SpecError(_unknown_message(type(self).__name__, unknown[0], self.defaults))
        self.hparams: dict[str, Tensor] = {}
        for name, default in self.defaults.items():
            self.hparams[name] = torch.full((n_members,), default, dtype=torch.float64, device=device)
            if name in hparams:
                self.set_hparam(name, hparams[name])
        self.step_count = torch.zeros(n_members, dtype=torch.long, device=device)
        self._flags = HostFlags()
        self.state: list[dict[str, Tensor]] = [{} for _ in self.params]
        self._slices_cache: tuple[tuple[object, ...], list[_MemberSlices], Tensor] | None = None
        fused_available = (
            self.fused_kernel is not None
            and hasattr(torch, self.fused_kernel)
            and device.type in ("cpu", "cuda")
            and all(p.dtype in (torch.float32, torch.float64) and p.device == device for p in self.params)
        )
        if implementation not in ("auto", "foreach", "fused"):
            raise SpecError(f"implementation must be 'auto', 'foreach' or 'fused'; got {implementation!r}")
        if implementation == "fused" and not fused_available:
            raise SpecError(
                f"{type(self).__name__} has no fused kernel for these parameters "
                "(float32/float64 on cpu/cuda "
                "needed); use implementation='foreach' or 'auto'"
            )
        # auto: on the CPU one fused kernel per member (one memory pass each) beats the [K, M] tensor ops;
        # on a GPU those ops are a few launches for the whole population, where K kernels would be K launches.
        auto_fused = fused_available and device.type == "cpu"
        self.implementation = "fused" if implementation == "auto" and auto_fused else implementation
        if self.implementation == "auto":
            self.implementation = "foreach"

    # -- hyperparameters --
    def set_hparam(
        self, name: str, value: HyperparameterValue, *, members: Sequence[int] | Tensor | None = None
    ) -> None:
        """Set hyperparameter ``name`` to ``value`` (a number, or one per member) for all or ``members``."""
        if name not in self.hparams:
            raise SpecError(_unknown_message(type(self).__name__, name, self.defaults))
        # Checked on the host: on a GPU each check would wait for the device (schedules set lr every step).
        values = torch.as_tensor(value, dtype=torch.float64, device="cpu")
        if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
            raise SpecError(f"{type(self).__name__} {name} must be finite and >= 0; got {value!r}")
        if (name.startswith("beta") or name in ("alpha", "momentum")) and bool((values >= 1).any()):
            raise SpecError(f"{type(self).__name__} {name} must be in [0, 1); got {value!r}")
        index = slice(None) if members is None else torch.as_tensor(members, dtype=torch.long)
        self.hparams[name][index] = values.to(self.hparams[name].device)

    @staticmethod
    def _lists(vector: Tensor, like: list[Tensor]) -> list[Tensor]:
        """``[K]`` -> a ``[K, 1]`` view (in their dtype) per ``[K, M]`` tensor of ``like``, for foreach."""
        return [vector.to(like[0].dtype).view(-1, 1)] * len(like)

    def _with_l2(self, grads: list[Tensor], params: list[Tensor]) -> list[Tensor]:
        """``grad + weight_decay * param`` per member (torch's coupled L2); the grads as they are when no
        member decays."""
        decay = self.hparams["weight_decay"]
        if not self._flags.any("weight_decay", decay):
            return grads
        return list(torch._foreach_addcmul(grads, params, self._lists(decay, params)))

    def graph_signature(self) -> Hashable:
        """What a recorded step of this optimizer depends on (see ``_graphs``): the tensors it updates or
        reads, and the host-side branches of its update."""
        state = [tensor for tensors in self.state for tensor in tensors.values()]
        tensors = [*self.params, *self.hparams.values(), self.step_count, *state]
        return (self.implementation, tensor_signature(tensors), self._flags.snapshot())

    # -- the update --
    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, *, alive: Tensor | None = None) -> None:
        """Update every member (or those where ``alive``, a ``[K]`` bool mask) from the current gradients."""
        indices = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not indices:
            return
        K = self.n_members
        active = torch.ones(K, dtype=torch.bool, device=self.step_count.device) if alive is None else alive
        if self.implementation == "fused":
            self._fused_step(indices, active)
            return
        params = [self.params[i].view(K, -1) for i in indices]
        grads = [self.params[i].grad.reshape(K, -1) for i in indices]  # type: ignore[union-attr]
        # On the CPU the check is free and spares a pass over the gradients; on a GPU it would wait for the
        # device, so there the replacement always runs (a member's own gradient is kept bit for bit).
        if alive is not None and (alive.device.type != "cpu" or not bool(alive.all())):
            # A dead member's gradient may be NaN: replace it, so no NaN reaches the (shared) update
            # arithmetic.
            keep = alive.view(-1, 1)
            grads = [torch.where(keep, g, torch.zeros((), dtype=g.dtype, device=g.device)) for g in grads]
        self.step_count += active.to(self.step_count.dtype)
        states: dict[str, list[Tensor]] = {}
        for name, init in self.state_names.items():
            tensors = []
            for i in indices:
                if name not in self.state[i]:
                    self.state[i][name] = self._initial_state(self.params[i], init)
                tensors.append(self.state[i][name].view(K, -1))
            states[name] = tensors
        # Members that may not move take a zero step: lr 0 with finite state leaves their parameters
        # unchanged.
        lr = self.hparams["lr"] * active.to(torch.float64)
        self._update(params, grads, states, lr=lr, step=self.step_count.clamp(min=1).to(torch.float64))

    def _fused_step(self, indices: list[int], active: Tensor) -> None:
        """One fused-kernel call per live member on its slices; dead members are skipped altogether.

        The member slices of the parameters, the state and the step counters are cut once and reused while
        those tensors keep their storage (see :meth:`_member_slices`); only the gradients, new at every
        backward, are sliced per step. This keeps the Python work of a step to a few calls per member.
        """
        K = self.n_members
        self.step_count += active.to(self.step_count.dtype)
        live = [k for k, is_alive in enumerate(active.tolist()) if is_alive]
        if not live:
            return
        members, steps = self._member_slices(indices)
        steps.copy_(self.step_count)  # the kernels read each member's step from these float32 scalars
        columns = {name: value.tolist() for name, value in self.hparams.items()}
        grads = [self.params[i].grad.reshape(K, -1).unbind(0) for i in indices]  # type: ignore[union-attr]
        for k in live:
            params, states, step = members[k]
            self._fused_member_step(
                params,
                [rows[k] for rows in grads],
                states,
                {name: values[k] for name, values in columns.items()},
                step,
            )

    def _member_slices(self, indices: list[int]) -> tuple[list[_MemberSlices], Tensor]:
        """Per member: its ``[M]`` slice of each parameter in ``indices`` and of each state tensor, and its
        step as a float32 scalar view of the returned ``[K]`` buffer; cached.

        The cache is keyed by the storage addresses of those tensors: :meth:`select_` (here or on the
        population, whose parameters get new storage) or new state changes them and the slices are cut again.
        A cached slice keeps its storage alive, so an address cannot be reused by another tensor meanwhile.
        """
        K = self.n_members
        for name, init in self.state_names.items():
            for i in indices:
                if name not in self.state[i]:
                    self.state[i][name] = self._initial_state(self.params[i], init)
        key = (
            K,
            tuple(indices),
            tuple((self.params[i].data_ptr(), self.params[i].numel()) for i in indices),
            tuple(self.state[i][name].data_ptr() for name in self.state_names for i in indices),
        )
        cached = self._slices_cache
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        params = [self.params[i].detach().view(K, -1).unbind(0) for i in indices]
        states = {
            name: [self.state[i][name].view(K, -1).unbind(0) for i in indices] for name in self.state_names
        }
        steps = torch.zeros(K, dtype=torch.float32, device=self.step_count.device)
        step_views = steps.unbind(0)
        members: list[_MemberSlices] = [
            (
                [rows[k] for rows in params],
                {name: [rows[k] for rows in tensors] for name, tensors in states.items()},
                step_views[k],
            )
            for k in range(K)
        ]
        self._slices_cache = (key, members, steps)
        return members, steps

    def _fused_member_step(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: dict[str, list[Tensor]],
        hparams: dict[str, float],
        step: Tensor,
    ) -> None:
        """Update one member with torch's fused kernel: its ``[M]`` slices, its hyperparameters as floats."""
        raise NotImplementedError

    def _update(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: dict[str, list[Tensor]],
        *,
        lr: Tensor,
        step: Tensor,
    ) -> None:
        """Apply one step; all tensors are ``[K, M]`` views; ``lr`` and ``step`` are ``[K]`` float64."""
        raise NotImplementedError

    def _initial_state(self, param: Tensor, init: str | None) -> Tensor:
        if init is None:
            return torch.zeros_like(param, memory_format=torch.contiguous_format)
        fill = self.hparams[init].to(param.dtype).view(-1, *([1] * (param.dim() - 1)))
        return fill.expand_as(param).contiguous()

    # -- member management --
    @torch.no_grad()
    def select_(self, index: Tensor) -> None:
        """Keep members ``index`` (in that order): hyperparameters, step counters and state; call it together
        with ``population.select_(index)``."""
        index = index.to(self.step_count.device)
        self._slices_cache = None  # release the old state's storage now; the next step cuts new slices
        self.hparams = {name: value.index_select(0, index) for name, value in self.hparams.items()}
        self.step_count = self.step_count.index_select(0, index)
        for state in self.state:
            for name, value in state.items():
                state[name] = value.index_select(0, index.to(value.device))
        self.n_members = int(index.numel())

    def member_state(self, k: int) -> dict[str, Any]:
        """Member ``k``'s hyperparameters (floats), step counter and state (per parameter, by name, each
        without the member dimension: copies), for a checkpoint: :meth:`load_member_states` puts them back."""
        return {
            "hparams": {name: float(value[k]) for name, value in self.hparams.items()},
            "step": int(self.step_count[k]),
            "state": [{name: tensor[k].clone() for name, tensor in state.items()} for state in self.state],
        }

    @torch.no_grad()
    def load_member_states(self, states: Sequence[Mapping[str, Any]]) -> None:
        """Set every member from ``states`` (one :meth:`member_state` per member, in slot order): its
        hyperparameters, step counter and state, which then carry on as if never saved."""
        if len(states) != self.n_members:
            raise SpecError(f"got {len(states)} member states for an optimizer of {self.n_members} members")
        for index, state in enumerate(states):
            if set(state["hparams"]) != set(self.hparams) or len(state["state"]) != len(self.params):
                raise SpecError(
                    f"member state {index} is not one of {type(self).__name__} on these parameters "
                    f"(hyperparameters {sorted(state['hparams'])}, {len(state['state'])} parameters' state)"
                )
        device = self.step_count.device
        for name, value in self.hparams.items():
            value.copy_(torch.tensor([float(s["hparams"][name]) for s in states], dtype=torch.float64))
        self.step_count.copy_(torch.tensor([int(s["step"]) for s in states], dtype=torch.long, device=device))
        self._slices_cache = None
        for i, param in enumerate(self.params):
            names = set(states[0]["state"][i])
            if any(set(s["state"][i]) != names for s in states) or not names <= set(self.state_names):
                raise SpecError(f"the member states disagree on the state of parameter {i}")
            self.state[i] = {
                name: torch.stack([s["state"][i][name] for s in states])
                .to(param.device, param.dtype)
                .contiguous()
                for name in self.state_names
                if name in names
            }

    @torch.no_grad()
    def reset_(self, k: int) -> None:
        """Start member ``k`` afresh: its step counter and optimizer state back to their initial values."""
        self.step_count[k] = 0
        for state in self.state:
            for name, value in state.items():
                init = self.state_names[name]
                value[k] = 0.0 if init is None else float(self.hparams[init][k])

    @torch.no_grad()
    def copy_member_(self, src: int, dst: int) -> None:
        """Copy member ``src``'s hyperparameters, step counter and state over member ``dst``'s."""
        for value in self.hparams.values():
            value[dst] = value[src]
        self.step_count[dst] = self.step_count[src]
        for state in self.state:
            for value in state.values():
                value[dst] = value[src]


def _unknown_message(owner: str, name: str, known: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{owner} has no hyperparameter {name!r}.{hint} Valid: {', '.join(sorted(known))}."
