"""The base of the vectorized population optimizers: per-member hyperparameters, step counters and state."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor

from tunelab.errors import SpecError

__all__ = ["HyperparameterValue", "Implementation", "PopulationOptimizer"]

HyperparameterValue = float | Sequence[float] | Tensor
Implementation = Literal["auto", "foreach", "fused"]


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
        self.state: list[dict[str, Tensor]] = [{} for _ in self.params]
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
        self.implementation = "fused" if implementation == "auto" and fused_available else implementation
        if self.implementation == "auto":
            self.implementation = "foreach"

    # -- hyperparameters --
    def set_hparam(
        self, name: str, value: HyperparameterValue, *, members: Sequence[int] | Tensor | None = None
    ) -> None:
        """Set hyperparameter ``name`` to ``value`` (a number, or one per member) for all or ``members``."""
        if name not in self.hparams:
            raise SpecError(_unknown_message(type(self).__name__, name, self.defaults))
        values = torch.as_tensor(value, dtype=torch.float64, device=self.hparams[name].device)
        if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
            raise SpecError(f"{type(self).__name__} {name} must be finite and >= 0; got {value!r}")
        if (name.startswith("beta") or name in ("alpha", "momentum")) and bool((values >= 1).any()):
            raise SpecError(f"{type(self).__name__} {name} must be in [0, 1); got {value!r}")
        index = slice(None) if members is None else torch.as_tensor(members, dtype=torch.long)
        self.hparams[name][index] = values

    @staticmethod
    def _lists(vector: Tensor, like: list[Tensor]) -> list[Tensor]:
        """``[K]`` -> a ``[K, 1]`` view (in their dtype) per ``[K, M]`` tensor of ``like``, for foreach."""
        return [vector.to(like[0].dtype).view(-1, 1)] * len(like)

    def _with_l2(self, grads: list[Tensor], params: list[Tensor]) -> list[Tensor]:
        """``grad + weight_decay * param`` per member (torch's coupled L2); the grads as they are when no
        member decays."""
        decay = self.hparams["weight_decay"]
        if not bool(decay.any()):
            return grads
        return list(torch._foreach_addcmul(grads, params, self._lists(decay, params)))

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
        if alive is not None and not bool(alive.all()):
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
        """One fused-kernel call per live member on its slices; dead members are skipped altogether."""
        K = self.n_members
        self.step_count += active.to(self.step_count.dtype)
        member_steps = self.step_count.to(torch.float32).unbind(0)  # the kernels read each tensor's step
        hparams = {name: value.tolist() for name, value in self.hparams.items()}
        params = [self.params[i].view(K, -1).unbind(0) for i in indices]
        grads = [self.params[i].grad.reshape(K, -1).unbind(0) for i in indices]  # type: ignore[union-attr]
        states: dict[str, list[tuple[Tensor, ...]]] = {}
        for name, init in self.state_names.items():
            for i in indices:
                if name not in self.state[i]:
                    self.state[i][name] = self._initial_state(self.params[i], init)
            states[name] = [self.state[i][name].view(K, -1).unbind(0) for i in indices]
        for k, is_alive in enumerate(active.tolist()):
            if is_alive:
                self._fused_member_step(
                    [p[k] for p in params],
                    [g[k] for g in grads],
                    {name: [s[k] for s in tensors] for name, tensors in states.items()},
                    {name: values[k] for name, values in hparams.items()},
                    member_steps[k],
                )

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
        self.hparams = {name: value.index_select(0, index) for name, value in self.hparams.items()}
        self.step_count = self.step_count.index_select(0, index)
        for state in self.state:
            for name, value in state.items():
                state[name] = value.index_select(0, index.to(value.device))
        self.n_members = int(index.numel())

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
