"""Host-side booleans about small per-member tensors, read once per change instead of once per step.

``bool(tensor.any())`` copies a result to the host: on a GPU that waits for every queued kernel, so a few
such checks per step keep the host from running ahead and a small population's step becomes launch-bound
(measured on an H100: 2.5 ms per step at K = 1 against 1.0 ms for a plain torch loop). Hyperparameter
vectors change rarely (a schedule, a refill, PBT), so the answers are cached against the tensor's identity
and its in-place version counter (``Tensor._version``, bumped by every in-place write).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

__all__ = ["HostFlags"]


class HostFlags:
    """A cache of ``predicate(tensor)`` per key, recomputed when the key's tensor is replaced or written."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Tensor, int, bool, Callable[[Tensor], Tensor]]] = {}

    def get(self, key: str, tensor: Tensor, predicate: Callable[[Tensor], Tensor]) -> bool:
        entry = self._entries.get(key)
        if entry is None or entry[0] is not tensor or entry[1] != tensor._version:
            entry = (tensor, tensor._version, bool(predicate(tensor)), predicate)
            self._entries[key] = entry
        return entry[2]

    def snapshot(self) -> tuple[tuple[str, bool], ...]:
        """Every cached answer, brought up to date for tensors written since: the host-side branches a step
        takes (part of a CUDA graph's signature, see ``_graphs``). A replaced tensor is not seen here: the
        graph's signature holds the addresses of the tensors themselves."""
        for key, (tensor, version, _, predicate) in list(self._entries.items()):
            if tensor._version != version:
                self.get(key, tensor, predicate)
        return tuple(sorted((key, entry[2]) for key, entry in self._entries.items()))

    def any(self, key: str, tensor: Tensor) -> bool:
        """``bool(tensor.any())``, from the cache while ``tensor`` is unchanged."""
        return self.get(key, tensor, Tensor.any)
