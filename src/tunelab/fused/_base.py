"""The contract every population module follows, whichever way its forward pass is built."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from tunelab.errors import SpecError

__all__ = ["BasePopulation", "structural_signature"]


def structural_signature(module: nn.Module) -> str:
    """A string equal for two modules exactly when they can be fused into one population.

    It lists every submodule's type and settings (``extra_repr``) and every parameter's and buffer's shape and
    dtype. Dropout rates are left out: they may differ between members. Configs whose models share a signature
    can be packed into one population.
    """
    lines = []
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Dropout):
            settings = ""
        elif isinstance(sub, nn.RNNBase):
            settings = (
                f"{sub.mode} {sub.input_size} {sub.hidden_size} layers={sub.num_layers} bias={sub.bias} "
            )
            settings += f"batch_first={sub.batch_first} bidirectional={sub.bidirectional}"
        else:
            settings = sub.extra_repr()
        extras = {
            key: value
            for key, value in vars(sub).items()
            if not key.startswith("_")
            and key != "training"
            and isinstance(value, str | int | float | bool)
            and not isinstance(sub, nn.Dropout | nn.RNNBase)
        }
        lines.append(f"{name}: {type(sub).__qualname__}({settings}) {sorted(extras.items())}")
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        lines.append(f"{name}: {tuple(tensor.shape)} {tensor.dtype}")
    return "\n".join(lines)


def check_same_structure(modules: list[nn.Module]) -> None:
    """Raise :class:`SpecError` naming the first difference when the modules cannot share one population."""
    if not modules:
        raise SpecError("a population needs at least one member module; got an empty list")
    reference = structural_signature(modules[0]).splitlines()
    for index, module in enumerate(modules[1:], start=1):
        lines = structural_signature(module).splitlines()
        if lines == reference:
            continue
        for ours, theirs in zip(reference, lines, strict=False):
            if ours != theirs:
                break
        else:
            ours, theirs = f"{len(reference)} entries", f"{len(lines)} entries"
        raise SpecError(
            f"member {index} does not have the structure of member 0, so they cannot be fused: "
            f"member 0 has '{ours}', member {index} has '{theirs}'. Layer shapes, activations and layer "
            "settings must match within a population; pack configs by structural_signature(model)."
        )


class BasePopulation(nn.Module):
    """K models of one structure trained as one module.

    Guarantees: every parameter and buffer has the member dimension first (``[K, ...]``); ``forward`` maps an
    input ``[N, ...]`` shared by all members to ``[K, N, ...]``. Member management is therefore generic:
    :meth:`select_` keeps or reorders members, :meth:`copy_member_` copies one over another. Subclasses
    implement :meth:`member` and :meth:`load_member`.
    """

    # Whether its forward pass can be recorded as a CUDA graph (see ``_graphs``) without changing results.
    graph_safe = True

    def __init__(self, n_members: int) -> None:
        super().__init__()
        self.n_members = n_members

    def graph_generators(self) -> list[torch.Generator]:
        """The CUDA generators its random layers draw from, which a recorded step must register."""
        return []

    def member(self, k: int) -> nn.Module:
        """Member ``k`` as an ordinary ``torch.nn`` module (a copy), e.g. for export or comparison."""
        raise NotImplementedError

    def load_member(self, k: int, module: nn.Module) -> None:
        """Copy the weights and buffers of ``module`` (same structure) into member slot ``k``."""
        raise NotImplementedError

    def member_state(self, k: int) -> dict[str, Tensor]:
        """Member ``k``'s parameters and buffers by ``state_dict`` name, each without the member dimension
        (copies), for a checkpoint: :meth:`load_member_states` puts them back."""
        k = self.check_member_index(k)
        return {name: tensor[k].detach().clone() for name, tensor in self.state_dict().items()}

    @torch.no_grad()
    def load_member_states(self, states: Sequence[Mapping[str, Tensor]]) -> None:
        """Set every member from ``states`` (one :meth:`member_state` per member, in slot order), in place:
        the parameters stay the same tensors (an optimizer that holds them keeps working)."""
        if len(states) != self.n_members:
            raise SpecError(f"got {len(states)} member states for a population of {self.n_members} members")
        current = self.state_dict()
        for index, state in enumerate(states):
            if set(state) != set(current):
                missing, extra = sorted(set(current) - set(state)), sorted(set(state) - set(current))
                raise SpecError(
                    f"member state {index} does not fit this population's structure "
                    f"(missing: {missing}; unexpected: {extra})"
                )
        for name, tensor in current.items():
            tensor.copy_(torch.stack([state[name].to(tensor.device) for state in states]))

    def random_state(self) -> dict[str, Tensor]:
        """The state of the random streams its forward pass draws from (dropout), by name, which
        :meth:`load_random_state` restores. Empty for a population that draws nothing."""
        return {}

    def load_random_state(self, state: Mapping[str, Tensor]) -> None:
        """Restore the random streams of :meth:`random_state`."""
        if state:
            raise SpecError(f"this population has no random streams; got {sorted(state)}")

    def check_member_index(self, k: int) -> int:
        if not -self.n_members <= k < self.n_members:
            raise IndexError(f"member index {k} is out of range for a population of {self.n_members}")
        return k % self.n_members

    def _member_tensors(self) -> list[tuple[nn.Module, str, Tensor, bool]]:
        """``(owner, name, tensor, is_parameter)`` for every parameter and buffer."""
        found: list[tuple[nn.Module, str, Tensor, bool]] = []
        for module in self.modules():
            for name, param in module._parameters.items():
                if param is not None:
                    found.append((module, name, param, True))
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    found.append((module, name, buffer, False))
        return found

    @torch.no_grad()
    def select_(self, index: Tensor) -> None:
        """Keep the members ``index`` (``[K']`` int64), in that order, in place.

        Parameters stay the same ``nn.Parameter`` objects (their storage is replaced), so an optimizer that
        holds them keeps working once its own state is selected the same way. Gradients are dropped.
        """
        for module, name, tensor, is_parameter in self._member_tensors():
            selected = tensor.index_select(0, index.to(tensor.device))
            if is_parameter:
                tensor.data = selected
                tensor.grad = None
            else:
                module._buffers[name] = selected
        self.n_members = int(index.numel())

    @torch.no_grad()
    def copy_member_(self, src: int, dst: int) -> None:
        """Copy member ``src``'s parameters and buffers over member ``dst``'s."""
        src, dst = self.check_member_index(src), self.check_member_index(dst)
        for _, _, tensor, _ in self._member_tensors():
            tensor[dst] = tensor[src]


def meta_template(module: nn.Module) -> nn.Module:
    """A structure-only copy of ``module`` on the meta device (no memory), from which members are rebuilt."""
    return copy.deepcopy(module).to("meta")
