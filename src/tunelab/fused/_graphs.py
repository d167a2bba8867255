"""CUDA graphs of a population's training step: one replay instead of about a hundred kernel launches.

On a GPU a population of small models is bound by the host, not the device: a step launches about a hundred
small kernels from Python (measured on an H100: 2.1 ms per step at K = 1 for 0.2 ms of GPU work), so a
population of one ran at half a plain loop's speed. :class:`StepGraph` records the step once as a CUDA graph
and then replays it, after copying the new minibatch into the graph's input tensors.

A replay repeats the recorded kernels on the recorded memory, so it is exactly the eager step only while
nothing the recording depended on has changed. What the caller's ``signature`` covers:

- the minibatch's shape and dtype (an epoch's last, smaller batch has a recording of its own);
- the address, shape and dtype of every tensor the step reads or writes in place (parameters, buffers,
  optimizer state and hyperparameter vectors): :meth:`PopulationTrainer.shrink` replaces them;
- the host-side branches (``_hostflags``: whether any member uses L1, clipping, label smoothing, weight decay,
  momentum...), which the recording took one way.

Values written in place (a learning-rate schedule, a refilled member, PBT's copies) need nothing: the replay
reads them from the same memory. A signature's first step runs eagerly on a side stream, which creates the
lazily made state (optimizer moments, random generators) outside any recording; its second step is
recorded. Random layers draw from generators registered with the graph, so replays continue their streams as
eager steps would.
"""

from __future__ import annotations

import gc
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from tunelab.errors import TrainingError

__all__ = ["StepGraph", "tensor_signature"]

Step = Callable[[Tensor, Tensor], Tensor]


def tensor_signature(tensors: list[Tensor]) -> tuple[tuple[int, tuple[int, ...], torch.dtype], ...]:
    """What a recording depends on for each tensor it touches: its address, shape and dtype."""
    return tuple((t.data_ptr(), tuple(t.shape), t.dtype) for t in tensors)


@dataclass
class _Recording:
    graph: torch.cuda.CUDAGraph
    x: Tensor
    y: Tensor
    losses: Tensor


class StepGraph:
    """Runs ``step(x, y) -> losses`` as a replayed CUDA graph for each ``signature(x, y)`` seen before.

    ``step`` must do device work only (no host synchronisation, no Python state that must advance per call:
    the caller keeps its counters outside). ``generators`` lists the custom generators its random layers
    draw from. The last :data:`MAX_RECORDINGS` recordings are kept (an epoch's full batches and its last,
    smaller one); each holds its own memory pool for the step's temporaries. If recording fails (an operation
    that synchronizes, say), :class:`TrainingError` says so: a failed recording can leave CUDA's random
    generators mid-recording, so the step is not silently retried eagerly.
    """

    MAX_RECORDINGS = 2
    _MAX_WARMED = 8

    def __init__(
        self,
        step: Step,
        signature: Callable[[Tensor, Tensor], Hashable],
        generators: Callable[[], list[torch.Generator]],
    ) -> None:
        # Weak references to the owner's methods: a cycle between a trainer and its graphs would leave their
        # freeing to the cycle collector, at a moment nobody chooses.
        self._step_ref = weakref.WeakMethod(step)
        self._signature_ref = weakref.WeakMethod(signature)
        self._generators_ref = weakref.WeakMethod(generators)
        self._recordings: OrderedDict[Hashable, _Recording] = OrderedDict()
        self._warmed: OrderedDict[Hashable, None] = OrderedDict()
        self.n_recordings = 0
        self.n_replays = 0

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        key = _live(self._signature_ref)(x, y)
        recording = self._recordings.get(key)
        if recording is None:
            if key not in self._warmed:
                self._warmed[key] = None
                if len(self._warmed) > self._MAX_WARMED:
                    self._warmed.popitem(last=False)
                return self._on_side_stream(x, y)
            while len(self._recordings) >= self.MAX_RECORDINGS:
                self._recordings.popitem(last=False)  # the oldest; its memory pool goes with it
            try:
                recording = self._record(x, y)
            except RuntimeError as error:
                message = str(error).strip()
                first_line = message.splitlines()[0] if message else type(error).__name__
                raise TrainingError(
                    f"recording the population's training step as a CUDA graph failed: {first_line}. A "
                    "recording needs a step that never waits for the device (no .item(), no per-member "
                    "fused optimizer kernels). Build the PopulationTrainer with cuda_graphs='auto', which "
                    "records only populations and optimizers known to allow it, or cuda_graphs=False."
                ) from error
            self._recordings[key] = recording
        else:
            self._recordings.move_to_end(key)
        recording.x.copy_(x)
        recording.y.copy_(y)
        recording.graph.replay()
        self.n_replays += 1
        return recording.losses.clone()

    def _on_side_stream(self, x: Tensor, y: Tensor) -> Tensor:
        """One eager step on a side stream, as CUDA graphs ask of the steps before a recording."""
        current = torch.cuda.current_stream(x.device)
        side = torch.cuda.Stream(x.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            losses = _live(self._step_ref)(x, y)
        current.wait_stream(side)
        return losses

    def _record(self, x: Tensor, y: Tensor) -> _Recording:
        """Record one step (recording runs nothing: the caller replays it once to take the step)."""
        static_x, static_y = x.clone(), y.clone()
        graph = torch.cuda.CUDAGraph()
        for generator in _live(self._generators_ref)():
            graph.register_generator_state(generator)
        # Python's cycle collector must not run inside the recording: freeing another trainer's graph there
        # (a cycle of objects the collector had not reached yet) is an operation a recording forbids, and
        # it invalidates the recording. Collect first, then hold the collector off until the end.
        gc.collect()
        collecting = gc.isenabled()
        gc.disable()
        try:
            with torch.cuda.graph(graph):
                losses = _live(self._step_ref)(static_x, static_y)
        finally:
            if collecting:
                gc.enable()
        self.n_recordings += 1
        return _Recording(graph, static_x, static_y, losses)


_F = TypeVar("_F", bound=Callable[..., Any])


def _live(reference: weakref.WeakMethod[_F]) -> _F:
    method = reference()
    if method is None:
        raise RuntimeError("the StepGraph's owner was freed before it; a graph belongs to one trainer")
    return method
