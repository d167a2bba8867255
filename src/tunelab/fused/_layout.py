"""Activation layouts inside a population and the conversions between them.

A population's forward pass carries one of three layouts between its layers:

- ``shared``: ``[N, ...]``, one tensor every member reads (the input, before the first per-member layer);
- ``stacked``: ``[K, N, ...]``, member-major (linear, recurrent and head layers);
- ``packed``: ``[N, K*C, H, W]``, the channels of all members side by side, so that one grouped convolution,
  one batch norm and one pooling call serve every member.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

__all__ = ["Layout", "RandomSource", "convert_layout", "member_dropout"]

Layout = Literal["shared", "stacked", "packed"]


def convert_layout(x: Tensor, src: Layout, dst: Layout, *, n_members: int) -> Tensor:
    """Convert ``x`` from layout ``src`` to ``dst`` for a population of ``n_members``.

    ``shared -> stacked`` broadcasts (a view, no copy); ``stacked -> packed`` copies; ``packed -> stacked`` is
    a view.
    """
    if src == dst:
        return x
    K = n_members
    if src == "shared":
        if dst == "packed":
            # [N, C, ...] -> [N, K*C, ...]: member k reads channels [k*C, (k+1)*C).
            return x.repeat(1, K, *([1] * (x.dim() - 2)))
        return x.unsqueeze(0).expand(K, *x.shape)
    if src == "stacked" and dst == "packed":
        _, N, C, *spatial = x.shape
        return x.transpose(0, 1).reshape(N, K * C, *spatial)
    if src == "packed" and dst == "stacked":
        N, KC, *spatial = x.shape
        return x.view(N, K, KC // K, *spatial).transpose(0, 1)
    raise ValueError(f"cannot convert a population activation from layout {src!r} to {dst!r}")


def member_dropout(x: Tensor, keep: Tensor, *, layout: Layout, generator: torch.Generator) -> Tensor:
    """Inverted dropout with a per-member keep probability ``keep`` (``[K]``).

    ``x`` is stacked (``[K, N, ...]``) or packed (``[N, K*C, ...]``). Each element of member k survives with
    probability ``keep[k]`` and is scaled by ``1 / keep[k]``; a member with ``keep == 0`` outputs zeros, as
    ``nn.Dropout(1.0)`` does.
    """
    if layout == "packed":
        channels = x.shape[1] // keep.shape[0]
        keep_view = keep.repeat_interleave(channels).view(1, -1, *([1] * (x.dim() - 2)))
    else:
        keep_view = keep.view(-1, *([1] * (x.dim() - 1)))
    keep_view = keep_view.to(x.dtype)
    scale = torch.where(keep_view > 0, 1.0 / keep_view, torch.zeros_like(keep_view))
    # One factor per element (0 or 1/keep), built in place in the random draws' buffer: the forward pass is
    # one multiply, and autograd keeps one tensor for the backward pass (x * mask * scale kept two and
    # multiplied twice each way; dropout was about a third of a fused MLP step).
    factor = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    torch.lt(factor, keep_view, out=factor)
    return x * factor.mul_(scale)


class RandomSource:
    """A seeded generator per device, shared by the random layers of one population (explicit randomness)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def generators(self, device_type: str) -> list[torch.Generator]:
        """The generators made so far for devices of ``device_type`` (``"cuda"``...)."""
        return [g for device, g in self._generators.items() if device.type == device_type]

    def manual_seed(self, seed: int) -> None:
        """Restart every stream from ``seed``."""
        self.seed = seed
        self._generators.clear()

    def state(self) -> dict[str, Tensor]:
        """Each stream's state (a CPU byte tensor), by its device's name."""
        return {str(device): generator.get_state() for device, generator in self._generators.items()}

    def load_state(self, states: Mapping[str, Tensor]) -> None:
        """Set the streams of :meth:`state` (each made if not yet), in place: a generator that a recorded
        CUDA graph registered stays the same object."""
        for device, state in states.items():
            self.generator(torch.device(device)).set_state(state.to("cpu", torch.uint8))
